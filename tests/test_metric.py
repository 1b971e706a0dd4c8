# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""Tests of the project's evaluate module trainer/metrics/cs224n_metric.py (loaded by path, offline)."""

import os


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import socket
import time
import warnings
from pathlib import Path

import evaluate
import numpy as np
import pytest
import scipy.stats


METRIC_PATH = str(Path(__file__).resolve().parents[1] / "trainer" / "metrics" / "cs224n_metric.py")


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_load_by_path_offline_and_fast(no_network):
    t0 = time.perf_counter()
    for name in ("accuracy", "pearson"):
        metric = evaluate.load(METRIC_PATH, name)
        assert isinstance(metric, evaluate.Metric)
    assert time.perf_counter() - t0 < 5.0


def test_accuracy_matches_numpy(no_network):
    rng = np.random.default_rng(0)
    refs = rng.integers(0, 5, size=500)
    preds = np.where(rng.random(500) < 0.6, refs, rng.integers(0, 5, size=500))
    metric = evaluate.load(METRIC_PATH, "accuracy")
    result = metric.compute(predictions=preds, references=refs)
    assert set(result) == {"accuracy"}
    assert result["accuracy"] == pytest.approx(float(np.mean(preds == refs)), abs=1e-12)
    # batches added incrementally; float 0.0/1.0 labels (as in quora files)
    metric = evaluate.load(METRIC_PATH, "accuracy")
    metric.add_batch(predictions=[1.0, 0.0], references=[1, 1])
    metric.add_batch(predictions=[0], references=[0])
    assert metric.compute() == {"accuracy": pytest.approx(2 / 3)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pearson_matches_scipy(seed, no_network):
    rng = np.random.default_rng(seed)
    refs = rng.uniform(0, 5, size=300)
    preds = refs * rng.uniform(-1, 1) + rng.normal(scale=2.0, size=300)
    result = evaluate.load(METRIC_PATH, "pearson").compute(predictions=preds, references=refs)
    assert set(result) == {"pearson"}
    assert result["pearson"] == pytest.approx(scipy.stats.pearsonr(preds, refs)[0], abs=1e-10)


def test_pearson_keeps_float64_precision():
    refs = np.linspace(0, 5, 50)
    preds = 1e6 + refs + 1e-3 * np.sin(np.arange(50))  # float32 would destroy the signal
    result = evaluate.load(METRIC_PATH, "pearson").compute(predictions=preds, references=refs)
    assert result["pearson"] == pytest.approx(scipy.stats.pearsonr(preds, refs)[0], abs=1e-9)


def test_pearson_constant_predictions_is_zero_not_nan():
    metric = evaluate.load(METRIC_PATH, "pearson")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning / ConstantInputWarning either
        assert metric.compute(predictions=[2.5] * 10, references=np.arange(10.0)) == {"pearson": 0.0}
        assert metric.compute(predictions=np.arange(10.0), references=[1.0] * 10) == {"pearson": 0.0}
    assert metric.compute(predictions=[1.0, 2.0], references=[3.0, 5.0]) == {"pearson": pytest.approx(1.0)}
    with pytest.raises(ValueError, match="at least 2"):
        metric.compute(predictions=[1.0], references=[1.0])


def test_unknown_config_name():
    with pytest.raises(KeyError, match="accuracy"):
        evaluate.load(METRIC_PATH, "bleu")
    with pytest.raises(KeyError, match="default"):
        evaluate.load(METRIC_PATH)
