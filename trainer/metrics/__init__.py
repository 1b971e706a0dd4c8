# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""Metric code shipped with the project: `evaluate.load("accuracy")` needs the Hub, this loads by path, offline."""

from pathlib import Path

import evaluate


METRIC_PATH = str(Path(__file__).resolve().parent / "cs224n_metric.py")
# How a results table names each metric: in full, and abbreviated.
METRIC_TITLES = {"accuracy": ("accuracy", "acc"), "pearson": ("Pearson", "Pearson")}
# The range of each metric, for the leaderboard score.
METRIC_RANGES = {"accuracy": (0.0, 1.0), "pearson": (-1.0, 1.0)}


def leaderboard_score(scores: list[tuple[str, float]]) -> float:
    """
    The CS224N leaderboard's score of `[(metric, value), ...]`: the mean of the task metrics, each mapped to [0, 1]
    (an accuracy as it is, a Pearson r as `(r + 1) / 2`); for the paper's tasks `(SST acc + Quora acc + (STS r + 1)
    / 2) / 3`.
    """
    mapped = [
        (value - METRIC_RANGES[metric][0]) / (METRIC_RANGES[metric][1] - METRIC_RANGES[metric][0])
        for metric, value in scores
    ]
    return sum(mapped) / len(mapped)


def load_task_metric(name: str) -> evaluate.EvaluationModule:
    """`name`: "accuracy" or "pearson", as a task head's `metric` says."""
    return evaluate.load(METRIC_PATH, name)
