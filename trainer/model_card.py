# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""The model card of a training run: configuration, data and a results table with model-index metadata."""

from pathlib import Path

import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from modeling_bert_pals.configuration_bert_pals import HEAD_OPTIONS

from .tasks import get_task


# Package data: installed with the package, beside this module.
TEMPLATE_PATH = Path(__file__).resolve().parent / "model_card_template.md"


def describe_hardware(args) -> str:
    """What a training time was measured on: `2 CPU threads` or the GPU's name, and the processes if several."""
    if args.device.type == "cuda":
        hardware = torch.cuda.get_device_name(args.device)
    else:
        threads = torch.get_num_threads()
        hardware = f"{threads} CPU thread{'s' * (threads > 1)}"
    return hardware if args.world_size == 1 else f"{args.world_size} processes, each on {hardware}"


def describe_head(model, task: str) -> str:
    """`PairClassificationHead (encoding cross, loss cross_entropy, rdrop 1)`: the head class and its options."""
    head, spec = model.heads[task], model.config.tasks[task]
    options = []
    for key, option in HEAD_OPTIONS.items():
        value = spec.get(key, option.default(spec["kind"]))
        # The loss always; another option when the task entry sets it (a number option when it is not 0). The STS
        # `head` is the head's class itself.
        if key == "loss" or (key in spec and key != "head" and not (option.is_number and value == 0)):
            options.append(f"{key} {value:g}" if option.is_number else f"{key} {value}")
    return f"{type(head).__name__} ({', '.join(options)})"


def build_model_card(
    model,
    args,
    metrics: dict[str, float],
    base_model: str | None = None,
    preset: str | None = None,
    data_source: str = "",
    repo_id: str | None = None,
) -> ModelCard:
    """
    `metrics`: evaluation results with keys like `eval_sst_accuracy`, `eval_overall`, and after training
    `train_runtime`, `train_steps` and `train_hardware` (what the time was measured on).
    """
    config = model.config
    results, eval_results = [], []
    for task in config.tasks:
        metric = model.heads[task].metric
        value = metrics.get(f"eval_{task}_{metric}")
        if value is None:
            continue
        entry = get_task(task)
        task_type, task_name = entry.pipeline_tag, entry.description or task
        results.append({"task": task_name, "metric": metric, "value": value, "head": describe_head(model, task)})
        eval_results.append(
            EvalResult(
                task_type=task_type,
                task_name=task_name,
                dataset_type=task,
                dataset_name=task_name,
                dataset_split="validation",
                metric_type=metric,
                metric_value=value,
            )
        )
    name = Path(args.output_dir).name
    card_data = ModelCardData(
        model_name=name,
        base_model=base_model if base_model and not Path(base_model).exists() else None,
        library_name="transformers",
        license="apache-2.0",
        tags=["bert-pals-multitask", "multi-task", "pals"] + ([config.model_type] if config.model_type else []),
        eval_results=eval_results or None,
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        model_name=name,
        base_model=base_model or "a BERT checkpoint",
        repo_id=repo_id or args.hub_model_id or name,
        tasks=list(config.tasks),
        preset=preset,
        use_pals=config.use_pals,
        pal_size=config.pal_size,
        pal_num_heads=config.pal_num_heads,
        pooling=config.pooling,
        gradient_surgery=args.gradient_surgery,
        surgery_hyperparameters=args.surgery_hyperparameters,
        gradient_scaling=args.gradient_scaling,
        per_task_max_grad_norm=args.per_task_max_grad_norm,
        loss_weighting=args.loss_weighting,
        task_weights=args.task_weight_values,
        surgery_granularity=args.surgery_granularity,
        task_schedule=args.task_schedule,
        lr_scheduler=str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
        warmup=args.warmup_steps,
        layerwise_lr_decay=args.layerwise_lr_decay,
        ema_decay=args.ema_decay,
        batch_size=args.per_device_train_batch_size,
        learning_rate=args.learning_rate,
        epochs=args.num_train_epochs,
        seed=args.seed,
        data_source=data_source,
        results=results,
        overall=metrics.get("eval_overall"),
        leaderboard=metrics.get("eval_leaderboard"),
        train_runtime=metrics.get("train_runtime"),
        train_steps=metrics.get("train_steps"),
        train_hardware=metrics.get("train_hardware"),
        notes=[
            f"{get_task(task).description or task}: {base_model} was pre-trained on data that include this task's, so "
            "this result is not that of a model that never saw the task."
            for task in config.tasks
            if base_model in get_task(task).seen_in_pretraining_by
        ],
    )
