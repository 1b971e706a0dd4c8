# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
Task loss weights (`--loss_weighting`, `--task_weights`): how much of each task's loss is back-propagated. They act
on the losses, before any gradient surgery, so they combine with every method of `trainer/surgery/`.

- `static`: fixed weights, `--task_weights sst=1 para=2 sts=0.5` (1 for a task not named).
- `uncertainty` (Kendall, Gal & Cipolla 2018, "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene
  Geometry and Semantics"): a learned log-variance `s_i` per task, `L = sum_i exp(-s_i) L_i / 2 + s_i / 2` (as in
  LibMTL). The `s_i` are trainable parameters outside the model (so outside DDP, FSDP and any surgery), with an AdamW
  of their own that steps with the model's optimizer at its current full learning rate; they and its state are saved
  in every checkpoint and restored on resume.
- `dwa` (Liu, Johns & Davison 2019, "End-to-End Multi-Task Learning with Attention", Dynamic Weight Average): from
  the third epoch, `w_i = K exp(r_i / T) / sum_j exp(r_j / T)` with `r_i = L_i(e - 1) / L_i(e - 2)` the ratio of the
  task's mean training losses over the two previous epochs (1 before); a task whose loss falls slowly gets more.
  The epoch means (over all processes) are saved in every checkpoint. `--dwa_period_steps N` makes the period N
  optimizer steps instead of an epoch (the "epochs" above are then periods): with the 1-2 epochs of a fine-tuning
  budget, per-epoch DWA would never reach its third epoch.
"""

import torch


LOSS_WEIGHTING_STATE_NAME = "loss_weighting.pt"


class LossWeighting:
    """
    Static weights (the base class): `weighted(index, loss)` is the loss to back-propagate for task `index`.

    Args:
        tasks: The task names, in the trainer's order.
        weights: `{task: weight}`; a task not named gets 1.
    """

    # Whether `state_dict` holds what a resumed run needs (saved as `LOSS_WEIGHTING_STATE_NAME`).
    has_state = False

    def __init__(self, tasks: list[str], weights: dict[str, float] | None = None) -> None:
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(tasks))
        if unknown:
            raise ValueError(f"--task_weights: {unknown[0]!r} is not one of the tasks {tasks}.")
        for task, weight in weights.items():
            if not weight >= 0:
                raise ValueError(f"--task_weights {task}={weight}: a weight must be 0 or above.")
        self.tasks = list(tasks)
        self.weights = torch.tensor([float(weights.get(task, 1.0)) for task in tasks], dtype=torch.float64)

    def weighted(self, index: int, loss: torch.Tensor) -> torch.Tensor:
        weight = float(self.weights[index])
        return loss if weight == 1.0 else loss * weight

    def parameters(self) -> list[torch.nn.Parameter]:
        """Trainable parameters the optimizer must update (none here)."""
        return []

    def observe(self, index: int, loss: torch.Tensor) -> None:
        """Records task `index`'s (unweighted, detached) loss of one micro-batch."""

    def step(self, learning_rate: float, grad_scale: float = 1.0) -> None:
        """Updates the weighting's own parameters from their gradients (fp16: scaled by `grad_scale`), each step."""

    def start_period(self, period: int, sum_over_processes=None) -> None:
        """Called at the first step of every period: an epoch, or `--dwa_period_steps` optimizer steps
        (`sum_over_processes` sums a tensor over processes, in place)."""

    def current_weights(self) -> dict[str, float]:
        """The weight of each task now, for the log (`loss_weight/<task>`)."""
        return {task: float(weight) for task, weight in zip(self.tasks, self.weights)}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class UncertaintyWeighting(LossWeighting):
    """Learned log-variances (see the module docstring); `weights` is the static factor each task keeps on top."""

    has_state = True

    def __init__(self, tasks: list[str], weights: dict[str, float] | None = None, device=None) -> None:
        super().__init__(tasks, weights)
        self.log_vars = torch.nn.Parameter(torch.zeros(len(tasks), device=device))
        self.optimizer = torch.optim.AdamW([self.log_vars], weight_decay=0.0)

    def weighted(self, index: int, loss: torch.Tensor) -> torch.Tensor:
        log_var = self.log_vars[index]
        return super().weighted(index, loss) * torch.exp(-log_var) / 2 + log_var / 2

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.log_vars]

    def step(self, learning_rate: float, grad_scale: float = 1.0) -> None:
        grad = self.log_vars.grad
        if grad is not None and grad_scale != 1.0:
            grad.div_(grad_scale)
        if grad is not None and torch.isfinite(grad).all():  # an fp16 overflow skips the step, as the Trainer's
            for group in self.optimizer.param_groups:
                group["lr"] = learning_rate
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def current_weights(self) -> dict[str, float]:
        factors = torch.exp(-self.log_vars.detach().double().cpu()) / 2 * self.weights
        return {task: float(factor) for task, factor in zip(self.tasks, factors)}

    def state_dict(self) -> dict:
        return {"log_vars": self.log_vars.detach().cpu().clone(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        values = state["log_vars"]
        if values.shape != self.log_vars.shape:
            raise ValueError(f"log_vars has shape {tuple(values.shape)}, expected {tuple(self.log_vars.shape)}.")
        with torch.no_grad():
            self.log_vars.copy_(values)
        self.optimizer.load_state_dict(state["optimizer"])


class DynamicWeightAverage(LossWeighting):
    """DWA (see the module docstring), with temperature `temperature` (2 in the paper)."""

    has_state = True

    def __init__(self, tasks: list[str], weights: dict[str, float] | None = None, temperature: float = 2.0) -> None:
        super().__init__(tasks, weights)
        if not temperature > 0:
            raise ValueError(f"--dwa_temperature must be above 0; got {temperature}.")
        self.temperature = temperature
        self.period = None
        self.sums = torch.zeros(len(tasks), dtype=torch.float64)  # this period, this process
        self.counts = torch.zeros(len(tasks), dtype=torch.float64)
        self.history = []  # mean loss per task of each finished period (the last two are kept)
        self.dynamic = torch.ones(len(tasks), dtype=torch.float64)

    def weighted(self, index: int, loss: torch.Tensor) -> torch.Tensor:
        weight = float(self.dynamic[index] * self.weights[index])
        return loss if weight == 1.0 else loss * weight

    def observe(self, index: int, loss: torch.Tensor) -> None:
        self.sums[index] += float(loss)
        self.counts[index] += 1

    def start_period(self, period: int, sum_over_processes=None) -> None:
        if self.period is not None and period != self.period:
            totals = torch.stack([self.sums, self.counts])
            if sum_over_processes is not None:
                sum_over_processes(totals)
            self.history = (self.history + [(totals[0] / totals[1].clamp(min=1)).tolist()])[-2:]
            self.sums.zero_()
            self.counts.zero_()
            if len(self.history) == 2:
                ratios = torch.tensor(self.history[1], dtype=torch.float64) / torch.tensor(
                    self.history[0], dtype=torch.float64
                ).clamp(min=1e-12)
                self.dynamic = len(self.tasks) * torch.softmax(ratios / self.temperature, 0)
        self.period = period

    def current_weights(self) -> dict[str, float]:
        return {task: float(weight) for task, weight in zip(self.tasks, self.dynamic * self.weights)}

    def state_dict(self) -> dict:
        return {
            "period": -1 if self.period is None else int(self.period),
            "sums": self.sums.clone(),
            "counts": self.counts.clone(),
            "history": torch.tensor(self.history, dtype=torch.float64).reshape(-1, len(self.tasks)),
            "dynamic": self.dynamic.clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.period = None if state["period"] < 0 else int(state["period"])
        self.sums, self.counts = state["sums"].double().clone(), state["counts"].double().clone()
        self.history = state["history"].tolist()
        self.dynamic = state["dynamic"].double().clone()


# The `--loss_weighting` choices.
LOSS_WEIGHTINGS = {"static": LossWeighting, "uncertainty": UncertaintyWeighting, "dwa": DynamicWeightAverage}


def build_loss_weighting(
    name: str, tasks: list[str], weights: dict[str, float] | None = None, temperature: float = 2.0, device=None
) -> LossWeighting:
    """The loss weighting `name` (one of `LOSS_WEIGHTINGS`)."""
    if name == "uncertainty":
        return UncertaintyWeighting(tasks, weights, device=device)
    if name == "dwa":
        return DynamicWeightAverage(tasks, weights, temperature)
    if name != "static":
        raise ValueError(f"--loss_weighting {name!r} is not one of {list(LOSS_WEIGHTINGS)}.")
    return LossWeighting(tasks, weights)
