"""Judge rubrics as data: one YAML file per rubric (see rubric.py)."""

from emwb.judge.rubric import Rubric, load_rubric

__all__ = ["Rubric", "load_rubric"]
