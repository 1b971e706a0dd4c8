# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""GradVac (Wang et al. 2021, "Gradient Vaccine: Investigating and Improving Multi-task Optimization")."""

import torch

from .base import GradientSurgery, Hyperparameter


# The EMA rate of the targets in the GradVac paper (LibMTL and torchjd default to 0.5); the CLI's default too.
DEFAULT_GRADVAC_BETA = 0.01


class GradVac(GradientSurgery):
    """
    GradVac: when `phi = cos(g_i', g_j)` is below the target `phi_hat[i, j, k]`, add the multiple of `g_j` that makes
    the cosine exactly `phi_hat`:

        g_i' += ||g_i'|| (phi_hat sqrt(1 - phi^2) - phi sqrt(1 - phi_hat^2)) / (||g_j|| sqrt(1 - phi_hat^2) + eps) g_j

    Then, for every pair (adjusted or not), `phi_hat <- (1 - beta) phi_hat + beta phi`. Targets start at 0, so the
    first step equals PCGrad (up to `eps`).

    Args:
        beta: EMA rate of the targets (`DEFAULT_GRADVAC_BETA` = 0.01, the GradVac paper's; 0.5 in LibMTL and torchjd).
        Other arguments: see [`GradientSurgery`].
    """

    name = "gradvac"
    hyperparameters = {
        "beta": Hyperparameter(
            DEFAULT_GRADVAC_BETA,
            "EMA rate of the cosine targets; 0.01 in the GradVac paper, 0.5 in LibMTL and torchjd",
            check=lambda beta: 0.0 <= beta <= 1.0,
            rule="in [0, 1]",
        )
    }

    def __init__(self, num_tasks: int, group_sizes: list[int] | None = None, **kwargs) -> None:
        super().__init__(num_tasks, group_sizes, **kwargs)
        # Targets per ordered pair and group, kept in float64 on the host.
        self.phi_hat = torch.zeros(num_tasks, num_tasks, self.num_groups, dtype=torch.float64)

    def _weights(self, gramian, orders):
        # Each pair is visited once per step and compares against the target from before the step.
        self._target_sin = (1 - self.phi_hat * self.phi_hat).clamp(min=0).sqrt()
        weights, adjusted, cosines = super()._weights(gramian, orders)
        # Every pair moves its target, adjusted or not; otherwise targets could never rise above 0.
        self.phi_hat = (1 - self.beta) * self.phi_hat + self.beta * cosines
        return weights, adjusted, cosines

    def _pair_step(self, i, j, dot, cosine, norm_i, norm_j):
        target, target_sin = self.phi_hat[i, j], self._target_sin[i, j]
        sin = (1 - cosine * cosine).clamp(min=0).sqrt()
        coefficient = norm_i * (target * sin - cosine * target_sin) / (norm_j * target_sin + self.eps)
        return cosine < target, coefficient

    def state_dict(self) -> dict:
        return {**super().state_dict(), "phi_hat": self.phi_hat.clone()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        phi_hat = state["phi_hat"]
        if tuple(phi_hat.shape) != tuple(self.phi_hat.shape):
            raise ValueError(f"phi_hat has shape {tuple(phi_hat.shape)}, expected {tuple(self.phi_hat.shape)}.")
        self.phi_hat = phi_hat.to(device="cpu", dtype=torch.float64).clone()
