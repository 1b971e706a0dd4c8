# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
`GradientScaling`: each task's gradient row scaled before any method combines the rows (`--gradient_scaling`).

Scaling row `i` by `a_i` turns every group's Gramian `G` into `D G D` (`D = diag(a)`) and a method's combination `w`
of the scaled rows into `w * a` of the original ones, so a scaling composes with every method at the cost of `K`
numbers: normalise, then UPGrad. The scales come from each task's norm over all the shared parameters (summed over
groups), so a task's gradient keeps its direction and the balance between its groups.
"""

import torch


SCALINGS = ("none", "unit", "mean", "clip")


class GradientScaling:
    """
    Per-task scales of the gradient rows, from the per-group Gramians `[n_groups, K, K]` (float64, host):

    - `unit`: `a_i = 1 / ||g_i||`, every task's gradient of norm 1 (a zero gradient stays zero);
    - `mean`: `a_i = mean_j ||g_j|| / ||g_i||`, every task's gradient of the mean norm, so the step keeps its scale;
    - `clip`: `a_i = min(1, max_norm / ||g_i||)`, each task clipped on its own (`max_norm`), instead of (or before)
      clipping their sum with `--max_grad_norm`.

    Args:
        mode: One of `SCALINGS` (`none` scales nothing).
        max_norm: The per-task norm limit of `clip`.
        eps: Added to the norms in the denominators.
    """

    def __init__(self, mode: str = "none", max_norm: float = 1.0, eps: float = 1e-12) -> None:
        if mode not in SCALINGS:
            raise ValueError(f"Unknown gradient scaling {mode!r}; expected one of {SCALINGS}.")
        if not max_norm > 0:
            raise ValueError(f"max_norm must be above 0; got {max_norm}.")
        self.mode, self.max_norm, self.eps = mode, max_norm, eps

    def __repr__(self) -> str:
        return f"GradientScaling({self.mode!r}" + (f", max_norm={self.max_norm})" if self.mode == "clip" else ")")

    def scales(self, gramian: torch.Tensor) -> torch.Tensor | None:
        """The `[K]` scales, or `None` when nothing is scaled."""
        if self.mode == "none":
            return None
        norms = gramian.diagonal(dim1=1, dim2=2).sum(0).clamp(min=0).sqrt()  # each task over all groups
        nonzero = norms > 0
        if self.mode == "clip":
            return torch.where(norms > self.max_norm, self.max_norm / (norms + self.eps), 1.0)
        target = 1.0 if self.mode == "unit" else norms.mean()
        return torch.where(nonzero, target / (norms + self.eps), 0.0)

    @staticmethod
    def scale(gramian: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        """The Gramians of the scaled rows: `D G_k D` for every group."""
        return gramian * scales.view(1, -1, 1) * scales.view(1, 1, -1)
