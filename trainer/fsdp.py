# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
FSDP2 (`torch.distributed.fsdp.fully_shard`) for [`MultitaskTrainer`]: turning it on for CPU (gloo) process groups,
and the local shards of sharded parameters.

Under FSDP2 every parameter is a `DTensor` sharded on its first dimension, and each backward reduce-scatters the
gradient: rank `r` then holds the average over ranks of the gradient on its shard (`parameter.grad.to_local()`).
"""

import os

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor
from transformers import TrainingArguments
from transformers.utils import logging


logger = logging.get_logger(__name__)


def requested_fsdp_plugin(args: TrainingArguments) -> FullyShardedDataParallelPlugin | None:
    """
    The FSDP plugin a run asks for: from `--fsdp` / `--fsdp_config` (as the Trainer builds it), else from an Accelerate
    config (`accelerate launch --config_file ...` sets `ACCELERATE_USE_FSDP` and the `FSDP_*` variables), else `None`.
    """
    if args.fsdp_plugin_args is not None:
        return FullyShardedDataParallelPlugin(**args.fsdp_plugin_args)
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return FullyShardedDataParallelPlugin()
    return None


def enable_fsdp_on_cpu(accelerator: Accelerator, plugin: FullyShardedDataParallelPlugin | None) -> bool:
    """
    Turns FSDP2 on for a CPU (gloo) process group. Returns whether it did.

    Accelerate switches to FSDP only when the processes share accelerators: with a CPU process group it drops the
    plugin and the run is silently plain DDP. `fully_shard` itself runs on a CPU mesh with gloo (reduce-scatter,
    all-gather), so the state is set as Accelerate sets it on GPUs; from then on Accelerate and the Trainer take their
    own FSDP2 paths (`fully_shard` in `prepare`, sharded optimizer, FSDP checkpoints, full state dict for saving).
    """
    state = accelerator.state
    if plugin is None or state.distributed_type != DistributedType.MULTI_CPU:
        return False
    if plugin.fsdp_version != 2:
        raise ValueError(
            "MultitaskTrainer shards with FSDP2 only: set `version: 2` in --fsdp_config (or `fsdp_version: 2` in the "
            "Accelerate config)."
        )
    if state.mixed_precision != "no":
        plugin.set_mixed_precision(state.mixed_precision)
    state.fsdp_plugin = plugin
    state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # as `AcceleratorState.__init__` does
    logger.info("FSDP2 on a CPU (gloo) process group: parameters, gradients and task rows are sharded.")
    return True


def local_tensor(parameter: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a sharded parameter (or gradient); the tensor itself when it is not sharded."""
    return parameter.to_local() if isinstance(parameter, DTensor) else parameter


def like_parameter(local: torch.Tensor, parameter: torch.Tensor) -> torch.Tensor:
    """
    `local` (this rank's shard, e.g. a view into a gradient buffer) as a gradient for `parameter`: a `DTensor` sharded
    as `parameter` is when `parameter` is one, whose local tensor shares `local`'s memory.
    """
    if not isinstance(parameter, DTensor):
        return local
    return DTensor.from_local(
        local,
        parameter.device_mesh,
        parameter.placements,
        shape=parameter.shape,
        stride=parameter.stride(),
        run_check=False,
    )


def with_own_class(module: torch.nn.Module) -> torch.nn.Module:
    """
    A `fully_shard`-ed module as an instance of its own class again: `fully_shard` gives it a class made in torch
    (`FSDPBertPalsForMultitask`), with which `save_pretrained` would ship torch's source files as the remote code. A
    shallow copy: the same submodules, parameters and config; the module itself keeps its FSDP class.
    """
    if not isinstance(module, FSDPModule):
        return module
    own_class = next(base for base in type(module).__bases__ if not issubclass(base, FSDPModule))
    plain = object.__new__(own_class)
    plain.__dict__.update(module.__dict__)
    return plain
