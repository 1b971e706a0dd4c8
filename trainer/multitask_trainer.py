"""`MultitaskTrainer`: a `transformers.Trainer` that takes one backward per task and combines the task gradients."""

import math
import os

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from transformers import EvalPrediction, Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from .data_collator import MultitaskCollator
from .metrics import load_task_metric, task_metric_name
from .model_card import build_model_card
from .sampling import MultitaskBatchSampler, MultitaskDataset
from .surgery import Sum, build_surgery, parameter_groups


logger = logging.get_logger(__name__)

SURGERY_STATE_NAME = "gradient_surgery.pt"


class MultitaskTrainer(Trainer):
    """
    Trains [`BertPalsForMultitask`] on several tasks at once, with [`MultitaskTrainingArguments`].

    `train_dataset` and `eval_dataset` are `{task: dataset}` dicts of tokenised datasets (see `tokenize_task`).
    Each training step runs each task's batch forward and backward on its own, so the gradient of every task on the
    shared parameters lands in its own row of a `[num_tasks, num_shared_parameters]` buffer (the task graphs are
    disjoint: this costs what one backward of the summed loss costs). At the end of each accumulation window the rows
    are averaged over processes and combined by the gradient surgery (`none` = plain sum, `pcgrad`, `gradvac`);
    task-specific parameters (PALs, heads) keep their own gradient. Then the Trainer clips and steps as usual.
    """

    def __init__(self, model=None, args=None, data_collator=None, train_dataset=None, eval_dataset=None,
                 processing_class=None, **kwargs):
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
        if self.args.freeze_encoder:
            for parameter in self.model.shared_parameters():
                parameter.requires_grad_(False)
        named_shared = [(name, p) for name, p in self.model.named_shared_parameters() if p.requires_grad]
        self._shared_parameters = [p for _, p in named_shared]
        self._task_parameters = [p for task in self.tasks for p in self.model.task_parameters(task)]
        generator = torch.Generator()
        generator.manual_seed(self.args.seed)  # the same task order on every process
        self.surgery = build_surgery(
            self.args.gradient_surgery,
            num_tasks=len(self.tasks),
            group_sizes=parameter_groups(named_shared, self.args.surgery_granularity) if named_shared else None,
            beta=self.args.gradvac_beta,
            eps=self.args.surgery_eps,
            generator=generator,
            task_names=self.tasks,
        )
        self._task_grads = None  # [num_tasks, P], allocated at the first step
        self._window_tasks = set()
        self._window_loss = None
        self._task_loss_sum = None
        self._task_loss_count = None
        self._warned_partial_window = False
        self._metrics = {}

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

    def _allocate_gradient_buffers(self):
        device = self._shared_parameters[0].device if self._shared_parameters else self.args.device
        size = sum(p.numel() for p in self._shared_parameters)
        # Surgery needs each task's gradient in its own row; a plain sum accumulates every task into one.
        rows = 1 if isinstance(self.surgery, Sum) else len(self.tasks)
        self._task_grads = torch.zeros(rows, size, device=device, dtype=torch.float32)
        if rows == 1:  # every task writes into the one row, which is also the combined gradient
            self._combined_grad, self._combined_grad_views = self._task_grads[0], self._views(self._task_grads[0])
            self._task_grad_views = [self._combined_grad_views] * len(self.tasks)
        else:
            self._task_grad_views = [self._views(row) for row in self._task_grads]
            self._combined_grad = torch.zeros(size, device=device, dtype=torch.float32)
            self._combined_grad_views = self._views(self._combined_grad)
        self._task_loss_sum = torch.zeros(len(self.tasks), device=self.args.device)
        self._task_loss_count = torch.zeros(len(self.tasks), device=self.args.device)

    def _views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        views, offset = [], 0
        for parameter in self._shared_parameters:
            views.append(flat[offset : offset + parameter.numel()].view_as(parameter))
            offset += parameter.numel()
        return views

    def training_step(self, model, inputs, num_items_in_batch=None) -> torch.Tensor:
        model.train()
        if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
            self.optimizer.train()
        inputs = self._prepare_inputs(inputs)
        if "task" in inputs:  # a single task's batch
            inputs = {inputs["task"]: inputs}
        if self._task_grads is None:
            self._allocate_gradient_buffers()
        if not self._window_tasks:  # first micro-batch of an accumulation window
            self._task_grads.zero_()
            self._window_loss = torch.zeros((), device=self.args.device)

        step_loss = torch.zeros((), device=self.args.device)
        # Gradients are averaged over processes once per window, after surgery, by `_combine_gradients`.
        with self.accelerator.no_sync(model):
            for task, batch in inputs.items():
                index = self.tasks.index(task)
                # Autograd accumulates into an existing `.grad` in place: point the shared parameters at this
                # task's row, so that its backward writes its gradient there and nowhere else.
                for parameter, view in zip(self._shared_parameters, self._task_grad_views[index]):
                    parameter.grad = view
                with self.compute_loss_context_manager():
                    loss = model(**batch).loss
                self.accelerator.backward(loss / self.current_gradient_accumulation_steps)
                loss = loss.detach()
                step_loss += loss
                self._task_loss_sum[index] += loss
                self._task_loss_count[index] += 1
                self._window_tasks.add(index)
        self._window_loss += step_loss

        if self.accelerator.sync_gradients:
            self._combine_gradients()
        return step_loss / self.current_gradient_accumulation_steps

    def _combine_gradients(self):
        if not torch.isfinite(self._window_loss):
            raise FloatingPointError(
                f"Non-finite training loss at step {self.state.global_step} (tasks "
                f"{[self.tasks[i] for i in sorted(self._window_tasks)]}): the weights were not updated. Resume from "
                f"the last checkpoint in {self.args.output_dir} with a lower learning rate or without fp16."
            )
        world_size = self.accelerator.num_processes
        grads = self._task_grads
        apply_surgery = not isinstance(self.surgery, Sum) and len(self._window_tasks) == len(self.tasks)
        if not isinstance(self.surgery, Sum) and not apply_surgery and not self._warned_partial_window:
            logger.warning(
                "Gradient surgery needs every task in each accumulation window; this window had only "
                f"{[self.tasks[i] for i in sorted(self._window_tasks)]}, so its gradients are summed. Use the "
                "`round_robin` task schedule to have every task in every step."
            )
            self._warned_partial_window = True

        if apply_surgery:
            if world_size > 1:  # surgery acts on the global batch: the same task gradients on every process
                dist.all_reduce(grads)
                grads /= world_size
            # fp16: surgery compares unscaled gradients; the result is scaled back for the scaler's unscale_ and inf
            # check (an overflow stays inf, and surgery then only sums).
            scale = self.accelerator.scaler.get_scale() if self.accelerator.scaler is not None else 1.0
            if scale != 1.0:
                grads.div_(scale)
            torch.mul(self.surgery(grads), scale, out=self._combined_grad)
        else:
            if grads.shape[0] > 1:
                torch.sum(grads, dim=0, out=self._combined_grad)
            if world_size > 1:
                dist.all_reduce(self._combined_grad)
                self._combined_grad /= world_size
        for parameter, view in zip(self._shared_parameters, self._combined_grad_views):
            parameter.grad = view
        if world_size > 1:
            self._average_task_parameter_gradients(world_size)
        self._window_tasks = set()

    def _average_task_parameter_gradients(self, world_size: int):
        # Every process ran the same tasks (the sampler plans steps globally), so the same parameters have gradients.
        grads = [p.grad for p in self._task_parameters if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= world_size
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()

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
        super().log(logs, start_time)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save and not isinstance(self.surgery, Sum):
            output_dir = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            torch.save(self.surgery.state_dict(), os.path.join(output_dir, SURGERY_STATE_NAME))

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        path = os.path.join(checkpoint, SURGERY_STATE_NAME) if checkpoint is not None else None
        if path is not None and os.path.isfile(path) and not isinstance(self.surgery, Sum):
            self.surgery.load_state_dict(torch.load(path, weights_only=True))

    def create_model_card(self, base_model: str | None = None, preset: str | None = None, data_source: str = "",
                          **kwargs):
        """Writes README.md in the output dir: configuration, data and the latest dev results. `push_to_hub` sends it."""
        if not self.is_world_process_zero():
            return
        metrics = {}
        for entry in self.state.log_history:  # later evaluations override earlier ones
            metrics.update({key: value for key, value in entry.items() if key.startswith("eval_")})
        card = build_model_card(self.model, self.args, metrics, base_model=base_model or self.model.config.name_or_path,
                                preset=preset, data_source=data_source)
        card.save(os.path.join(self.args.output_dir, "README.md"))

    # ---- Evaluation on every task ----

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Evaluates every task of `{task: dataset}` and adds `{prefix}_overall`, the plain mean as in the paper."""
        eval_dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if not isinstance(eval_dataset, dict):
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        metrics, main_scores = {}, []
        for task, dataset in eval_dataset.items():
            self.compute_metrics = self._metric_function(task)
            task_metrics = super().evaluate(dataset, ignore_keys, f"{metric_key_prefix}_{task}")
            metrics.update(task_metrics)
            main_scores.append(task_metrics[f"{metric_key_prefix}_{task}_{self.metric_name(task)}"])
        self.compute_metrics = None
        metrics[f"{metric_key_prefix}_overall"] = float(np.mean(main_scores))
        self.log({f"{metric_key_prefix}_overall": metrics[f"{metric_key_prefix}_overall"]})
        return metrics

    def metric_name(self, task: str) -> str:
        return task_metric_name(self.model.config.tasks[task]["kind"])

    def _metric_function(self, task: str):
        name = self.metric_name(task)
        if name not in self._metrics:
            self._metrics[name] = load_task_metric(name)
        metric = self._metrics[name]

        def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
            return metric.compute(predictions=predictions_from_logits(prediction.predictions, name),
                                  references=prediction.label_ids)

        return compute_metrics


def predictions_from_logits(logits: np.ndarray, metric_name: str) -> np.ndarray:
    """Class ids for classification tasks, the scores themselves for the regression task."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits if metric_name == "pearson" else logits.argmax(-1)
