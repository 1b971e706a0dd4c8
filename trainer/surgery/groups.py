# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""Parameter groups: the consecutive column ranges of the gradient matrix that surgery treats separately."""

import re
from collections.abc import Iterable

import torch


GRANULARITIES = ("model", "layer", "tensor")

# `encoder.layer.3.attention...` -> `encoder.layer.3`; the first match wins so nested modules stay in their layer.
_LAYER_PATTERN = re.compile(r"(?:^|\.)layer\.\d+\.")


def _group_key(name: str) -> str:
    match = _LAYER_PATTERN.search(name)
    if match is not None:
        return name[: match.end() - 1]
    parts = name.split(".")
    # `bert.embeddings.word_embeddings.weight` -> `bert.embeddings`; short names (`classifier.weight`) keep their
    # module.
    return ".".join(parts[:-2] if len(parts) > 2 else parts[:1])


def parameter_groups(named_parameters: Iterable[tuple[str, torch.Tensor]], granularity: str) -> list[int]:
    """
    Sizes of the consecutive parameter groups that surgery treats separately.

    Args:
        named_parameters: `(name, tensor)` pairs, in the order in which the gradients are flattened. Under FSDP, pass
            each rank's local shards: the sizes are then those of the rank's columns, in the same groups on every rank.
        granularity: `"model"` (one group), `"tensor"` (one group per tensor) or `"layer"` (tensors grouped by layer:
            names containing `.layer.<N>.` by their prefix up to `layer.<N>`, other names by the name minus its last
            two components, e.g. `bert.embeddings.word_embeddings.weight` -> `bert.embeddings`; consecutive names
            with the same key form one group).

    Returns:
        The `numel` of each group, in order; they sum to the total number of elements.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"Unknown granularity {granularity!r}; expected one of {GRANULARITIES}.")
    named_parameters = list(named_parameters)
    sizes = [tensor.numel() for _, tensor in named_parameters]
    if granularity == "tensor" or not sizes:
        return sizes
    if granularity == "model":
        return [sum(sizes)]
    groups, previous_key = [], None
    for (name, _), size in zip(named_parameters, sizes):
        key = _group_key(name)
        if groups and key == previous_key:
            groups[-1] += size
        else:
            groups.append(size)
        previous_key = key
    return groups
