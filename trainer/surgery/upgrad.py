# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""UPGrad (Quinton & Rey 2024, "Jacobian Descent for Multi-Objective Optimization"), as in torchjd."""

import torch

from .dual_cone import dual_cone_weights, normalized_gramian, projector_hyperparameters
from .weighting import GramianWeighting


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
    hyperparameters = projector_hyperparameters()

    def task_weights(self, gramian: torch.Tensor, group: int) -> torch.Tensor:
        num_tasks = gramian.shape[0]
        targets = torch.eye(num_tasks, dtype=torch.float64) / num_tasks  # u_i = e_i / K
        return dual_cone_weights(normalized_gramian(gramian, self.norm_eps, self.reg_eps), targets).sum(0)
