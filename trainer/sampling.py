# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""Task schedules: which task batches make up each training step.

Every schedule is a pure function of (seed, epoch): an interrupted run that is resumed mid-epoch sees the same
batches, and N processes that each take their share of a step see exactly the batches one process would see with
an N times larger batch.
"""

import math

import torch
from torch.utils.data import Dataset


SCHEDULES = ("round_robin", "sequential", "proportional", "annealed")


class MultitaskDataset(Dataset):
    """The tasks' datasets side by side: global index = the task's offset + the row in the task's dataset."""

    def __init__(self, datasets: dict):
        self.datasets = dict(datasets)
        self.tasks = list(self.datasets)
        self.offsets = {}
        total = 0
        for task in self.tasks:
            self.offsets[task] = total
            total += len(self.datasets[task])
        self.total = total

    def __len__(self):
        return self.total

    def __getitem__(self, index):
        for task in reversed(self.tasks):
            if index >= self.offsets[task]:
                return self.datasets[task][index - self.offsets[task]]
        raise IndexError(index)

    def task_sizes(self) -> dict[str, int]:
        return {task: len(dataset) for task, dataset in self.datasets.items()}


class MultitaskBatchSampler:
    """
    Yields, for each training step, this process's indices into a [`MultitaskDataset`]: one batch of every task in
    the step.

    Schedules:
    - `round_robin` (the paper): every step holds one batch of each task; an epoch lasts as long as the largest task
      needs, and the shorter tasks restart (with a fresh shuffle).
    - `sequential`: the tasks one after the other, each over its data once per epoch.
    - `proportional`: each step one task, drawn with probability proportional to its size N_i.
    - `annealed` (Stickland & Murray 2019): like proportional with p_i ~ N_i^alpha, alpha going linearly from
      `alpha_start` in the first epoch to `alpha_end` in the last.
    The last three run sum_i ceil(N_i / B_i) steps per epoch.

    Each task reads an endless stream of shuffles of its rows, drawn from (seed, epoch, task); a step takes the next
    `batch_size * num_processes` rows of the stream and this process keeps its `batch_size` slice. All processes
    draw the same step plan, so they always work on the same tasks.
    """

    def __init__(
        self,
        task_sizes: dict[str, int],
        batch_size: int | dict[str, int],
        schedule: str = "round_robin",
        seed: int = 42,
        num_epochs: int = 1,
        num_processes: int = 1,
        process_index: int = 0,
        alpha_start: float = 1.0,
        alpha_end: float = 0.2,
    ):
        if schedule not in SCHEDULES:
            raise ValueError(f"Unknown task schedule {schedule!r}; expected one of {SCHEDULES}.")
        if not task_sizes or any(size <= 0 for size in task_sizes.values()):
            raise ValueError(f"Every task needs at least one training example; got sizes {task_sizes}.")
        self.task_sizes = dict(task_sizes)
        self.tasks = list(task_sizes)
        if isinstance(batch_size, int):
            batch_size = dict.fromkeys(self.tasks, batch_size)
        self.batch_sizes = {task: int(batch_size[task]) for task in self.tasks}
        self.schedule = schedule
        self.seed = seed
        self.num_epochs = max(1, num_epochs)
        self.num_processes = num_processes
        self.process_index = process_index
        self.alpha_start = alpha_start
        self.alpha_end = alpha_end
        self.epoch = 0
        offsets, total = {}, 0
        for task in self.tasks:
            offsets[task] = total
            total += self.task_sizes[task]
        self.offsets = offsets
        # Batches per task and epoch, counted in global (all processes) batches.
        self.task_steps = {
            task: math.ceil(self.task_sizes[task] / (self.batch_sizes[task] * num_processes)) for task in self.tasks
        }

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __len__(self) -> int:
        if self.schedule == "round_robin":
            return max(self.task_steps.values())
        return sum(self.task_steps.values())

    def _generator(self, *keys: int) -> torch.Generator:
        generator = torch.Generator()
        generator.manual_seed(hash((self.seed, self.epoch) + keys) & 0x7FFF_FFFF_FFFF_FFFF)
        return generator

    def alpha(self) -> float:
        """The sampling temperature of this epoch: 1 for `proportional`, annealed for `annealed`."""
        if self.schedule != "annealed" or self.num_epochs == 1:
            return self.alpha_start
        progress = min(self.epoch, self.num_epochs - 1) / (self.num_epochs - 1)
        return self.alpha_start + (self.alpha_end - self.alpha_start) * progress

    def step_plan(self) -> list[list[str]]:
        """The tasks of every step of the current epoch."""
        if self.schedule == "round_robin":
            return [list(self.tasks)] * len(self)
        if self.schedule == "sequential":
            return [[task] for task in self.tasks for _ in range(self.task_steps[task])]
        sizes = torch.tensor([self.task_sizes[task] for task in self.tasks], dtype=torch.float64)
        probabilities = sizes ** self.alpha()
        draws = torch.multinomial(
            probabilities / probabilities.sum(), len(self), replacement=True, generator=self._generator(-1)
        )
        return [[self.tasks[i]] for i in draws.tolist()]

    def _stream(self, task_index: int, task: str):
        """Endless shuffles of one task's rows, a fresh shuffle each time the task restarts."""
        cycle = 0
        while True:
            yield from torch.randperm(self.task_sizes[task], generator=self._generator(task_index, cycle)).tolist()
            cycle += 1

    def __iter__(self):
        streams = {task: self._stream(i, task) for i, task in enumerate(self.tasks)}
        for step_tasks in self.step_plan():
            indices = []
            for task in step_tasks:
                size = self.batch_sizes[task]
                global_batch = [next(streams[task]) for _ in range(size * self.num_processes)]
                mine = global_batch[self.process_index * size : (self.process_index + 1) * size]
                indices.extend(self.offsets[task] + row for row in mine)
            yield indices
