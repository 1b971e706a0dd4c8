# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""`Sum`: no surgery, the plain sum of the task gradients."""

import torch

from .base import GradientSurgery
from .rows import SparseRows


class Sum(GradientSurgery):
    """No surgery: the plain sum of the task gradients. Draws nothing, records no statistics and has no state."""

    name = "none"

    compares_tasks = False
    has_state = False

    def __call__(
        self, grads: torch.Tensor, sparse: SparseRows | None = None, out: torch.Tensor | None = None, all_reduce=None
    ) -> torch.Tensor:
        if self.scaling is not None:  # the sum of the scaled rows
            return super().__call__(grads, sparse, out, all_reduce)
        self._check(grads)
        return torch.sum(grads, 0, out=out)

    def weights(self, gramian: torch.Tensor) -> torch.Tensor:
        return torch.eye(self.num_tasks, dtype=torch.float64).repeat(gramian.shape[0], 1, 1)

    def adjusted(self, grads: torch.Tensor) -> torch.Tensor:
        if self.scaling is not None:
            return super().adjusted(grads)
        self._check(grads)
        return grads.clone()
