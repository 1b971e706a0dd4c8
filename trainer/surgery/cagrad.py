# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""CAGrad (Liu et al. 2021, "Conflict-Averse Gradient Descent for Multi-task Learning"), as in torchjd."""

import itertools

import numpy as np
import scipy.optimize
import torch

from .base import Hyperparameter
from .weighting import GramianWeighting


# The radius scale of the CAGrad paper's experiments (torchjd's `c` has no default).
DEFAULT_CAGRAD_C = 0.4
# Up to this many tasks the problem on the simplex is solved exactly, by enumerating the `2^K - 1` supports of `w`
# (~5 ms at 6 tasks); above it, with scipy's SLSQP (combined gradient to ~1e-6 of the exact one, ~5 ms).
MAX_ENUMERATED_TASKS = 6


def _subsets(num_tasks: int) -> torch.Tensor:
    """The `2^K - 1` non-empty subsets of the tasks, as `[N, K]` masks."""
    masks = torch.tensor(list(itertools.product([False, True], repeat=num_tasks)), dtype=torch.bool)
    return masks[1:]


def cagrad_simplex_weights(gramian: torch.Tensor, radius: float) -> torch.Tensor:
    """
    The solution `w` of `min_w (G u)^T w + radius sqrt(w^T G w)` over the simplex (`u = 1/K`), for a Gramian
    `G = A A^T` `[K, K]` (float64) and `radius > 0`; in the reduced gradients `a_i` (the rows of `A`), the minimum
    over the convex hull of the `a_i` of `h(x) = g0 . x + radius ||x||`, `g0 = A^T u`, at `x = A^T w`.

    Exact up to `MAX_ENUMERATED_TASKS` tasks. Some optimal `w` has a support `S` whose `a_i` are affinely
    independent; where `x != 0`, the KKT conditions on `S` say that `d = g0 + radius x / ||x||` (CAGrad's step) has
    the same dot product `mu` with every `a_i`, `i in S`: with `P = pinv(G_SS)`, `x / ||x|| = A_S^T P (mu 1 - b_S) /
    radius` (`b = G u`), where `||x|| = 1` is a quadratic equation in `mu` (or `mu = 0` when `1` is not in the range of
    `G_SS`). Each of these directions gives `w_S` and `||x||` by a linear solve (`A_S^T w_S = ||x|| x / ||x||`,
    `sum(w_S) = 1`), as does `x = 0` (when `0` is in the hull). Every candidate with `w >= 0` is a feasible point, the
    optimum is among them: the candidate of lowest objective is the solution. Where `w` is not unique (linearly
    dependent gradients), `A^T w`, and so the combined gradient, still is.
    """
    num_tasks = gramian.shape[0]
    if num_tasks > MAX_ENUMERATED_TASKS:
        return _cagrad_simplex_weights_slsqp(gramian, radius)
    eigenvalues, eigenvectors = torch.linalg.eigh(gramian)
    # A, with A A^T = G. Eigenvalues at the level of G's rounding are zero: their square roots (~1e-8) would make
    # the reduced gradients of exactly dependent tasks (a zero one, two opposite ones) independent.
    eigenvalues = torch.where(eigenvalues > 1e-13 * eigenvalues.max().clamp(min=0), eigenvalues, 0.0)
    reduced = eigenvectors * eigenvalues.sqrt()
    gramian = reduced @ reduced.T
    mean = torch.full((num_tasks,), 1.0 / num_tasks, dtype=torch.float64)
    b = gramian @ mean
    masks = _subsets(num_tasks).to(torch.float64)  # [N, K]
    sub_gramians = gramian * masks.unsqueeze(2) * masks.unsqueeze(1)  # G_SS, embedded with zeros
    pinvs = torch.linalg.pinv(sub_gramians, hermitian=True, rtol=1e-12)
    ones, b_sub = masks, b * masks  # 1_S, b_S
    p_ones, p_b = (pinvs @ ones.unsqueeze(2)).squeeze(2), (pinvs @ b_sub.unsqueeze(2)).squeeze(2)
    a, beta, gamma = (ones * p_ones).sum(1), (ones * p_b).sum(1), (b_sub * p_b).sum(1)
    root = (beta * beta - a * (gamma - radius * radius)).clamp(min=0).sqrt()
    safe_a = torch.where(a > 1e-300, a, 1.0)
    mus = torch.stack([(beta + root) / safe_a, (beta - root) / safe_a, torch.zeros_like(a)], 1)  # [N, 3]
    directions = (mus.unsqueeze(2) * p_ones.unsqueeze(1) - p_b.unsqueeze(1)) @ reduced  # A_S^T P (mu 1 - b_S)
    norms = directions.norm(dim=2, keepdim=True)
    directions = torch.where(norms > 1e-300, directions / norms.clamp(min=1e-300), 0.0)
    directions = torch.cat([directions, torch.zeros_like(directions[:, :1])], 1)  # and x = 0: [N, 4, K]
    # [A_S^T, -x; 1_S^T, 0] [w; r] = [0; 1]: K + 1 equations, unknowns w (zero outside S) and r = ||x||.
    num_subsets, num_candidates = directions.shape[:2]
    top = (reduced.T.unsqueeze(0) * masks.unsqueeze(1)).unsqueeze(1).expand(-1, num_candidates, -1, -1)
    top = torch.cat([top, -directions.unsqueeze(3)], 3)  # [N, 4, K, K + 1]
    bottom = torch.cat([masks, torch.zeros(num_subsets, 1, dtype=torch.float64)], 1)  # [N, K + 1]
    bottom = bottom.view(num_subsets, 1, 1, num_tasks + 1).expand(-1, num_candidates, -1, -1)
    systems = torch.cat([top, bottom], 2)  # [N, 4, K + 1, K + 1]
    rhs = torch.zeros(num_tasks + 1, dtype=torch.float64)
    rhs[-1] = 1.0
    solutions = torch.linalg.pinv(systems, rtol=1e-12) @ rhs  # least norm: zero outside S
    residuals = (systems @ solutions.unsqueeze(3)).squeeze(3) - rhs
    weights, lengths = solutions[..., :-1], solutions[..., -1]
    scale = reduced.abs().max().clamp(min=1e-300)
    feasible = (
        (residuals.abs().amax(2) <= 1e-10 * (1 + scale))
        & (weights.amin(2) >= -1e-9)
        & (lengths >= -1e-12)
        & torch.isfinite(solutions).all(2)
    )
    weights = weights.clamp(min=0)
    weights = weights / weights.sum(2, keepdim=True).clamp(min=1e-300)
    objective = weights @ b + radius * ((weights @ gramian) * weights).sum(2).clamp(min=0).sqrt()
    objective = torch.where(feasible, objective, torch.inf).flatten()
    # The x = 0 candidates (a zero combined gradient) win ties: they are exact, the others carry rounding.
    is_zero = torch.zeros(directions.shape[:2], dtype=torch.bool)
    is_zero[:, -1] = True
    lowest = objective.min()
    ties = (objective <= lowest + 1e-13 * (1 + lowest.abs())) & is_zero.flatten()
    best = int(ties.nonzero()[0, 0]) if ties.any() else int(objective.argmin())
    if not torch.isfinite(objective[best]):  # cannot happen (the vertices solve); the mean, to stay finite
        return mean
    return weights.flatten(0, 1)[best]


def _cagrad_simplex_weights_slsqp(gramian: torch.Tensor, radius: float) -> torch.Tensor:
    matrix = gramian.numpy()
    num_tasks = matrix.shape[0]
    b = matrix @ np.full(num_tasks, 1.0 / num_tasks)

    def objective(w):
        norm = np.sqrt(max(w @ matrix @ w, 1e-30))
        return b @ w + radius * norm, b + radius * (matrix @ w) / norm

    result = scipy.optimize.minimize(
        objective,
        np.full(num_tasks, 1.0 / num_tasks),
        jac=True,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * num_tasks,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}],
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    w = np.clip(result.x, 0, None)
    return torch.from_numpy(w / w.sum()).to(torch.float64)


class CAGrad(GramianWeighting):
    """
    CAGrad (Liu et al. 2021, "Conflict-Averse Gradient Descent for Multi-task Learning", Algorithm 1): the step `d`
    maximises the worst task's improvement `min_i g_i . d` within a ball around the mean gradient `g0`,
    `||d - g0|| <= c ||g0||`. Its dual is a problem on the simplex; in the Gramian, as torchjd 0.18's
    `CAGradWeighting`:

        G' = G / tr(G)        (G' = 0 if tr(G) < norm_eps),    u = 1/K,    sqrt_phi = c sqrt(u^T G' u)
        w* = argmin_{w in simplex} (G' u)^T w + sqrt_phi sqrt(w^T G' w)
        w = u + (sqrt_phi / sqrt(w*^T G' w*)) w*        (w = 0 if sqrt(w*^T G' w*) < norm_eps)

    so that `w @ J = g0 + c ||g0|| g_w / ||g_w||` with `g_w = w* @ J` (the weights do not depend on the scale of
    `G`). Every weight is at least `1/K`; they sum to `1 + sqrt_phi / ||g_w||`, above 1: the step is longer than the
    mean's. `c = 0` gives the mean. The weights are all zero (torchjd's "approximately on the Pareto front", a zero
    step for the group) where the hull of the gradients contains (almost) zero and the ball reaches directions that
    conflict with no task, for instance when a task's gradient is zero or orders of magnitude smaller than the
    others'; and for a Gramian of trace below `norm_eps` (an absolute threshold), a zero one included.

    The problem on the simplex is solved exactly up to `MAX_ENUMERATED_TASKS` tasks (see
    [`cagrad_simplex_weights`]; the KKT conditions hold to ~1e-15), where torchjd calls cvxpy's Clarabel. Clarabel
    stops at a duality gap of ~1e-8, which leaves its weights up to ~1e-4 from the optimum (the objective is flat
    there): the weights and the combined gradients agree with torchjd's to ~2e-4, and reach an objective at least as
    low. Where `w*` is not unique (linearly dependent gradients) the weights can differ more, the combined gradient
    `w @ J` does not.

    Args:
        c: Radius of the ball, in units of `||g0||` (the paper's 0.4, `DEFAULT_CAGRAD_C`; torchjd has no default).
        norm_eps: The trace below which the Gramian is zero, and the `||g_w||` below which the weights are
            (torchjd's 1e-4).
        Other arguments: see [`GradientSurgery`].
    """

    name = "cagrad"
    has_state = False
    hyperparameters = {
        "c": Hyperparameter(
            DEFAULT_CAGRAD_C,
            "radius of the ball around the mean gradient, in units of its norm; 0.4 in the CAGrad paper",
            check=lambda value: value >= 0,
            rule="non-negative",
        ),
        "norm_eps": Hyperparameter(
            0.0001,
            "below this trace (sum of squared gradient norms), and this norm of the conflict-averse direction in "
            "the trace-normalised gradients, the weights are zero; torchjd's 1e-4",
            check=lambda value: value >= 0,
            rule="non-negative",
        ),
    }

    def task_weights(self, gramian: torch.Tensor, group: int) -> torch.Tensor:
        num_tasks = gramian.shape[0]
        trace = gramian.diagonal().sum()
        if trace < self.norm_eps or trace <= 0:
            return torch.zeros(num_tasks, dtype=torch.float64)  # torchjd's normalised Gramian is then zero
        normalized = gramian / trace
        mean = torch.full((num_tasks,), 1.0 / num_tasks, dtype=torch.float64)
        radius = self.c * max(float(mean @ normalized @ mean), 0.0) ** 0.5
        if radius > 0:
            w = cagrad_simplex_weights(normalized, radius)
        else:  # c = 0 or g0 = 0: the objective is linear in w, a vertex (w only matters through ||g_w|| >= norm_eps)
            w = torch.zeros(num_tasks, dtype=torch.float64)
            w[int((normalized @ mean).argmin())] = 1.0
        norm = float((w @ normalized @ w).clamp(min=0).sqrt())
        if norm < self.norm_eps or norm <= 0:
            return torch.zeros(num_tasks, dtype=torch.float64)  # "approximately on the Pareto front"
        return mean + (radius / norm) * w
