# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
The Gramian weightings against torchjd 0.18 on the Gramian of a real step: each task's gradient on the shared
parameters of the packaged all-MiniLM-L6-v2 (the `best` preset's heads), for 8 real training rows of each task.
The tolerances are those of tests/test_weightings_a.py and test_weightings_b.py (1e-6 where torchjd solves
exactly; MGDA's Frank-Wolfe 1e-9, see there; CAGrad: its combination within 2e-3 of torchjd's, which cvxpy solves to
its own accuracy only).
"""

import warnings

import pytest
import torch
from transformers import AutoTokenizer

from modeling_bert_pals import BertPalsForMultitask
from modeling_bert_pals.configuration_bert_pals import DEFAULT_TASKS
from trainer.cs224n_builder import load_cs224n
from trainer.data_collator import MultitaskCollator
from trainer.surgery import build_surgery
from trainer.tasks import PAPER_TASKS
from trainer.tokenization import tokenize_split


aggregation = pytest.importorskip("torchjd.aggregation")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def jacobian(minilm_path, data_dir) -> torch.Tensor:
    """`[3, P]`: each task's gradient on the shared parameters, in float64."""
    torch.manual_seed(0)
    tasks = {task: dict(spec) for task, spec in DEFAULT_TASKS.items()}
    tasks["para"]["encoding"] = "cross"  # as `best`
    model = BertPalsForMultitask.from_pretrained(minilm_path, use_pals=False, pooling="mean", tasks=tasks).eval()
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    raw = {task: load_cs224n(task, data_dir) for task in PAPER_TASKS}
    encodings = {task: model.heads[task].encoding for task in PAPER_TASKS}
    batches = tokenize_split(raw, "train", tokenizer, encodings, limit=8)
    collate = MultitaskCollator(tokenizer)
    shared = model.shared_parameters()
    rows = []
    for task in PAPER_TASKS:
        model.zero_grad()
        model(**collate(list(batches[task]))).loss.backward()
        rows.append(torch.cat([p.grad.flatten() if p.grad is not None else p.new_zeros(p.numel()) for p in shared]))
    return torch.stack(rows).double()


@pytest.fixture(scope="module")
def gramian(jacobian) -> torch.Tensor:
    return jacobian @ jacobian.T


def test_the_real_gramian_is_the_hard_case(gramian):
    # Badly scaled: the tasks' gradient norms differ, and the cosines are far from the random case's 0.
    norms = gramian.diagonal().sqrt()
    assert (norms > 0).all() and norms.max() / norms.min() > 1.5


@pytest.mark.parametrize("name", ["mgda", "imtl_g", "aligned_mtl", "upgrad", "dualproj", "nash_mtl"])
def test_weights_match_torchjd(jacobian, gramian, name):
    ours = build_surgery(name, 3).task_weights(gramian, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cvxpy: "not DPP"
        # torchjd's Nash-MTL weighs the Jacobian itself (its Gramian inside); the others take the Gramian.
        theirs = torchjd_weighting(name)(jacobian if name == "nash_mtl" else gramian).to(torch.float64)
    tolerance = 1e-9 if name == "mgda" else 1e-6
    torch.testing.assert_close(ours, theirs, rtol=tolerance, atol=tolerance)


def test_cagrad_matches_torchjd(gramian):
    ours = build_surgery("cagrad", 3).task_weights(gramian, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cvxpy: "Solution may be inaccurate"
        theirs = aggregation.CAGradWeighting(c=0.4)(gramian).to(torch.float64)
    # The combined gradients' distance, from the Gramian: |(w - w') J| = sqrt((w - w') G (w - w')).
    difference = ours - theirs
    assert (difference @ gramian @ difference).sqrt() <= 2e-3 * (theirs @ gramian @ theirs).sqrt()


def torchjd_weighting(name):
    if name in ("upgrad", "dualproj"):
        for module in ("qpsolvers", "quadprog"):
            pytest.importorskip(module)
    if name == "nash_mtl":
        for module in ("cvxpy", "ecos"):
            pytest.importorskip(module)
        return aggregation.NashMTL(n_tasks=3).weighting
    if name == "dualproj":
        from torchjd.linalg import QuadprogProjector

        return aggregation.DualProjWeighting(projector=QuadprogProjector())
    classes = {
        "mgda": aggregation.MGDAWeighting,
        "imtl_g": aggregation.IMTLGWeighting,
        "aligned_mtl": aggregation.AlignedMTLWeighting,
        "upgrad": aggregation.UPGradWeighting,
    }
    return classes[name]()
