# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""DualProj (Quinton & Rey 2024, "Jacobian Descent for Multi-Objective Optimization"; the projection of GEM)."""

import itertools

import numpy as np
import scipy.optimize
import torch

from .base import Hyperparameter
from .weighting import GramianWeighting


# Up to this many tasks the projection enumerates the 2^K active sets (one batched solve); above it, NNLS.
MAX_ENUMERATED_TASKS = 10


def project_weights(preference: torch.Tensor, gramian: torch.Tensor) -> torch.Tensor:
    """
    The solution `v` of `min_v v^T G v` subject to `v >= preference`, for a positive-definite `G` `[K, K]` (float64):
    the weights of the projection of `J^T preference` onto the dual cone of the rows of `J` (Quinton & Rey 2024,
    Proposition 1), what torchjd's `QuadprogProjector` solves with quadprog.

    Solved exactly. For `K <= MAX_ENUMERATED_TASKS`, by enumeration: for each active set `A` (`v_A = preference_A`),
    the free entries solve `(G v)_F = 0`, and the answer is the candidate that satisfies the KKT conditions
    (`v_F >= preference_F`, multipliers `(G v)_A >= 0`); `G` positive definite makes it unique, and the candidate with
    the smallest violation is taken, so that rounding cannot leave none. Above that, with `v = preference + x`, as
    the non-negative least squares `min_{x >= 0} ||L^T (preference + x)||` (`G = L L^T`, scipy's active-set NNLS).
    """
    num_tasks = gramian.shape[0]
    g, u = gramian.numpy(), preference.numpy()
    if num_tasks > MAX_ENUMERATED_TASKS:
        factor = np.linalg.cholesky(g).T
        x, _ = scipy.optimize.nnls(factor, -factor @ u)
        return torch.from_numpy(u + x)
    # numpy: torch's batched CPU solve costs ~8 ms even for 2x2 systems, numpy's ~20 us.
    active = np.array(list(itertools.product((False, True), repeat=num_tasks)))  # [2^K, K]
    eye = np.eye(num_tasks)
    # Row i of candidate s: v_i = u_i where i is active, (G v)_i = 0 where it is free. det = det(G_FF) > 0.
    system = np.where(active[:, :, None], eye, g)
    rhs = np.where(active, u, 0.0)
    candidates = np.linalg.solve(system, rhs[:, :, None])[:, :, 0]  # [2^K, K]
    multipliers = candidates @ g  # G v (G symmetric); 0 on the free entries by construction
    violation = np.maximum(np.where(active, -multipliers, u - candidates), 0.0).max(1)
    return torch.from_numpy(candidates[np.argmin(violation)].copy())


class DualProj(GramianWeighting):
    """
    DualProj (Quinton & Rey 2024, "Jacobian Descent for Multi-Objective Optimization"): the mean of the task
    gradients, projected onto their dual cone `{x : J x >= 0}`, the closest vector to the mean that increases no
    task's loss (the projection of Lopez-Paz & Ranzato 2017, "Gradient Episodic Memory for Continual Learning",
    Eq. 11). In the dual form, as torchjd 0.18's `DualProjWeighting` with its `QuadprogProjector`:

        G' = G / tr(G) + reg_eps I    (G' = reg_eps I if tr(G) < norm_eps),
        w = argmin_{v >= u} v^T G' v,    u = (1/K, ..., 1/K)

    so that `w @ J` is that projection (up to `reg_eps`). Each weight is at least `1/K`: a task gets more when the
    mean conflicts with its gradient, and every weight is `1/K` (the mean) when the mean conflicts with none. The QP
    is solved exactly (see [`project_weights`]; no QP package is needed): it agrees with torchjd's quadprog answer to
    ~1e-14 in the tests.

    Only torchjd's default preference vector (`pref_vector=None`, the mean `u` above) is supported. A Gramian whose
    trace is below `norm_eps` (absolute: a group's gradients with squared norms summing to less than 1e-4 by
    default) is treated as zero, as in torchjd, and gives the mean. With `norm_eps=0`, a zero Gramian (where torchjd
    divides by zero) gives the mean too. `reg_eps` must be positive (torchjd accepts 0, where quadprog then fails on
    a rank-deficient Gramian).

    Args:
        norm_eps: Traces below it count as a zero Gramian (torchjd's default, 1e-4).
        reg_eps: Added to the diagonal of the normalized Gramian, so that the QP is strictly convex (torchjd's
            default, 1e-4).
        Other arguments: see [`GradientSurgery`].
    """

    name = "dualproj"
    hyperparameters = {
        "norm_eps": Hyperparameter(
            0.0001,
            "Gramians with a smaller trace count as zero and give the mean (torchjd's default)",
            check=lambda norm_eps: norm_eps >= 0,
            rule="non-negative",
        ),
        "reg_eps": Hyperparameter(
            0.0001,
            "added to the diagonal of the trace-normalized Gramian before the projection (torchjd's default)",
            check=lambda reg_eps: reg_eps > 0,
            rule="positive",
        ),
    }
    has_state = False

    def task_weights(self, gramian: torch.Tensor, group: int) -> torch.Tensor:
        num_tasks = gramian.shape[0]
        preference = torch.full((num_tasks,), 1.0 / num_tasks, dtype=torch.float64)
        trace = float(gramian.diagonal().sum())
        normalized = gramian / trace if trace >= self.norm_eps and trace > 0 else torch.zeros_like(gramian)
        regularized = normalized + self.reg_eps * torch.eye(num_tasks, dtype=torch.float64)
        return project_weights(preference, regularized)
