"""Quality measurement of obsmcp's analysis against labelled data (`obsmcp eval ...`).

`patterns`: log template mining scored with the Loghub metrics (GA, FGA, PA, FTA) against Drain3 as baseline.
"""

from __future__ import annotations

from obsmcp.evaluation.patterns import (
    EvalError,
    EvalReport,
    Goal,
    LabelledLog,
    Scores,
    SuiteResult,
    evaluate_suite,
    goals,
    grouping_accuracy,
    load_dataset,
    parsing_accuracy,
    score,
    template_accuracy,
)

__all__ = [
    "EvalError",
    "EvalReport",
    "Goal",
    "LabelledLog",
    "Scores",
    "SuiteResult",
    "evaluate_suite",
    "goals",
    "grouping_accuracy",
    "load_dataset",
    "parsing_accuracy",
    "score",
    "template_accuracy",
]
