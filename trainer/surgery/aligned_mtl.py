# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""Aligned-MTL (Senushkin et al. 2023, "Independent Component Alignment for Multi-Task Learning")."""

import torch

from .base import Hyperparameter
from .weighting import GramianWeighting


SCALE_MODES = ("min", "median", "rmse")


class AlignedMTL(GramianWeighting):
    """
    Aligned-MTL (Senushkin et al. 2023, "Independent Component Alignment for Multi-Task Learning", Algorithm 1):
    replaces the task gradients by an orthogonal system with equal norms, the closest to them, and steps along its
    mean. From the eigendecomposition `G = V diag(lambda) V^T`, keeping the `r` eigenvalues above
    `max(lambda) * K * float64 eps`:

        B = sqrt(sigma) V_r diag(lambda_r)^(-1/2) V_r^T,    w = B (1/K, ..., 1/K)

    where `sigma` is the smallest kept eigenvalue (`scale_mode="min"`), their median (`"median"`, the lower middle
    one for an even count, as `torch.median`) or their mean (`"rmse"`, as in the original implementation). Then
    `B G B = sigma V_r V_r^T`: with independent gradients the rows of `B J` are orthogonal with squared norm `sigma`,
    so that no task's direction dominates the step; `w` are the weights of the mean of those rows on the original
    gradients, and can be negative.
    This is torchjd 0.18's `AlignedMTLWeighting` with its default preference vector (the mean), the only one
    supported here. A zero Gramian (rank 0) gives `B = I`, the mean, as in torchjd.

    Args:
        scale_mode: `"min"` (torchjd's default), `"median"` or `"rmse"`.
        Other arguments: see [`GradientSurgery`].
    """

    name = "aligned_mtl"
    hyperparameters = {
        "scale_mode": Hyperparameter(
            "min",
            "eigenvalue that sets the norm of the aligned gradients: the smallest (torchjd's default), the median, "
            "or the mean (rmse, the original implementation's)",
            check=lambda scale_mode: scale_mode in SCALE_MODES,
            rule=f"one of {', '.join(SCALE_MODES)}",
        )
    }
    has_state = False

    def task_weights(self, gramian: torch.Tensor, group: int) -> torch.Tensor:
        num_tasks = gramian.shape[0]
        preference = torch.full((num_tasks,), 1.0 / num_tasks, dtype=torch.float64)
        eigenvalues, eigenvectors = torch.linalg.eigh(gramian, UPLO="U")
        tolerance = eigenvalues.max() * num_tasks * torch.finfo(gramian.dtype).eps
        rank = int((eigenvalues > tolerance).sum())
        if rank == 0:
            return preference
        order = torch.argsort(eigenvalues, descending=True)[:rank]
        eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
        if self.scale_mode == "min":
            scale = eigenvalues[-1]
        elif self.scale_mode == "median":
            scale = torch.median(eigenvalues)
        else:
            scale = eigenvalues.mean()
        balance = scale.sqrt() * eigenvectors @ torch.diag(1 / eigenvalues.sqrt()) @ eigenvectors.T
        return balance @ preference
