# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""`build_surgery`: a method by its command-line name."""

from .base import METHODS, GradientSurgery, method_names


def build_surgery(name: str, num_tasks: int, group_sizes: list[int] | None = None, **kwargs) -> GradientSurgery:
    """
    Builds the method called `name` (one of `METHODS`: `"none"`, `"pcgrad"`, `"gradvac"`, ...) for `num_tasks` tasks
    and `group_sizes`, with the other arguments of [`GradientSurgery`] (`eps`, `generator`, `task_names`, `scaling`,
    by keyword) and its declared hyper-parameters (`beta=0.5` for GradVac; unknown names and values outside a
    method's rule are errors); the task rows are scaled by `scaling` ([`GradientScaling`]; None scales nothing).
    """
    if name not in METHODS:
        raise ValueError(f"Unknown surgery {name!r}; expected one of {method_names()}.")
    return METHODS[name](num_tasks, group_sizes, **kwargs)
