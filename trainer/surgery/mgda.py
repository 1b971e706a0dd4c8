# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""MGDA (Désidéri 2012; Sener & Koltun 2018, "Multi-Task Learning as Multi-Objective Optimization")."""

import torch

from .base import Hyperparameter
from .weighting import GramianWeighting


class MGDA(GramianWeighting):
    """
    MGDA: the step is the minimum-norm point of the convex hull of the task gradients (Désidéri 2012,
    "Multiple-gradient descent algorithm (MGDA) for multiobjective optimization"), found with the Frank-Wolfe solver
    of Algorithm 2 of Sener & Koltun 2018, "Multi-Task Learning as Multi-Objective Optimization":

        w = argmin_{w in simplex} w^T G w

    Starting from `w = 1/K`, each iteration takes the task `t = argmin_i (G w)_i`, the exact line search towards the
    vertex `e_t`: with `a = w^T G e_t`, `b = w^T G w`, `c = e_t^T G e_t`, `gamma = 1` if `c <= a`, else `0` if
    `b <= a`, else `(b - a) / (b + c - 2a)`; `w <- (1 - gamma) w + gamma e_t`, and stops once `gamma < epsilon` or
    after `max_iters` iterations. This is torchjd 0.18's `MGDAWeighting` iteration for iteration (same start, step,
    stopping rule, and tie-breaking of the argmin: the first minimum): it gives torchjd's weights up to float64
    rounding (the summation order of the dot products: ~1e-16 in the tests), and solves the min-norm problem only
    to the Frank-Wolfe tolerance `epsilon`, not exactly.

    The weights are non-negative and sum to 1; a task gets weight 0 when moving along the others' gradients already
    does not increase its loss. A zero Gramian gives, as in torchjd, all the weight to task 0 (every vertex is optimal,
    and the step is zero anyway).

    Args:
        epsilon: Stop once the step `gamma` is below it (torchjd's default, 1e-3).
        max_iters: Maximum number of Frank-Wolfe iterations (torchjd's default, 100).
        Other arguments: see [`GradientSurgery`].
    """

    name = "mgda"
    hyperparameters = {
        "epsilon": Hyperparameter(
            0.001,
            "Frank-Wolfe stops once its step is below this (torchjd's default)",
            check=lambda epsilon: epsilon > 0,
            rule="positive",
        ),
        "max_iters": Hyperparameter(
            100,
            "maximum number of Frank-Wolfe iterations (torchjd's default)",
            check=lambda max_iters: max_iters > 0,
            rule="a positive integer",
        ),
    }
    has_state = False

    def task_weights(self, gramian: torch.Tensor, group: int) -> torch.Tensor:
        # torchjd's iteration, on Python floats: for K <= ~10, 100 iterations of small torch ops cost ~50x more. Each
        # quantity is the same sum of the same products as torchjd's (`a` along the column `G[:, t]`, as torchjd's
        # `alpha @ (G @ e_t)`), so only their summation order can differ: ~1e-16, and identical rows tie exactly.
        rows = gramian.tolist()
        num_tasks = len(rows)
        alpha = [1.0 / num_tasks] * num_tasks
        for _ in range(self.max_iters):
            g_alpha = [sum(x * y for x, y in zip(row, alpha)) for row in rows]
            t = min(range(num_tasks), key=g_alpha.__getitem__)  # the first minimum, as torch.argmin
            a = sum(alpha_i * row[t] for alpha_i, row in zip(alpha, rows))
            b = sum(x * y for x, y in zip(alpha, g_alpha))
            c = rows[t][t]
            if c <= a:
                gamma = 1.0
            elif b <= a:
                gamma = 0.0
            else:
                gamma = (b - a) / (b + c - 2 * a)
            alpha = [(1 - gamma) * alpha_i for alpha_i in alpha]
            alpha[t] += gamma
            if gamma < self.epsilon:
                break
        return torch.tensor(alpha, dtype=torch.float64)
