# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""`build_surgery`: a method by its command-line name."""

import torch

from .base import GradientSurgery
from .gradvac import DEFAULT_GRADVAC_BETA, GradVac
from .pcgrad import PCGrad
from .sum import Sum


SURGERIES = ("none", "pcgrad", "gradvac")


def build_surgery(
    name: str,
    num_tasks: int,
    group_sizes: list[int] | None = None,
    beta: float = DEFAULT_GRADVAC_BETA,
    eps: float = 1e-8,
    generator: torch.Generator | None = None,
    task_names: list[str] | None = None,
) -> GradientSurgery:
    """Builds the surgery called `name`: `"none"` ([`Sum`]), `"pcgrad"` ([`PCGrad`]) or `"gradvac"` ([`GradVac`])."""
    kwargs = {"group_sizes": group_sizes, "eps": eps, "generator": generator, "task_names": task_names}
    if name == "none":
        return Sum(num_tasks, **kwargs)
    if name == "pcgrad":
        return PCGrad(num_tasks, **kwargs)
    if name == "gradvac":
        return GradVac(num_tasks, beta=beta, **kwargs)
    raise ValueError(f"Unknown surgery {name!r}; expected one of {SURGERIES}.")
