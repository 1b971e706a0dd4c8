# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""`TrainingArguments` for multi-task training."""

import os
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments
from transformers.trainer_utils import SaveStrategy

from .loss_weighting import LOSS_WEIGHTINGS
from .sampling import SCHEDULES
from .surgery import DEFAULT_GRADVAC_BETA, GRANULARITIES, METHODS, SURGERIES
from .surgery.scaling import SCALINGS


@dataclass
class MultitaskTrainingArguments(TrainingArguments):
    """
    `per_device_train_batch_size` is the batch size of each task: a round-robin step with three tasks reads three
    batches of that size.
    """

    task_schedule: str = field(
        default="round_robin", metadata={"help": f"Which task batches make up a step: one of {SCHEDULES}."}
    )
    annealing_alpha_end: float = field(
        default=0.2, metadata={"help": "`annealed` schedule: the sampling exponent of the last epoch (1.0 first)."}
    )
    gradient_surgery: str = field(
        default="none",
        metadata={"help": f"How per-task gradients of the shared parameters are combined: one of {SURGERIES}."},
    )
    surgery_granularity: str = field(
        default="model",
        metadata={"help": f"Parameter groups gradient surgery compares gradients on: one of {GRANULARITIES}."},
    )
    surgery_args: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Hyper-parameters of the --gradient_surgery method, as name=value items (e.g. `c=0.5` for "
            "cagrad); each method declares its own, with defaults (trainer/surgery/<method>.py)."
        },
    )
    gradvac_beta: float = field(
        default=DEFAULT_GRADVAC_BETA,
        metadata={
            "help": "EMA rate of GradVac's cosine targets (0.01 in the GradVac paper; 0.5 in LibMTL, torchjd): the "
            "`beta` of any method that declares one, as --surgery_args beta=..."
        },
    )
    surgery_eps: float = field(default=1e-8, metadata={"help": "Added to every denominator of gradient surgery."})
    gradient_scaling: str = field(
        default="none",
        metadata={
            "help": f"Each task's gradient row scaled before the surgery combines them: one of {SCALINGS} (`unit`: "
            "norm 1; `mean`: the mean norm; `clip`: clipped to --per_task_max_grad_norm)."
        },
    )
    per_task_max_grad_norm: float = field(
        default=1.0,
        metadata={"help": "`--gradient_scaling clip`: the norm each task's gradient is clipped to (then consider "
                  "--max_grad_norm 0, which stops clipping their sum)."},
    )  # fmt: skip
    loss_weighting: str = field(
        default="static",
        metadata={
            "help": f"Task loss weights: one of {list(LOSS_WEIGHTINGS)} (`static`: --task_weights; `uncertainty`: "
            "learned log-variances, Kendall et al. 2018; `dwa`: Dynamic Weight Average, Liu et al. 2019)."
        },
    )
    task_weights: list[str] = field(
        default_factory=list,
        metadata={"help": "Static loss weights as task=weight items, e.g. sst=1 para=2 sts=0.5 (1 for a task not "
                  "named); with `uncertainty` or `dwa`, a factor on top."},
    )  # fmt: skip
    dwa_temperature: float = field(default=2.0, metadata={"help": "`--loss_weighting dwa`: the temperature T."})
    dwa_period_steps: int = field(
        default=0,
        metadata={
            "help": "`--loss_weighting dwa`: the period whose mean losses DWA compares, in optimizer steps; 0: an "
            "epoch (the paper's). With a budget of 1-2 epochs, per-epoch DWA never changes a weight."
        },
    )
    ema_decay: float = field(
        default=0.0,
        metadata={
            "help": "Above 0: evaluate and save an exponential moving average of the weights with this decay (e.g. "
            "0.999: about the last 1,000 steps), trained on the weights themselves; 0: off."
        },
    )
    layerwise_lr_decay: float = field(
        default=1.0,
        metadata={
            "help": "Layer-wise learning-rate decay: BERT layer l of L gets learning_rate * decay ** (L + 1 - l), the "
            "embeddings the least; the pooler, PALs and heads the full rate. 1.0: one rate for all."
        },
    )
    freeze_encoder: bool = field(
        default=False, metadata={"help": "Train only the task-specific parameters (PALs and heads); BERT stays fixed."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Delete what `--output_dir` holds before training. Without it (or `--resume_from_checkpoint`), "
            "a training run refuses an output directory that is not empty."
        },
    )
    # Multi-task batches are nested per task and carry a `task` column the model's forward needs.
    remove_unused_columns: bool = field(default=False, metadata={"help": "Kept False for multi-task batches."})
    # Evaluation runs each task's rows longest first, so that large batches carry little padding.
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Evaluation batch size per device (rows)."})
    # The paper keeps the checkpoint with the best mean of the task metrics (with --load_best_model_at_end).
    metric_for_best_model: str | None = field(default="overall", metadata={"help": "Default: eval_overall."})

    def __post_init__(self):
        self._check_choices_and_ranges()
        self.surgery_hyperparameters = self._resolve_surgery_hyperparameters()
        self.task_weight_values = self._parse_task_weights()
        for name in ("per_task_max_grad_norm", "dwa_temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name} must be above 0; got {getattr(self, name)}.")
        if self.dwa_period_steps < 0:
            raise ValueError(f"--dwa_period_steps must be 0 (an epoch) or above; got {self.dwa_period_steps}.")
        if self.dwa_period_steps and self.loss_weighting != "dwa":
            raise ValueError(
                f"--dwa_period_steps is DWA's: it needs --loss_weighting dwa, not {self.loss_weighting!r}."
            )
        self._check_optimization_values()
        if not torch.accelerator.is_available():
            self.dataloader_pin_memory = False  # nothing to pin for; the DataLoader would warn at every epoch
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available():
            # Accelerate forms a CPU (gloo) process group only with use_cpu; without it each launched process would
            # silently train alone.
            self.use_cpu = True
        super().__post_init__()
        if self.load_best_model_at_end and self.save_strategy == SaveStrategy.NO:
            raise ValueError(
                "--load_best_model_at_end needs checkpoints to choose from: set --save_strategy (and --eval_strategy) "
                "to 'epoch' or 'steps', or drop it."
            )

    def _check_choices_and_ranges(self):
        for name, value, allowed in (
            ("task_schedule", self.task_schedule, SCHEDULES),
            ("gradient_surgery", self.gradient_surgery, SURGERIES),
            ("surgery_granularity", self.surgery_granularity, GRANULARITIES),
            ("gradient_scaling", self.gradient_scaling, SCALINGS),
            ("loss_weighting", self.loss_weighting, tuple(LOSS_WEIGHTINGS)),
        ):
            if value not in allowed:
                raise ValueError(f"--{name} {value!r} is not one of {allowed}.")
        if not 0.0 < self.layerwise_lr_decay <= 1.0:
            raise ValueError(f"--layerwise_lr_decay must be in (0, 1]; got {self.layerwise_lr_decay}.")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"--ema_decay must be in [0, 1); got {self.ema_decay}.")
        if not 0.0 <= self.gradvac_beta <= 1.0:
            raise ValueError(f"--gradvac_beta must be in [0, 1]; got {self.gradvac_beta}.")

    def _resolve_surgery_hyperparameters(self) -> dict:
        """The method's hyper-parameters: from `--surgery_args`, else `--gradvac_beta` (a beta), else defaults."""
        method = METHODS[self.gradient_surgery]
        given = {"beta": self.gradvac_beta} if "beta" in method.hyperparameters else {}
        for item in self.surgery_args:
            name, equals, value = item.partition("=")
            if not equals or not name:
                raise ValueError(f"--surgery_args {item!r}: expected name=value, e.g. c=0.5.")
            given[name] = value
        try:
            return method.resolve_hyperparameters(given)
        except ValueError as error:
            raise ValueError(f"--gradient_surgery {error}") from None

    def _parse_task_weights(self) -> dict[str, float]:
        weights = {}
        for item in self.task_weights:
            task, equals, value = item.partition("=")
            try:
                weights[task] = float(value) if equals and task else None
            except ValueError:
                weights[task] = None
            if weights[task] is None or not weights[task] >= 0:
                raise ValueError(f"--task_weights {item!r}: expected task=weight with a weight of 0 or above.")
        return weights

    def _check_optimization_values(self):
        """The values the Trainer would otherwise meet only once training starts, as a raw traceback or not at all."""
        if not self.learning_rate > 0:
            raise ValueError(f"--learning_rate must be above 0; got {self.learning_rate}.")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1; got {getattr(self, name)}.")
        # The Trainer reads 0 as "one step"; -1 (its default) lets --num_train_epochs decide.
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(
                f"--max_steps must be a number of optimizer steps above 0, or -1 (the default: --num_train_epochs "
                f"decides); got {self.max_steps}."
            )
        if self.max_steps == -1 and not self.num_train_epochs > 0:
            raise ValueError(f"--num_train_epochs must be above 0; got {self.num_train_epochs}.")
        for name in ("weight_decay", "warmup_steps", "max_grad_norm", "annealing_alpha_end"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"--{name} must be 0 or above; got {value}.")
