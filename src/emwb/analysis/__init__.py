"""Analysis: metrics (a registry), the hierarchical bootstrap, comparison tables, figures and the report.

Public API (stable): `ratio_ci`, `Estimate`, `Metric`, `METRICS`, `register_metric`, `metrics_for`,
`compute_metric`, `comparison_table`, `indicators`, `Settings`.
"""

from __future__ import annotations

import pandas as pd

from emwb.analysis.intervals import Estimate, ratio_ci
from emwb.analysis.metrics import METRICS, Metric, Settings, comparison_table, indicators, metrics_for, register_metric


def compute_metric(name: str, df: pd.DataFrame, settings: Settings | None = None) -> Estimate | float | int:
    """One registered metric over judged answers (columns: the metric's rubrics, optionally `seed`)."""
    return METRICS.get(name).compute(df, settings or Settings())


__all__ = ["METRICS", "Estimate", "Metric", "Settings", "comparison_table", "compute_metric", "indicators",
           "metrics_for", "ratio_ci", "register_metric"]
