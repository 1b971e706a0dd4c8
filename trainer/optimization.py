# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""Layer-wise learning-rate decay: the pre-trained layers move less the lower they are."""

import re

from torch import nn


_LAYER = re.compile(r"(?:^|\.)encoder\.layer\.(\d+)\.")


def layer_depth(name: str, num_layers: int) -> int | None:
    """
    The depth of a shared parameter: 0 for the embeddings, `i + 1` for BERT layer `i`, `num_layers + 1` above them
    (the pooler). `None` for what is not pre-trained BERT: the PALs, their projections and the heads.
    """
    match = _LAYER.search(name)
    if match is not None:
        return int(match.group(1)) + 1
    if ".embeddings." in f".{name}":
        return 0
    if ".pooler." in f".{name}":
        return num_layers + 1
    return None


def layerwise_parameter_groups(
    model: nn.Module, learning_rate: float, decay: float, weight_decay: float, decay_parameter_names: list[str]
) -> list[dict]:
    """
    Optimizer parameter groups where a shared parameter at depth `d` (see `layer_depth`) gets `learning_rate *
    decay ** (num_layers + 1 - d)` (the pooler the full rate, the embeddings the least), and task parameters (PALs,
    heads) the full rate. `weight_decay` applies to the parameters named in `decay_parameter_names`, as the Trainer
    does.
    """
    num_layers = model.config.num_hidden_layers
    groups = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        task = model.parameter_task(name) if hasattr(model, "parameter_task") else None
        depth = layer_depth(name, num_layers) if task is None else None
        scale = 1.0 if depth is None else decay ** (num_layers + 1 - depth)
        decayed = name in decay_parameter_names
        key = (scale, decayed)
        if key not in groups:
            groups[key] = {"params": [], "lr": learning_rate * scale, "weight_decay": weight_decay if decayed else 0.0}
        groups[key]["params"].append(parameter)
    return [groups[key] for key in sorted(groups, key=lambda key: (-key[0], not key[1]))]
