"""Metric code shipped with the project: `evaluate.load("accuracy")` needs the Hub, this loads by path, offline."""

from pathlib import Path

import evaluate


METRIC_PATH = str(Path(__file__).resolve().parent / "cs224n_metric.py")


def load_task_metric(name: str) -> evaluate.EvaluationModule:
    """`name`: "accuracy" (SST, Quora, CFIMDB) or "pearson" (STS)."""
    return evaluate.load(METRIC_PATH, name)


def task_metric_name(kind: str) -> str:
    """The course's metric for a task kind: Pearson for the regression task, accuracy otherwise."""
    return "pearson" if kind == "pair_regression" else "accuracy"
