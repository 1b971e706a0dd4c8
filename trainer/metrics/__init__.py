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


def load_task_metric(name: str) -> evaluate.EvaluationModule:
    """`name`: "accuracy" or "pearson", as a task head's `metric` says."""
    return evaluate.load(METRIC_PATH, name)
