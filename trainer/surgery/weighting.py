# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
`GramianWeighting`, the base of the methods that pick how much of each task goes into the step (MGDA, IMTL-G,
Aligned-MTL, UPGrad, CAGrad, Nash-MTL, DualProj), from the `K x K` Gramian `G = J J^T` of the task gradients alone,
as torchjd's `*Weighting`s do. The combined gradient of a parameter group is `w @ J_k`, `w` the group's `[K]` weights.
"""

import torch

from .base import GradientSurgery


class GramianWeighting(GradientSurgery):
    """
    Base class of a Gramian weighting: subclasses implement `task_weights`, from one group's Gramian to its `[K]`
    weights. The per-task gradients are not changed one pair at a time: `g_i' = w_i g_i` (what `adjusted` returns),
    and the step is their sum. Nothing is drawn at random and no pair is "adjusted": the statistics are the mean
    weight per task and the cosines between the tasks' gradients.

    Hyper-parameters are declared in `hyperparameters` (see [`GradientSurgery`]) and set as attributes.
    """

    def task_weights(self, gramian: torch.Tensor, group: int) -> torch.Tensor:
        """
        The `[K]` weights of one parameter group from its Gramian `[K, K]` (float64, host), finite. `group` indexes
        the group, for a method that keeps state per group.
        """
        raise NotImplementedError

    def _weights(self, gramian, orders):
        num_groups, num_tasks = gramian.shape[0], self.num_tasks
        task_weights = torch.stack([self.task_weights(gramian[k], k).to(torch.float64) for k in range(num_groups)])
        self._window_weight_sum += task_weights.sum(0)
        norms = gramian.diagonal(dim1=1, dim2=2).clamp(min=0).sqrt()  # [n_groups, K]
        cosines = gramian / (norms.unsqueeze(2) * norms.unsqueeze(1) + self.eps)
        weights = torch.diag_embed(task_weights)  # g_i' = w_i g_i
        adjusted = torch.zeros(num_tasks, num_tasks, num_groups, dtype=torch.bool)
        return weights, adjusted, cosines.permute(1, 2, 0).clamp(-1.0, 1.0)

    def _draw_orders(self) -> list[list[int]]:
        return []  # no pair loop, nothing drawn

    def pop_stats(self) -> dict[str, float]:
        """
        As [`GradientSurgery.pop_stats`], with `surgery/<task>/weight`, the task's mean weight (over groups and
        steps), instead of the adjustment counts.
        """
        count, weight_sum = self._window_cosine_count, self._window_weight_sum
        stats = {key: value for key, value in super().pop_stats().items() if not key.endswith("/adjustments")}
        if count:
            for i, name in enumerate(self.task_names):
                stats[f"surgery/{name}/weight"] = float(weight_sum[i]) / count
        return stats

    def _reset_window(self) -> None:
        super()._reset_window()
        self._window_weight_sum = torch.zeros(self.num_tasks, dtype=torch.float64)
