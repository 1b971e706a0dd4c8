# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""PCGrad (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning")."""

from .base import GradientSurgery


class PCGrad(GradientSurgery):
    """
    PCGrad: when `g_i'` conflicts with `g_j` (`g_i'.g_j < 0`), project `g_i'` onto the normal plane of `g_j`:
    `g_i' -= (g_i'.g_j / (||g_j||^2 + eps)) g_j`. Arguments: see [`GradientSurgery`].
    """

    name = "pcgrad"

    def _pair_step(self, i, j, dot, cosine, norm_i, norm_j):
        return dot < 0, -dot / (norm_j * norm_j + self.eps)
