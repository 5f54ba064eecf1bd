"""`make mutation` cannot rot unnoticed: every mutation's file exists, holds its original text exactly once, and
names test files that exist (the mutations themselves run in `make mutation`, minutes long)."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("mutation_check", ROOT / "scripts" / "mutation_check.py")
mutation_check = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("mutation_check", mutation_check)  # dataclasses look their module up there
_spec.loader.exec_module(mutation_check)


@pytest.mark.parametrize("m", mutation_check.MUTATIONS, ids=lambda m: m.name)
def test_each_mutation_still_applies(m):
    source = ROOT / "src" / "emwb" / m.file
    assert source.is_file(), m.file
    assert source.read_text().count(m.old) == 1, f"{m.file}: the original text no longer occurs exactly once"
    files = [t.split("::")[0] for t in m.tests if t.startswith("tests/")]
    assert files and all((ROOT / f).is_file() for f in files), files
