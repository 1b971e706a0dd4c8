# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""UPGrad (Quinton & Rey 2024, "Jacobian Descent for Multi-Objective Optimization"), as in torchjd."""

import itertools

import numpy as np
import scipy.optimize
import torch

from .base import Hyperparameter
from .weighting import GramianWeighting


# Up to this many tasks the projections are solved by enumerating the 2^K active sets (one batched linear solve,
# ~3 ms at 8 tasks); above it, by scipy's NNLS (Lawson-Hanson active set). Both are exact up to rounding.
MAX_ENUMERATED_TASKS = 8


def dual_cone_weights(gramian: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """
    For each row `u` of `targets` `[n, K]`, the solution `v` of the QP `min_v v^T G v` subject to `v >= u`, with
    `G = gramian` `[K, K]` positive semi-definite (float64): `J^T v` is the projection of `J^T u` onto the dual cone
    `{x : J x >= 0}` of the rows of `J` (`G = J J^T`; Proposition 1 of the UPGrad paper). Returns `[n, K]`.

    Exact, as torchjd's quadprog projector: up to `MAX_ENUMERATED_TASKS` tasks every active set `A` is tried at once
    (`v_A = u_A`, `(G v)_F = 0` on the free set `F`: a `K x K` linear system of determinant `det(G_FF)`, non-zero for a
    positive definite `G`; singular ones are skipped), and the one
    that satisfies the KKT conditions (`v_F >= u_F`, multipliers `(G v)_A >= 0`) is kept, the lowest objective among
    several (a degenerate point). Above, NNLS on `||R (u + x)||` with `x >= 0`, `G = R^T R`.
    """
    num_tasks = gramian.shape[0]
    if num_tasks > MAX_ENUMERATED_TASKS:
        return _dual_cone_weights_nnls(gramian, targets)
    # active[a, j]: whether v_j = u_j in active set a (all 2^K of them; the all-active set always solves).
    active = torch.tensor(list(itertools.product([False, True], repeat=num_tasks)), dtype=torch.bool)
    eye = torch.eye(num_tasks, dtype=torch.float64)
    systems = torch.where(active.unsqueeze(2), eye, gramian)  # [2^K, K, K]: row j is e_j (active) or G_j (free)
    rhs = torch.where(active.unsqueeze(2), targets.T.unsqueeze(0), 0.0)  # [2^K, K, n]
    solutions, info = torch.linalg.solve_ex(systems, rhs)
    solutions = solutions.transpose(1, 2)  # [2^K, n, K]
    scale = targets.abs().amax(1, keepdim=True).clamp(min=1e-300)  # [n, 1]
    primal = (targets - solutions).clamp(min=0) / scale  # v >= u
    multipliers = solutions @ gramian  # (G v)_j, the multiplier of an active v_j >= u_j (up to a factor 2)
    dual_scale = (gramian.abs().max() * solutions.abs().amax(2, keepdim=True)).clamp(min=1e-300)
    dual = torch.where(active.unsqueeze(1), (-multipliers).clamp(min=0), 0.0) / dual_scale
    violation = torch.maximum(primal, dual).amax(2)  # [2^K, n]
    objective = (multipliers * solutions).sum(2)
    valid = (info == 0).unsqueeze(1) & torch.isfinite(violation) & torch.isfinite(objective)
    violation = torch.where(valid, violation, torch.inf)
    # Among the (numerically) KKT points, the lowest objective; were there none, the least violating set.
    kkt = violation <= 1e-9
    score = torch.where(kkt, objective, torch.inf)
    best = torch.where(kkt.any(0), score.argmin(0), violation.argmin(0))  # [n]
    return solutions[best, torch.arange(targets.shape[0])]


def _dual_cone_weights_nnls(gramian: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    eigenvalues, eigenvectors = np.linalg.eigh(gramian.numpy())
    root = np.sqrt(np.clip(eigenvalues, 0, None))[:, None] * eigenvectors.T  # R with R^T R = G
    rows = []
    for target in targets.numpy():
        excess, _ = scipy.optimize.nnls(root, -root @ target)
        rows.append(target + excess)
    return torch.from_numpy(np.stack(rows)).to(torch.float64)


class UPGrad(GramianWeighting):
    """
    UPGrad (Quinton & Rey 2024, "Jacobian Descent for Multi-Objective Optimization"): each task's gradient is
    projected onto the dual cone of all the tasks' gradients, `{x : g_j . x >= 0 for all j}` (the directions that
    conflict with no task), and the projections are averaged. In the Gramian, as torchjd 0.18's `UPGradWeighting`
    with its default `QuadprogProjector`:

        G' = G / tr(G) + reg_eps I        (G' = reg_eps I if tr(G) < norm_eps)
        v_i = argmin_v v^T G' v  subject to  v >= e_i / K,        w = sum_i v_i

    so that `w @ J = (1/K) sum_i pi_J(g_i)`. Every weight is at least `1/K`: a task is never pushed against, and the
    tasks in conflict with the others get more than the mean's `1/K`. Without conflict (all `g_i . g_j >= 0`) the
    weights are exactly the mean's, `1/K` each. A zero Gramian (or one of trace below `norm_eps`) gives the
    mean. The QPs are solved exactly (see [`dual_cone_weights`]); they match torchjd's quadprog answer to rounding
    (~1e-9; ~1e-7 with gradient norms spanning ten orders of magnitude). Only the uniform preference vector
    (torchjd's default `pref_vector=None`, the mean) is supported: there is no `pref_vector` hyper-parameter.

    Args:
        norm_eps: Below this trace, the Gramian is treated as zero (torchjd's 1e-4; an absolute threshold on the sum
            of the squared gradient norms).
        reg_eps: Added to the diagonal of the normalised Gramian, so that it is positive definite (torchjd's 1e-4).
            With 0, a singular Gramian still gives a solution (torchjd's quadprog raises).
        Other arguments: see [`GradientSurgery`].
    """

    name = "upgrad"
    has_state = False
    hyperparameters = {
        "norm_eps": Hyperparameter(
            0.0001,
            "below this trace (sum of squared gradient norms) the Gramian is treated as zero; torchjd's 1e-4",
            check=lambda value: value >= 0,
            rule="non-negative",
        ),
        "reg_eps": Hyperparameter(
            0.0001,
            "added to the diagonal of the trace-normalised Gramian; torchjd's 1e-4",
            check=lambda value: value >= 0,
            rule="non-negative",
        ),
    }

    def task_weights(self, gramian: torch.Tensor, group: int) -> torch.Tensor:
        num_tasks = gramian.shape[0]
        trace = gramian.diagonal().sum()
        normalized = torch.zeros_like(gramian) if trace < self.norm_eps or trace <= 0 else gramian / trace
        regularized = normalized + self.reg_eps * torch.eye(num_tasks, dtype=torch.float64)
        targets = torch.eye(num_tasks, dtype=torch.float64) / num_tasks  # u_i = e_i / K
        return dual_cone_weights(regularized, targets).sum(0)
