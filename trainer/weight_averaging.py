# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""An exponential moving average of the trained weights, which the trainer evaluates and saves (`--ema_decay`)."""

import contextlib
import os

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file


# Beside a checkpoint's `model.safetensors` (the average): the weights that training continues from.
TRAINING_WEIGHTS_NAME = "training_weights.safetensors"


class WeightAverage:
    """
    Polyak averaging with an exponential moving average (as TensorFlow's `ExponentialMovingAverage`): after the n-th
    optimizer step, `average = d * average + (1 - d) * weights` with `d = min(decay, (1 + n) / (10 + n))`, so that the
    first steps do not keep the average at the starting weights. The average starts at the weights training starts
    from. The trainer evaluates and saves the average, and trains the weights themselves; a checkpoint holds both, so
    that a resumed run continues the average exactly.

    Args:
        named_parameters (`list[tuple[str, torch.nn.Parameter]]`):
            The trained parameters (every parameter that has a gradient: shared, PALs and heads).
        decay (`float`):
            The decay `d` in (0, 1): about `1 / (1 - d)` steps are averaged (0.999: the last 1,000).
    """

    def __init__(self, named_parameters: list[tuple[str, torch.nn.Parameter]], decay: float):
        self.decay = decay
        self.names = [name for name, _ in named_parameters]
        self.parameters = [parameter for _, parameter in named_parameters]
        self.average = [parameter.detach().clone() for parameter in self.parameters]
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.average, [parameter.detach() for parameter in self.parameters], 1.0 - decay)
        self.updates += 1

    @torch.no_grad()
    def _swap(self) -> None:
        for parameter, average in zip(self.parameters, self.average):
            weights = parameter.detach().clone()
            parameter.detach().copy_(average)
            average.copy_(weights)

    @contextlib.contextmanager
    def swapped_in(self):
        """The model holds the average inside (and the average the training weights, which `save` writes)."""
        self._swap()
        try:
            yield
        finally:
            self._swap()

    @torch.no_grad()
    def apply(self) -> None:
        """The model takes the average for good: what a run that ends without loading its best checkpoint keeps."""
        torch._foreach_copy_([parameter.detach() for parameter in self.parameters], self.average)

    def save_training_weights(self, checkpoint: str) -> None:
        """Writes the training weights beside a checkpoint saved while the average was swapped in."""
        tensors = {name: tensor.contiguous() for name, tensor in zip(self.names, self.average)}
        save_file(tensors, os.path.join(checkpoint, TRAINING_WEIGHTS_NAME), metadata={"updates": str(self.updates)})

    @torch.no_grad()
    def resume(self, checkpoint: str) -> None:
        """
        After the checkpoint's `model.safetensors` (its average) is loaded into the model: the average takes those
        weights, the model the training weights, and the count of updates goes on.
        """
        path = os.path.join(checkpoint, TRAINING_WEIGHTS_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing: a run with --ema_decay resumes from the weights it trained.")
        tensors = load_file(path)
        missing = sorted(set(self.names) - set(tensors))
        if missing:
            raise ValueError(f"{path} lacks the weights of {missing[:3]}: it is not this model's checkpoint.")
        with safe_open(path, "pt") as handle:  # the count of updates is in the header's metadata
            self.updates = int(handle.metadata()["updates"])
        for parameter, average, name in zip(self.parameters, self.average, self.names):
            average.copy_(parameter.detach())
            parameter.detach().copy_(tensors[name])
