# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""DualProj (Quinton & Rey 2024, "Jacobian Descent for Multi-Objective Optimization"; the projection of GEM)."""

import torch

from .dual_cone import dual_cone_weights, normalized_gramian, projector_hyperparameters
from .weighting import GramianWeighting


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
    is solved exactly (see [`dual_cone_weights`]; no QP package is needed): it agrees with torchjd's quadprog answer to
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
    hyperparameters = projector_hyperparameters(reg_eps_rule="positive")
    has_state = False

    def task_weights(self, gramian: torch.Tensor, group: int) -> torch.Tensor:
        num_tasks = gramian.shape[0]
        preference = torch.full((1, num_tasks), 1.0 / num_tasks, dtype=torch.float64)  # u = (1/K, ..., 1/K)
        return dual_cone_weights(normalized_gramian(gramian, self.norm_eps, self.reg_eps), preference)[0]
