# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""IMTL-G (Liu et al. 2021, "Towards Impartial Multi-task Learning"), as generalized in torchjd."""

import torch

from .weighting import GramianWeighting


class IMTLG(GramianWeighting):
    """
    IMTL-G, the gradient half of IMTL (Liu et al. 2021, "Towards Impartial Multi-task Learning"): the step `d = w @ J`
    has the same projection on every task's unit gradient, `d . g_i / ||g_i||` equal for all `i`, with the weights
    summing to 1. In the form of torchjd 0.18's `IMTLGWeighting` (Quinton & Rey 2024, "Jacobian Descent for
    Multi-Objective Optimization"), which also allows linearly dependent gradients:

        v = pinv(G) sqrt(diag(G)),    w = v / sum(v)    (w = 0 if |sum(v)| < 1e-12)

    With independent gradients, `G w` is proportional to the gradient norms, which is the equal-projection condition.
    The weights sum to 1 but can be negative. `pinv` is `torch.linalg.pinv` with its default cutoff (singular values
    below `K * float64 eps` times the largest are dropped), as in torchjd: with gradients whose norms span more than
    ~8 orders of magnitude, the smallest ones fall below the cutoff and are treated as dependent on the others. A zero
    Gramian gives zero weights (a zero step; every gradient is zero anyway). No hyper-parameters.

    Args: see [`GradientSurgery`].
    """

    name = "imtl_g"
    has_state = False

    def task_weights(self, gramian: torch.Tensor, group: int) -> torch.Tensor:
        norms = gramian.diagonal().clamp(min=0).sqrt()  # clamp: a no-op on a Gramian, whose diagonal is >= 0
        v = torch.linalg.pinv(gramian) @ norms
        v_sum = v.sum()
        return torch.zeros_like(v) if v_sum.abs() < 1e-12 else v / v_sum
