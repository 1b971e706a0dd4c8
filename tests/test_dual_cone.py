# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
The projection onto the dual cone that UPGrad and DualProj share (trainer/surgery/dual_cone.py): the KKT conditions
of its QP on every kind of Gramian, singular ones included (these need only torch and scipy), and both methods
against torchjd 0.18 (quadprog, through qpsolvers) from 3 to 12 tasks, to rtol 1e-6 (they agree to ~1e-9).
"""

import pytest
import torch
from test_weightings_b import KINDS, gram, jacobian, needs

from trainer.surgery import build_surgery
from trainer.surgery.dual_cone import dual_cone_weights, normalized_gramian


def kkt_residual(gramian, targets, weights):
    """
    The largest violation, relative, of the KKT conditions of `min_v v^T G v` subject to `v >= u` (which certify the
    optimum of this convex QP): `v >= u`, multipliers `G v >= 0`, and `(G v)_j (v_j - u_j) = 0`.
    """
    multipliers = weights @ gramian
    scale = gramian.abs().max() * weights.abs().max() + 1e-300
    primal = (targets - weights).clamp(min=0).max() / targets.abs().max()
    dual = (-multipliers).clamp(min=0).max() / scale
    complementarity = (multipliers * (weights - targets)).abs().max() / (scale * weights.abs().max() + 1e-300)
    return float(max(primal, dual, complementarity))


@pytest.mark.parametrize("num_tasks", [2, 3, 5, 8])
@pytest.mark.parametrize("kind", KINDS + ("zero",))
@pytest.mark.parametrize("reg_eps", [0.0, 1e-4])
def test_dual_cone_weights_solve_the_qp(num_tasks, kind, reg_eps):
    gramian = normalized_gramian(gram(jacobian(num_tasks, 0, kind)), norm_eps=0.0, reg_eps=reg_eps)
    generator = torch.Generator().manual_seed(num_tasks)
    # UPGrad's targets (e_i / K), DualProj's (1/K each), and random ones of both signs.
    targets = torch.cat(
        [
            torch.eye(num_tasks, dtype=torch.float64) / num_tasks,
            torch.full((1, num_tasks), 1 / num_tasks, dtype=torch.float64),
            torch.randn(3, num_tasks, generator=generator, dtype=torch.float64),
        ]
    )
    weights = dual_cone_weights(gramian, targets)
    assert weights.dtype == torch.float64 and weights.shape == targets.shape
    assert kkt_residual(gramian, targets, weights) <= 1e-12
    for target, row in zip(targets, weights):  # each row is its own problem
        torch.testing.assert_close(dual_cone_weights(gramian, target[None])[0], row, rtol=0, atol=0)


def test_normalized_gramian_is_torchjds():
    matrix = gram(jacobian(3, 0))
    eye = torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(normalized_gramian(matrix, 1e-4, 1e-3), matrix / matrix.trace() + 1e-3 * eye)
    # A trace below norm_eps, or a zero Gramian (even with norm_eps = 0), counts as zero: reg_eps I.
    torch.testing.assert_close(normalized_gramian(1e-6 * matrix, 1e-4, 1e-3), 1e-3 * eye)
    torch.testing.assert_close(normalized_gramian(torch.zeros(3, 3, dtype=torch.float64), 0.0, 1e-3), 1e-3 * eye)


@pytest.mark.parametrize("name", ["upgrad", "dualproj"])
@pytest.mark.parametrize("num_tasks", [3, 5, 8, 10, 12])
@pytest.mark.parametrize("kind", ["random", "collinear", "zero_row", "low_rank", "scaled"])
@pytest.mark.parametrize("seed", [0, 7])
def test_many_tasks_match_torchjd(name, num_tasks, kind, seed):
    aggregation = pytest.importorskip("torchjd.aggregation")
    needs("qpsolvers", "quadprog")
    from torchjd.linalg import QuadprogProjector

    gramian = gram(jacobian(num_tasks, seed, kind, size=12))
    ours = build_surgery(name, num_tasks).task_weights(gramian, 0)
    weighting = aggregation.UPGradWeighting if name == "upgrad" else aggregation.DualProjWeighting
    theirs = weighting(projector=QuadprogProjector())(gramian)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-9)
