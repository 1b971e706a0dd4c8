# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""`MultitaskTrainer`: a `transformers.Trainer` that takes one backward per task and combines the task gradients."""

import contextlib
import errno
import math
import os
import pickle
import shutil

import numpy as np
import torch
import torch.distributed as dist
from safetensors import SafetensorError
from torch.distributed.fsdp import FSDPModule
from torch.utils.data import DataLoader
from transformers import EvalPrediction, Trainer, TrainerCallback, TrainerState
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput, rotate_checkpoints
from transformers.utils import logging

from .checkpoints import (
    RUN_CONFIG_NAME,
    build_run_config,
    check_checkpoint,
    checkpoint_step,
    find_checkpoints,
    last_complete_checkpoint,
    mark_checkpoint_complete,
    read_run_config,
    write_json_atomically,
)
from .data_collator import MultitaskCollator
from .fsdp import enable_fsdp_on_cpu, local_tensor, requested_fsdp_plugin, with_own_class
from .gradient_rows import GradientRows
from .loss_weighting import LOSS_WEIGHTING_STATE_NAME, LOSS_WEIGHTINGS, build_loss_weighting
from .metrics import leaderboard_score, load_task_metric
from .model_card import build_model_card, describe_hardware
from .optimization import layerwise_parameter_groups
from .sampling import MultitaskBatchSampler, MultitaskDataset
from .surgery import METHODS, build_surgery, parameter_groups
from .surgery.scaling import GradientScaling
from .weight_averaging import TRAINING_WEIGHTS_NAME, WeightAverage


logger = logging.get_logger(__name__)

SURGERY_STATE_NAME = "gradient_surgery.pt"


def required_state_files(args) -> tuple[str, ...]:
    """The files beside the Trainer's own that a checkpoint of a run with these arguments must hold to resume."""
    required = [SURGERY_STATE_NAME] if METHODS[args.gradient_surgery].has_state else []
    if LOSS_WEIGHTINGS[args.loss_weighting].has_state:
        required.append(LOSS_WEIGHTING_STATE_NAME)
    if args.ema_decay > 0:
        required.append(TRAINING_WEIGHTS_NAME)
    return tuple(required)


class MultitaskTrainer(Trainer):
    """
    Trains [`BertPalsForMultitask`] on several tasks at once, with [`MultitaskTrainingArguments`].

    `train_dataset` and `eval_dataset` are `{task: dataset}` dicts of tokenised datasets (see `tokenize_task`).
    Each training step runs each task's batch forward and backward on its own, so the gradient of every task on the
    shared parameters lands in its own row of a `[num_tasks, num_shared_parameters]` buffer (the task graphs are
    disjoint: this costs what one backward of the summed loss costs). At the end of each accumulation window the rows
    are averaged over processes and combined by the gradient surgery (`none` = plain sum, `pcgrad`, `gradvac`);
    task-specific parameters (PALs, heads) keep their own gradient. Then the Trainer clips and steps as usual.

    Under FSDP2 (`--fsdp full_shard` with an FSDP2 `--fsdp_config`, or an Accelerate FSDP config; on CPU process
    groups too) each rank keeps only its shard of every task row: each task's backward reduce-scatters its gradient
    into it, the per-group `K x K` Gramians of the shards are summed over ranks (one small all-reduce), and every rank
    combines its own shard with the same weights.

    The rows are a [`GradientRows`] (`trainer.gradient_rows`, from the first training step). While they are in use,
    the model's word embeddings give sparse gradients (`embeddings.sparse = True`: a step then zeroes and combines
    the rows of its tokens only, for the same update); `train()` gives them back the `sparse` they had when it ends.
    A caller of `training_step` outside `train()` calls `trainer.gradient_rows.restore_embeddings()` itself. Set
    `sparse_embedding_gradients = False` on the trainer before training to keep them dense throughout.
    """

    # Whether the word embeddings give sparse gradients while training (unless they are frozen or sharded by FSDP).
    sparse_embedding_gradients = True

    def __init__(
        self,
        model=None,
        args=None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        run_info: dict | None = None,
        **kwargs,
    ):
        if data_collator is None and processing_class is not None:
            data_collator = MultitaskCollator(processing_class)
        if isinstance(train_dataset, dict):
            train_dataset = MultitaskDataset(train_dataset)
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        self.tasks = self.model.config.task_names
        # e.g. {"preset": "combined", "data": {task: its source}}: stored with the run configuration
        self.run_info = dict(run_info or {})
        if self.args.freeze_encoder:
            for parameter in self.model.shared_parameters():
                parameter.requires_grad_(False)
        if self.is_fsdp_enabled and not self.accelerator.is_fsdp2:
            raise ValueError("MultitaskTrainer shards with FSDP2 only: set `version: 2` in --fsdp_config.")
        named_shared = self._named_shared_parameters()
        self._task_parameters = [p for task in self.tasks for p in self.model.task_parameters(task)]
        self.surgery = self._build_surgery(named_shared)
        self.loss_weighting = build_loss_weighting(
            self.args.loss_weighting, self.tasks, self.args.task_weight_values, self.args.dwa_temperature,
            device=self.args.device,
        )  # fmt: skip
        self._dwa_period = None
        self.weight_average = self._build_weight_average()
        self._averaging = False  # True while training: evaluations and checkpoints see the average
        self._fsdp_gather_once = self.is_fsdp_enabled and not self.accelerator.state.fsdp_plugin.reshard_after_forward
        self.gradient_rows: GradientRows | None = None  # allocated at the first step (under FSDP2, of the shards)
        self._window_tasks = set()
        self._window_loss = None
        self._task_loss_sum = None
        self._task_loss_count = None
        self._warned_partial_window = False
        self._metrics = {}
        self._evaluated = {}  # (metric_key_prefix, step of the weights) -> metrics of the default eval datasets
        self._loaded_step = None  # set when the best checkpoint is loaded at the end of training

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        if not self.is_fsdp_enabled:
            self.is_fsdp_enabled = enable_fsdp_on_cpu(self.accelerator, requested_fsdp_plugin(self.args))

    def _build_surgery(self, named_shared: list[tuple[str, torch.Tensor]]):
        generator = torch.Generator()
        generator.manual_seed(self.args.seed)  # the same task order on every process
        return build_surgery(
            self.args.gradient_surgery,
            num_tasks=len(self.tasks),
            group_sizes=parameter_groups(named_shared, self.args.surgery_granularity) if named_shared else None,
            eps=self.args.surgery_eps,
            generator=generator,
            task_names=self.tasks,
            scaling=GradientScaling(self.args.gradient_scaling, self.args.per_task_max_grad_norm),
            **self.args.surgery_hyperparameters,
        )

    def _build_weight_average(self) -> WeightAverage | None:
        if self.args.ema_decay == 0:
            return None
        if self.is_fsdp_enabled:  # each rank holds a shard of the weights, and the checkpoint a gathered copy
            raise ValueError("--ema_decay: weight averaging runs on one process or under DDP, not under FSDP.")
        trained = [(name, p) for name, p in self.model.named_parameters() if p.requires_grad]
        self.add_callback(WeightAveragingCallback(self))
        return WeightAverage(trained, self.args.ema_decay)

    def _stateful_parts(self) -> list[tuple[str, object, str]]:
        """What a checkpoint holds beside the Trainer's own files: `(file name, object, what it is)`."""
        parts = [(SURGERY_STATE_NAME, self.surgery, "gradient-surgery state")]
        parts.append((LOSS_WEIGHTING_STATE_NAME, self.loss_weighting, "loss-weighting state"))
        return [(name, part, what) for name, part, what in parts if part.has_state]

    def create_optimizer(self, model=None):
        """The Trainer's optimizer, with layer-wise learning rates when `--layerwise_lr_decay` is below 1."""
        if self.args.layerwise_lr_decay == 1.0 or self.optimizer is not None:
            return super().create_optimizer(model)
        model = self.model if model is None else model
        optimizer_class, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        groups = layerwise_parameter_groups(
            model, self.args.learning_rate, self.args.layerwise_lr_decay, self.args.weight_decay,
            self.get_decay_parameter_names(model),
        )  # fmt: skip
        self.optimizer = optimizer_class(groups, **optimizer_kwargs)
        return self.optimizer

    # ---- Data ----

    def get_train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            raise ValueError("MultitaskTrainer: training requires a train_dataset.")
        if self.args.max_steps > 0:
            num_epochs = None  # set below from the dataloader length
        else:
            num_epochs = math.ceil(self.args.num_train_epochs)
        sampler = MultitaskBatchSampler(
            self.train_dataset.task_sizes(),
            batch_size=self._train_batch_size,
            schedule=self.args.task_schedule,
            seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
            num_epochs=num_epochs or 1,
            num_processes=self.args.world_size,
            process_index=self.args.process_index,
            alpha_end=self.args.annealing_alpha_end,
        )
        if num_epochs is None:
            sampler.num_epochs = math.ceil(self.args.max_steps * self.args.gradient_accumulation_steps / len(sampler))
        dataloader = DataLoader(
            self.train_dataset,
            batch_sampler=sampler,
            collate_fn=self.data_collator.collate_step,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
            persistent_workers=self.args.dataloader_persistent_workers and self.args.dataloader_num_workers > 0,
        )
        dataloader = self.accelerator.prepare(dataloader)
        # The sampler already hands each process its share of every step: keep Accelerate from sharding it again
        # (as the Trainer does for its own rank-aware sampler).
        shard = getattr(dataloader, "batch_sampler", None)
        if shard is not sampler and getattr(shard, "batch_sampler", None) is sampler:
            shard.num_processes, shard.process_index = 1, 0
        return dataloader

    def floating_point_ops(self, inputs) -> int:
        total = 0
        for batch in [inputs] if "task" in inputs else inputs.values():
            total += super().floating_point_ops(batch)
        return total

    # ---- Training step: per-task backward, then gradient surgery ----

    def _named_shared_parameters(self) -> list[tuple[str, torch.Tensor]]:
        return [(name, p) for name, p in self.model.named_shared_parameters() if p.requires_grad]

    def _allocate_gradient_rows(self) -> GradientRows:
        named_shared = self._named_shared_parameters()
        if self.is_fsdp_enabled:
            # `fully_shard` replaced the parameters with sharded ones: the task rows hold this rank's shards, and the
            # surgery's groups are this rank's columns (the same groups on every rank; its state carries over).
            state = self.surgery.state_dict()
            self.surgery = self._build_surgery([(name, local_tensor(p)) for name, p in named_shared])
            self.surgery.load_state_dict(state)
        parameters = [p for _, p in named_shared]
        device = parameters[0].device if parameters else self.args.device
        # Surgery needs each task's gradient in its own row; a plain sum accumulates every task into one.
        num_rows = len(self.tasks) if self.surgery.needs_task_rows else 1
        # Sparse embedding gradients are not sharded by FSDP: under FSDP the word embeddings keep dense gradients.
        sparse = self.sparse_embedding_gradients and not self.is_fsdp_enabled
        rows = GradientRows(parameters, num_rows, device, self.model.get_input_embeddings() if sparse else None)
        self._task_loss_sum = torch.zeros(len(self.tasks), device=self.args.device)
        self._task_loss_count = torch.zeros(len(self.tasks), device=self.args.device)
        if self.is_fsdp_enabled:
            held = sum(local_tensor(p).numel() for p in self.model.parameters())
            total = sum(p.numel() for p in self.model.parameters())
            logger.info(
                f"Process {self.args.process_index} of {self.args.world_size}: gradient rows {num_rows} x "
                f"{rows.rows.shape[1]:,} ({rows.nbytes / 2**20:.2f} MiB with the combined gradient), parameters "
                f"{held:,} of {total:,} entries."
            )
        return rows

    def training_step(self, model, inputs, num_items_in_batch=None) -> torch.Tensor:
        model.train()
        self._loaded_step = None  # the weights move on from any loaded checkpoint
        if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
            self.optimizer.train()
        inputs = self._prepare_inputs(inputs)
        if "task" in inputs:  # a single task's batch
            inputs = {inputs["task"]: inputs}
        if not self._window_tasks:  # first micro-batch of an accumulation window
            self._start_window()
        step_loss = torch.zeros((), device=self.args.device)
        sync = self._backward_context(model)
        period = self._loss_weighting_period()
        if period != self._dwa_period:  # DWA's weights change once per period
            self.loss_weighting.start_period(period, self._sum_over_processes)
            self._dwa_period = period
        with sync:
            for task, batch in inputs.items():
                step_loss += self._task_backward(model, self.tasks.index(task), batch)
        self._window_loss += step_loss

        if self.accelerator.sync_gradients:
            self._combine_gradients()
        return step_loss / self.current_gradient_accumulation_steps

    def _start_window(self) -> None:
        if self.gradient_rows is None:
            self.gradient_rows = self._allocate_gradient_rows()
        self.gradient_rows.start_window()
        self._window_loss = torch.zeros((), device=self.args.device)

    def _backward_context(self, model):
        """What the task backwards of a micro-batch run in: how the processes' gradients meet."""
        if not self.is_fsdp_enabled:
            # Gradients are averaged over processes once per window, after surgery, by `_combine_gradients`.
            return self.accelerator.no_sync(model)
        # Every backward reduce-scatters into this rank's shard of the task's row, also inside the Trainer's
        # `no_sync` of an accumulation window: deferring would keep whole unsharded gradients.
        model.set_requires_gradient_sync(True)
        # With `reshard_after_forward: false` the parameters stay gathered from task to task: one all-gather per
        # optimizer step; `_combine_gradients` reshards them.
        model.set_reshard_after_backward(not self._fsdp_gather_once)
        return contextlib.nullcontext()

    def _task_backward(self, model, index: int, batch: dict) -> torch.Tensor:
        """One task's forward and backward, its gradient of the shared parameters into its row; returns its loss."""
        self.gradient_rows.write_task(index, batch)
        with self.compute_loss_context_manager():
            loss = model(**batch).loss
        weighted = self.loss_weighting.weighted(index, loss)
        self.accelerator.backward(weighted / self.current_gradient_accumulation_steps)
        loss = loss.detach()
        self.loss_weighting.observe(index, loss)
        self._task_loss_sum[index] += loss
        self._task_loss_count[index] += 1
        self._window_tasks.add(index)
        return loss

    def _combine_gradients(self):
        if not torch.isfinite(self._window_loss):
            raise FloatingPointError(
                f"Non-finite training loss at step {self.state.global_step} (tasks "
                f"{[self.tasks[i] for i in sorted(self._window_tasks)]}): the weights were not updated. "
                f"{self._healthy_checkpoint_advice()}"
            )
        world_size = self.accelerator.num_processes
        # Under FSDP the rows already hold this rank's shard of the gradients averaged over ranks.
        all_reduce_rows = world_size > 1 and not self.is_fsdp_enabled
        self.gradient_rows.combine(
            self.surgery if self._window_takes_surgery() else None,
            grad_scale=self._grad_scale(),
            average_over_processes=all_reduce_rows,
            # Under FSDP, the Gramians of the shards summed over ranks are the global ones: the same weights on all.
            gramian_all_reduce=dist.all_reduce if self.is_fsdp_enabled and world_size > 1 else None,
        )
        if self._fsdp_gather_once:  # the optimizer steps on the shards: the gathered parameters are stale after it
            for module in self.model.modules():
                if isinstance(module, FSDPModule):
                    module.reshard()
        if all_reduce_rows:  # FSDP's reduce-scatter averaged them already
            self._average_task_parameter_gradients()
        if world_size > 1:  # the loss weighting's parameters are the trainer's, outside DDP and FSDP
            self._average_gradients([p.grad for p in self.loss_weighting.parameters() if p.grad is not None])
        # Its own optimizer steps with the model's, at the model's current full learning rate.
        learning_rate = max(group["lr"] for group in self.optimizer.param_groups)
        self.loss_weighting.step(learning_rate, grad_scale=self._grad_scale())
        self._window_tasks = set()

    def _window_takes_surgery(self) -> bool:
        """Whether this window's task rows go through the surgery: it compares every task, so a window needs all."""
        if not self.surgery.needs_task_rows:
            return False
        if len(self._window_tasks) == len(self.tasks):
            return True
        if not self._warned_partial_window:
            logger.warning(
                "Gradient surgery needs every task in each accumulation window; this window had only "
                f"{[self.tasks[i] for i in sorted(self._window_tasks)]}, so its gradients are summed. Use the "
                "`round_robin` task schedule to have every task in every step."
            )
            self._warned_partial_window = True
        return False

    def _average_task_parameter_gradients(self):
        # Every process ran the same tasks (the sampler plans steps globally), so the same parameters have gradients.
        self._average_gradients([p.grad for p in self._task_parameters if p.grad is not None])

    def _grad_scale(self) -> float:
        """fp16's loss scale (1 without a GradScaler): the gradients are scaled by it until the optimizer steps."""
        return self.accelerator.scaler.get_scale() if self.accelerator.scaler is not None else 1.0

    def _sum_over_processes(self, values: torch.Tensor) -> None:
        """Sums a host tensor over processes, in place (through the device, for NCCL)."""
        if self.accelerator.num_processes > 1:
            values.copy_(self.accelerator.reduce(values.to(self.args.device), reduction="sum").cpu())

    def _average_gradients(self, grads: list[torch.Tensor]) -> None:
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.accelerator.num_processes
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()

    def _loss_weighting_period(self) -> int:
        """The period DWA compares losses over: the epoch, or the `--dwa_period_steps` window of optimizer steps."""
        if self.args.dwa_period_steps > 0:
            return self.state.global_step // self.args.dwa_period_steps
        return int(self.state.epoch or 0)

    # ---- Logging, checkpoints ----

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._task_loss_sum is not None:
            sums = self.accelerator.reduce(self._task_loss_sum, reduction="sum")
            counts = self.accelerator.reduce(self._task_loss_count, reduction="sum")
            for index, task in enumerate(self.tasks):
                if counts[index] > 0:
                    logs[f"loss_{task}"] = round((sums[index] / counts[index]).item(), 4)
            self._task_loss_sum.zero_()
            self._task_loss_count.zero_()
            logs.update(self.surgery.pop_stats())
            if self.args.loss_weighting != "static" or self.args.task_weights:
                logs.update({f"loss_weight/{task}": w for task, w in self.loss_weighting.current_weights().items()})
        super().log(logs, start_time)

    # ---- Runs and checkpoints: a checkpoint is complete or ignored, and is resumed only by its own run ----

    def run_config(self) -> dict:
        """What identifies this run (see `trainer.checkpoints`): preset, tasks, model options, schedule, surgery."""
        return build_run_config(
            self.model.config, self.args, preset=self.run_info.get("preset"), data=self.run_info.get("data")
        )

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, **kwargs):
        """
        As [`Trainer.train`], with safe resuming: `resume_from_checkpoint=True` takes the last *complete* checkpoint
        of `output_dir`, and a checkpoint is resumed from only if it is complete and was written by a run of this
        configuration (see [`~MultitaskTrainer.check_checkpoint`]). Writes the run configuration to `output_dir`.
        With `--ema_decay`, the model ends with the average: the best checkpoint's, or the last step's.
        """
        self._averaging = self.weight_average is not None
        try:
            output = self._train(resume_from_checkpoint, trial, **kwargs)
        finally:
            self._averaging = False
            if self.gradient_rows is not None:  # the user's model ends as it came, with its own embedding gradients
                self.gradient_rows.restore_embeddings()
        if self.weight_average is not None and self._loaded_step is None:
            self.weight_average.apply()
        return output

    def _train(self, resume_from_checkpoint, trial, **kwargs):
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
            logger.info(f"Resuming from {resume_from_checkpoint}, the last complete checkpoint.")
        elif resume_from_checkpoint is False:
            resume_from_checkpoint = None
        if resume_from_checkpoint is not None:
            resume_from_checkpoint = os.fspath(resume_from_checkpoint)
            self.check_checkpoint(resume_from_checkpoint)
            state = TrainerState.load_from_json(os.path.join(resume_from_checkpoint, TRAINER_STATE_NAME))
            if 0 < self.args.max_steps <= state.global_step:
                return self._finish_from_checkpoint(resume_from_checkpoint, state)
        if self.args.should_save:
            _, incomplete = find_checkpoints(self.args.output_dir)
            for path, problem in incomplete.items():
                logger.warning(f"Ignoring the incomplete checkpoint {path} ({problem}); replaced when this run saves.")
            os.makedirs(self.args.output_dir, exist_ok=True)
            write_json_atomically(os.path.join(self.args.output_dir, RUN_CONFIG_NAME), self.run_config())
        return super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs)

    def _finish_from_checkpoint(self, checkpoint: str, state: TrainerState) -> TrainOutput:
        """
        A checkpoint at `max_steps` (a run killed after its last save): the Trainer would train one step past
        `max_steps`; instead its weights are loaded (and the best ones, with `load_best_model_at_end`), nothing is
        trained.
        """
        logger.warning(
            f"{checkpoint} is at step {state.global_step}, --max_steps is {self.args.max_steps}: nothing is left to "
            "train; its weights are loaded."
        )
        self._load_from_checkpoint(checkpoint)
        self.state = state
        best = state.best_model_checkpoint
        if self.args.load_best_model_at_end and best is not None and os.path.isdir(best):
            self._load_best_model()
        losses = [entry["train_loss"] for entry in state.log_history if "train_loss" in entry]
        return TrainOutput(state.global_step, losses[-1] if losses else float("nan"), {})

    def check_checkpoint(self, checkpoint: str) -> None:
        """
        Raises a `ValueError` that says what is wrong unless `checkpoint` is complete (every file it listed when its
        save finished is there, in full) and its run configuration is this run's, gradient-surgery state included.
        """
        check_checkpoint(checkpoint, self.run_config(), required_files=required_state_files(self.args))

    def _save_checkpoint(self, model, trial):
        if not self._averaging:
            return self._save_checkpoint_of_weights(model, trial)
        # The checkpoint's model is the average; beside it, the weights training continues from.
        with self.weight_average.swapped_in():
            self._save_checkpoint_of_weights(model, trial)

    def _save_checkpoint_of_weights(self, model, trial):
        run_dir = self._get_output_dir(trial=trial)
        output_dir = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        self._check_finite_weights(output_dir)
        if self.args.should_save and os.path.isdir(output_dir):
            shutil.rmtree(output_dir)  # left by a killed save or by the run this one resumed: files never mix
        if self.args.world_size > 1:
            self.accelerator.wait_for_everyone()
        # Older checkpoints are deleted only once this one is complete: a kill in between must leave one to resume.
        save_total_limit, self.args.save_total_limit = self.args.save_total_limit, None
        try:
            with self._writing(output_dir):
                super()._save_checkpoint(model, trial)
                for name, part, _ in self._stateful_parts() if self.args.should_save else ():
                    torch.save(part.state_dict(), os.path.join(output_dir, name))
                if self._averaging and self.args.should_save:
                    self.weight_average.save_training_weights(output_dir)
        finally:
            self.args.save_total_limit = save_total_limit
        if self.args.world_size > 1:
            self.accelerator.wait_for_everyone()  # every process's RNG state is on disk
        if self.args.should_save:
            # The last write: it lists every file with its size, and marks the checkpoint complete.
            mark_checkpoint_complete(output_dir, self.run_config(), self.state.global_step, self._last_window_loss())
            # By step: a resumed run rewrites the checkpoints after the one it resumed from (step order = time order).
            rotate_checkpoints(run_dir, save_total_limit, self.state.best_model_checkpoint, use_mtime=False)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        # Under FSDP `state_dict` is the full one (gathered by the Trainer); the model is saved as its own class, so
        # that the remote code and `auto_map` are the model's.
        model, self.model = self.model, with_own_class(self.model)
        try:
            with self._writing(output_dir or self.args.output_dir):
                super()._save(output_dir, state_dict)
        finally:
            self.model = model

    @contextlib.contextmanager
    def _writing(self, path: str):
        """
        A save that fails for want of space says so, naming the folder: torch's own error for a full disk is
        `[enforce fail at inline_container.cc:672] unexpected pos`, safetensors' an "I/O error".
        """
        try:
            yield
        except (RuntimeError, OSError, SafetensorError) as error:
            text = str(error)
            failed_write = (
                (isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG))
                or (isinstance(error, RuntimeError) and "unexpected pos" in text)
                or (isinstance(error, SafetensorError) and "I/O error" in text)
            )
            if not failed_write:
                raise
            free = shutil.disk_usage(self.args.output_dir).free / 2**20
            complete, _ = find_checkpoints(self.args.output_dir)
            resume = (
                f"The last complete checkpoint is {complete[-1]}: make room, then resume with "
                "--resume_from_checkpoint true."
                if complete
                else "There is no complete checkpoint yet: make room, then start again (--overwrite_output_dir)."
            )
            raise OSError(
                f"Writing {path} failed ({' '.join(text.split())[:200]}); its disk has {free:.0f} MiB free: no space "
                f"left, or a file size limit? {resume}"
            ) from error

    def _check_finite_weights(self, output_dir: str) -> None:
        finite = [torch.isfinite(local_tensor(p)).all() for p in self.model.parameters()]
        all_finite = torch.stack(finite).all() if finite else torch.tensor(True)
        if self.is_fsdp_enabled:  # each rank checks its shards; every rank must stop if one shard is not finite
            all_finite = all_finite.to(torch.int32)
            dist.all_reduce(all_finite, op=dist.ReduceOp.MIN)
        if not bool(all_finite):
            names = [name for name, p in self.model.named_parameters() if not torch.isfinite(local_tensor(p)).all()]
            names = names or ["a parameter shard of another process"]
            raise FloatingPointError(
                f"After step {self.state.global_step} the weights are not finite ({names[0]}"
                f"{f' and {len(names) - 1} more' if len(names) > 1 else ''}): {output_dir} was not written. "
                f"{self._healthy_checkpoint_advice()}"
            )

    def _last_window_loss(self) -> float | None:
        loss = getattr(self, "_window_loss", None)
        if not torch.is_tensor(loss):
            return None
        return loss.item() / max(1, self.args.gradient_accumulation_steps)

    def _healthy_checkpoint_advice(self) -> str:
        """
        For a diverged run: names the last checkpoint that looks healthy. The weights of checkpoint C are judged by
        the first training loss measured with them, the loss of step C + 1 (recorded by the next checkpoint, or
        logged): a checkpoint is unhealthy when that loss is more than 10x the lowest loss of the run, or when C is
        the current step (its weights are the ones that just failed).
        """
        output_dir = self.args.output_dir
        complete, _ = find_checkpoints(output_dir)
        measured = _measured_losses(self.state.log_history, complete)
        finite = [loss for loss in measured.values() if math.isfinite(loss)]
        lowest = min(finite) if finite else None

        def loss_after(step):
            later = [s for s in measured if s > step]
            return measured[min(later)] if later else None

        def healthy(path):
            step = checkpoint_step(path)
            loss = loss_after(step)
            if step >= self.state.global_step:
                return False
            return loss is None or (math.isfinite(loss) and loss <= 10 * abs(lowest))

        def describe(path):
            loss = loss_after(checkpoint_step(path))
            after = "no loss measured after it" if loss is None else f"loss {loss:.4g} after it"
            return f"{os.path.basename(path)}: {after}"

        if not complete:
            return f"There is no complete checkpoint in {output_dir}: start again with a lower learning rate."
        listing = "; ".join(describe(path) for path in complete[-4:])
        good = [path for path in complete if healthy(path)]
        if not good:
            return (
                f"No checkpoint in {output_dir} looks healthy ({listing}; lowest loss of the run {lowest}): start "
                "again with a lower learning rate."
            )
        return (
            f"The last healthy checkpoint (the loss after it within 10x of the run's lowest) is {good[-1]} "
            f"({listing}): resume from it (`--resume_from_checkpoint {good[-1]}`) with a lower learning rate or "
            "without fp16."
        )

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        with _naming_file(os.path.join(resume_from_checkpoint, "model.safetensors"), "model weights"):
            super()._load_from_checkpoint(resume_from_checkpoint, model)
        if self.weight_average is not None:  # the checkpoint's model is its average
            self.weight_average.resume(resume_from_checkpoint)

    def _load_rng_state(self, checkpoint):
        with _naming_file(checkpoint, "random number generator state (rng_state*.pth)"):
            super()._load_rng_state(checkpoint)

    def _load_optimizer_and_scheduler(self, checkpoint):
        if checkpoint is None:
            return
        # The learning rates this run asks for (per group: layer-wise decay gives each its own), before the
        # checkpoint's optimizer and scheduler overwrite them.
        requested = [group.get("initial_lr", group["lr"]) for group in self.optimizer.param_groups]
        with _naming_file(checkpoint, "optimizer or scheduler state (optimizer.pt, scheduler.pt)"):
            super()._load_optimizer_and_scheduler(checkpoint)
        self._apply_requested_learning_rates(checkpoint, requested)
        for name, part, what in self._stateful_parts():
            path = os.path.join(checkpoint, name)
            if not os.path.isfile(path):  # `check_checkpoint` catches this first on the `train` path
                raise FileNotFoundError(f"{path} is missing: this run resumes with the {what} it saved.")
            with _naming_file(path, what):
                part.load_state_dict(torch.load(path, weights_only=True))

    def _apply_requested_learning_rates(self, checkpoint: str, requested: list[float]) -> None:
        """
        A run resumed with another `--learning_rate` trains at it: the restored schedule carries on from its step
        with the new peak rate (scaled, group by group), instead of the checkpoint's silently winning.
        """
        restored = list(self.lr_scheduler.base_lrs) if self.lr_scheduler is not None else []
        if len(restored) != len(requested) or all(math.isclose(a, b) for a, b in zip(restored, requested)):
            return
        for index, (group, old, new) in enumerate(zip(self.optimizer.param_groups, restored, requested)):
            group["lr"] = group["lr"] * new / old if old else new
            group["initial_lr"] = new
            self.lr_scheduler.base_lrs[index] = new
        self.lr_scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]  # what the Trainer logs
        logger.warning(
            f"Resuming {checkpoint} with --learning_rate {max(requested):g} instead of its {max(restored):g}: the "
            "schedule continues from the checkpoint's step at the new rate."
        )

    def create_model_card(
        self, base_model: str | None = None, preset: str | None = None, data_source: str = "", **kwargs
    ):
        """Writes README.md in the output dir: configuration, data and latest dev results; `push_to_hub` sends it."""
        if not self.is_world_process_zero():
            return
        metrics = {}
        for entry in self.state.log_history:  # later evaluations override earlier ones
            metrics.update({key: value for key, value in entry.items() if key.startswith("eval_")})
            if "train_runtime" in entry:  # the Trainer's summary of a `train()` call
                metrics.update(train_runtime=entry["train_runtime"], train_steps=entry["step"])
        if "train_runtime" in metrics:
            metrics["train_hardware"] = describe_hardware(self.args)
        card = build_model_card(
            self.model,
            self.args,
            metrics,
            base_model=base_model or self.model.config.name_or_path,
            preset=preset,
            data_source=data_source,
        )
        card.save(os.path.join(self.args.output_dir, "README.md"))

    # ---- Evaluation on every task ----

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """
        Evaluates every task of `{task: dataset}` and adds `{prefix}_overall`, the plain mean as in the paper.

        Each task's rows run longest first (see `_by_length`). The weights of one step are evaluated once: evaluating
        the default `eval_dataset` again on the same weights (after training, or after loading the best checkpoint,
        whose evaluation is on record) returns the metrics already computed.
        """
        if not self._averaging:
            return self._evaluate_weights(eval_dataset, ignore_keys, metric_key_prefix)
        with self.weight_average.swapped_in():  # in training, the average is what is evaluated
            return self._evaluate_weights(eval_dataset, ignore_keys, metric_key_prefix)

    def _evaluate_weights(self, eval_dataset, ignore_keys, metric_key_prefix: str) -> dict[str, float]:
        if eval_dataset is None and (metric_key_prefix, self._weights_step()) in self._evaluated:
            step = self._weights_step()
            logger.info(f"The weights of step {step} were evaluated already: reusing those metrics.")
            return dict(self._evaluated[(metric_key_prefix, step)])
        datasets = eval_dataset if eval_dataset is not None else self.eval_dataset
        if not isinstance(datasets, dict):
            return super().evaluate(datasets, ignore_keys, metric_key_prefix)
        metrics, main_scores = {}, []
        for task, dataset in datasets.items():
            self.compute_metrics = self._metric_function(task)
            task_metrics = super().evaluate(_by_length(dataset)[0], ignore_keys, f"{metric_key_prefix}_{task}")
            metrics.update(task_metrics)
            main_scores.append(task_metrics[f"{metric_key_prefix}_{task}_{self.metric_name(task)}"])
        self.compute_metrics = None
        metrics[f"{metric_key_prefix}_overall"] = float(np.mean(main_scores))
        metrics[f"{metric_key_prefix}_leaderboard"] = leaderboard_score(
            [(self.metric_name(task), score) for task, score in zip(datasets, main_scores)]
        )
        self.log({key: metrics[key] for key in (f"{metric_key_prefix}_overall", f"{metric_key_prefix}_leaderboard")})
        if eval_dataset is None:
            self._evaluated[(metric_key_prefix, self._weights_step())] = dict(metrics)
        return metrics

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix: str = "test"):
        """`Trainer.predict`, running the rows longest first and returning the predictions in the dataset's order."""
        dataset, order = _by_length(test_dataset)
        output = super().predict(dataset, ignore_keys, metric_key_prefix)
        if order is None:
            return output
        inverse = np.argsort(order)

        def restore(values):
            if isinstance(values, (tuple, list)):
                return type(values)(restore(v) for v in values)
            return values[inverse] if values is not None else None

        return output._replace(predictions=restore(output.predictions), label_ids=restore(output.label_ids))

    def _weights_step(self) -> int:
        """The training step whose weights the model holds: the best checkpoint's once it has been loaded."""
        return self._loaded_step if self._loaded_step is not None else self.state.global_step

    def _load_best_model(self) -> None:
        super()._load_best_model()
        self._loaded_step = self.state.best_global_step

    def metric_name(self, task: str) -> str:
        """The metric `task` is judged by, as its head says: "accuracy" or "pearson"."""
        return self.model.heads[task].metric

    def predictions(self, task: str, logits: np.ndarray | tuple) -> np.ndarray:
        """What `task`'s head predicts from its logits: class ids, or the scores of a regression head."""
        if isinstance(logits, tuple):
            logits = logits[0]
        return self.model.heads[task].predictions(torch.from_numpy(np.asarray(logits))).numpy()

    def _metric_function(self, task: str):
        name = self.metric_name(task)
        if name not in self._metrics:
            self._metrics[name] = load_task_metric(name)
        metric = self._metrics[name]

        def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
            return metric.compute(
                predictions=self.predictions(task, prediction.predictions), references=prediction.label_ids
            )

        return compute_metrics


@contextlib.contextmanager
def _naming_file(path: str, what: str):
    """Turns a library's error on reading a damaged file into a `ValueError` that names the file."""
    try:
        yield
    except (SafetensorError, RuntimeError, OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError) as error:
        if isinstance(error, FileNotFoundError) and error.filename:
            raise
        detail = " ".join(str(error).split())[:300]
        raise ValueError(f"{path}: cannot read the {what}, damaged? ({type(error).__name__}: {detail})") from error


def _measured_losses(log_history: list[dict], checkpoints: list[str]) -> dict[int, float]:
    """Step -> a training loss measured at that step: logged, or recorded by a complete checkpoint."""
    measured = {}
    for entry in log_history:
        if isinstance(entry.get("loss"), float) and "step" in entry:
            measured[entry["step"]] = entry["loss"]
    for path in checkpoints:
        saved = (read_run_config(path) or {}).get("checkpoint", {})
        if isinstance(saved.get("training_loss"), float):
            measured.setdefault(saved["step"], saved["training_loss"])
    return measured


def _by_length(dataset) -> tuple[object, np.ndarray | None]:
    """
    The rows sorted longest first (a pair by its longer sentence: both are padded to it), and the order, or the
    dataset itself with `None` if it has no token ids. Batches of similar lengths carry little padding; the metrics do
    not depend on the order of the rows.
    """
    if not hasattr(dataset, "column_names") or "input_ids" not in dataset.column_names:
        return dataset, None
    lengths = np.array([len(ids) for ids in dataset["input_ids"]])
    if "input_ids_b" in dataset.column_names:
        lengths = np.maximum(lengths, [len(ids) for ids in dataset["input_ids_b"]])
    order = np.argsort(-lengths, kind="stable")
    return dataset.select(order), order


class WeightAveragingCallback(TrainerCallback):
    """Updates the trainer's weight average after every optimizer step."""

    def __init__(self, trainer: MultitaskTrainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.weight_average.update()
