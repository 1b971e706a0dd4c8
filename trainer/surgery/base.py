# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
`GradientSurgery`, the base of every method: turns the per-group Gramians of the task gradients into combination
weights, one pair of tasks at a time, and keeps the state (random order, statistics) that the methods share.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .rows import SparseRows, combine, combine_rows, gramians, group_slices
from .scaling import GradientScaling


@dataclass(frozen=True)
class Hyperparameter:
    """
    A hyper-parameter a method declares: its default, its help, and the rule a value must follow (`check`, and
    `rule` saying it in words, for the error). The CLI (`--surgery_args name=value`), the run configuration a resume
    compares and the model card read these declarations.
    """

    default: Any
    help: str
    check: Callable[[Any], bool] = lambda value: True
    rule: str = ""

    def parse(self, method: str, name: str, value: Any) -> Any:
        """`value` (a command-line string, or a number) as the default's type, checked."""
        try:
            value = type(self.default)(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"{method} {name}={value!r}: expected a {type(self.default).__name__} ({self.help})."
            ) from None
        if not self.check(value):
            raise ValueError(f"{method} {name}={value!r}: must be {self.rule} ({self.help}).")
        return value


# Every method class with a `name`, by that name: defining the class (one file in this package) registers it.
METHODS: dict[str, type["GradientSurgery"]] = {}


def method_names() -> tuple[str, ...]:
    """The registered names, `none` first, then alphabetical."""
    return tuple(sorted(METHODS, key=lambda name: (name != "none", name)))


class GradientSurgery:
    """
    Base class: combines per-task gradients `[K, P]` into one gradient `[P]`.

    For each task `i` and each other task `j` (in a random order), per parameter group `k`, the gradient `g_i'[k]`
    (already modified) is corrected against the original `g_j[k]` by adding a multiple of `g_j[k]`; the result is
    `sum_i g_i'`. So `g_i'[k] = sum_j W[k, i, j] g_j[k]`: the whole procedure runs on the per-group Gramians
    `J_k J_k^T` (`[n_groups, K, K]`, on the host, in float64) and is applied once on the device as
    `(sum_i W[k, i, :]) @ J_k`. No `[K, K, P]` intermediate is ever built. Subclasses implement `_pair_step`, which
    corrects `g_i'` against `g_j` for all parameter groups at once.

    Args:
        num_tasks: Number of tasks `K` (rows of the gradient matrix).
        group_sizes: Sizes of consecutive parameter groups (see [`parameter_groups`]), summing to `P`. `None` means one
            group over all parameters.
        eps: Added to every denominator, so that a zero gradient gives no NaN.
        generator: CPU generator drawing the order of the other tasks (one `torch.randperm(K - 1)` per task `i` per
            step, shared by all groups). Under DDP or FSDP, seed it identically on every rank. `None` creates one
            seeded 0.
        task_names: Names used in the keys of [`pop_stats`]; defaults to `"0"`, `"1"`, ...

    A step whose gradients hold any inf or NaN (an fp16 overflow) returns the plain sum, so that the optimizer's inf
    check still sees it, and changes nothing: no targets, statistics or random draws. It is detected on the Gramian's
    diagonal, so float32 gradients whose squared norm overflows (entries above ~1e19) are treated the same way.
    """

    # The method's command-line name (`--gradient_surgery NAME`); a class with one is registered in `METHODS`.
    name: str | None = None
    # The method's own hyper-parameters, by name; each instance has them as attributes.
    hyperparameters: dict[str, Hyperparameter] = {}
    # Whether the method compares the tasks' gradients (pointless with one task); a plain sum does not.
    compares_tasks = True
    # Whether `state_dict` holds anything a resumed run needs (saved in every checkpoint).
    has_state = True

    def __init__(
        self,
        num_tasks: int,
        group_sizes: list[int] | None = None,
        eps: float = 1e-8,
        generator: torch.Generator | None = None,
        task_names: list[str] | None = None,
        scaling: GradientScaling | None = None,
        **hyperparameters,
    ) -> None:
        for key, value in self.resolve_hyperparameters(hyperparameters).items():
            setattr(self, key, value)
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be at least 1, got {num_tasks}.")
        if group_sizes is not None:
            group_sizes = [int(size) for size in group_sizes]
            if not group_sizes or min(group_sizes) < 0:
                raise ValueError(f"group_sizes must be a non-empty list of non-negative sizes, got {group_sizes}.")
        if eps < 0:
            raise ValueError(f"eps must be non-negative, got {eps}.")
        if task_names is None:
            task_names = [str(i) for i in range(num_tasks)]
        if len(task_names) != num_tasks:
            raise ValueError(f"Got {len(task_names)} task names for {num_tasks} tasks.")
        self.num_tasks = num_tasks
        self.group_sizes = group_sizes
        self.num_groups = 1 if group_sizes is None else len(group_sizes)
        self.eps = eps
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.task_names = list(task_names)
        # Task rows scaled before the method combines them (normalised, clipped per task); None scales nothing.
        self.scaling = scaling if scaling is not None and scaling.mode != "none" else None
        # Running total of adjustments per ordered pair (i adjusted against j), summed over groups; checkpointed.
        self.total_adjustments = torch.zeros(num_tasks, num_tasks, dtype=torch.int64)
        self._reset_window()

    @classmethod
    def resolve_hyperparameters(cls, values: dict[str, Any]) -> dict[str, Any]:
        """
        Every declared hyper-parameter, from `values` (command-line strings or numbers) or its default, checked: a
        `ValueError` names an unknown one, or a value outside its rule.
        """
        method = cls.name or cls.__name__
        unknown = sorted(set(values) - set(cls.hyperparameters))
        if unknown:
            declared = ", ".join(cls.hyperparameters) or "none"
            raise ValueError(f"{method}: unknown hyper-parameter {unknown[0]!r} (it has: {declared}).")
        return {
            key: declared.parse(method, key, values.get(key, declared.default))
            for key, declared in cls.hyperparameters.items()
        }

    @property
    def needs_task_rows(self) -> bool:
        """The trainer keeps one gradient row per task for a method that compares them or scales them."""
        return self.compares_tasks or self.scaling is not None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__ and cls.name is not None:
            if cls.name in METHODS:
                raise ValueError(f"Two gradient-surgery methods are named {cls.name!r}.")
            METHODS[cls.name] = cls

    def __repr__(self) -> str:
        fields = {"num_tasks": self.num_tasks, **self._hyperparameters(), "eps": self.eps, "groups": self.num_groups}
        return f"{type(self).__name__}({', '.join(f'{key}={value!r}' for key, value in fields.items())})"

    # ----------------------------------------------------------------------------------------------------------------
    # Public API

    def __call__(
        self,
        grads: torch.Tensor,
        sparse: SparseRows | None = None,
        out: torch.Tensor | None = None,
        all_reduce: Callable[[torch.Tensor], object] | None = None,
    ) -> torch.Tensor:
        """
        Returns the combined gradient `sum_i g_i'`, shape `[P]`, with the dtype and device of `grads` `[K, P]`.

        Args:
            grads: The task gradients, one row per task.
            sparse: A block of columns where only some rows are non-zero (see [`SparseRows`]).
            out: Receives the result (with `sparse`, its block must be zero outside the touched rows, which are the
                only ones written).
            all_reduce: Sums the per-group Gramians (`[n_groups, K, K]`, float64, on the gradients' device) in place
                over processes before the weights are computed. Under FSDP each process holds its shard of the
                columns: a Gramian is a sum over columns, so the sum of the shards' Gramians is the global one, and
                every process computes the same weights and combines its own shard.
        """
        self._check(grads)
        slices = group_slices(self.group_sizes, grads.shape[1])
        gathered = sparse.gather(grads) if sparse is not None else None  # read once, used twice
        gramian = gramians(grads, slices, sparse, gathered)
        if all_reduce is not None:
            all_reduce(gramian)
        gramian, scales = self._scaled(gramian.cpu())  # one device -> host transfer per step
        weights = self.weights(gramian)
        if out is None:
            out = torch.zeros(grads.shape[1], dtype=grads.dtype, device=grads.device)
        if weights is None:
            return torch.sum(grads, 0, out=out)
        coefficients = weights.sum(1) if scales is None else weights.sum(1) * scales
        return combine(grads, coefficients, slices, sparse, out, gathered)

    def _scaled(self, gramian: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        The Gramians of the rows as `scaling` scales them, and the scales (None: none, or a non-finite step). Records
        each task's gradient norm (over all groups, before any scaling) for the statistics.
        """
        if not torch.isfinite(gramian).all():
            return gramian, None
        self._window_norm_sum += gramian.diagonal(dim1=1, dim2=2).sum(0).clamp(min=0).sqrt()
        self._window_norm_count += 1
        if self.scaling is None:
            return gramian, None
        scales = self.scaling.scales(gramian)
        return GradientScaling.scale(gramian, scales), scales

    def weights(self, gramian: torch.Tensor) -> torch.Tensor | None:
        """
        Takes one step on the per-group Gramians `[n_groups, K, K]` (float64, host): draws the order, runs the pair
        loop, updates the targets and statistics. Returns the weights `W` `[n_groups, K, K]`, with
        `g_i'[k] = W[k, i] @ J_k`, or `None` for a non-finite step.
        """
        # Any inf/NaN in the gradients shows up on the Gramian's diagonal. Such a step (fp16 overflow) is passed
        # through as the plain sum so that the optimizer's inf check still sees it, and leaves no trace: no targets,
        # statistics or random draws are updated.
        if not torch.isfinite(gramian).all():
            return None
        weights, adjusted, cosines = self._weights(gramian, self._draw_orders())
        counts = adjusted.sum(2)
        self.total_adjustments += counts
        self._window_adjustments += counts
        self._window_cosine_sum += cosines.sum(2)
        self._window_cosine_count += cosines.shape[2]
        return weights

    def adjusted(self, grads: torch.Tensor) -> torch.Tensor:
        """
        Returns the adjusted per-task gradients `g_i'` as a `[K, P]` tensor (their sum is what `__call__` returns).

        Takes one step exactly like `__call__` (draws the order, updates targets and statistics); meant for tests and
        analysis, since it materialises `K x P` values.
        """
        self._check(grads)
        slices = group_slices(self.group_sizes, grads.shape[1])
        gramian, scales = self._scaled(gramians(grads, slices).cpu())
        weights = self.weights(gramian)
        if weights is None:
            return grads.clone()
        return combine_rows(grads, weights if scales is None else weights * scales.view(1, 1, -1), slices)

    def state_dict(self) -> dict:
        """Generator state and adjustment totals (plain tensors and ints: safe for `torch.load(weights_only=True)`)."""
        return {
            "num_tasks": self.num_tasks,
            "num_groups": self.num_groups,
            "generator": self.generator.get_state(),
            "total_adjustments": self.total_adjustments.clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state["num_tasks"] != self.num_tasks or state["num_groups"] != self.num_groups:
            raise ValueError(
                f"State is for {state['num_tasks']} tasks and {state['num_groups']} groups, "
                f"this surgery has {self.num_tasks} tasks and {self.num_groups} groups."
            )
        self.generator.set_state(state["generator"])
        self.total_adjustments = state["total_adjustments"].to(torch.int64).clone()
        self._reset_window()

    def pop_stats(self) -> dict[str, float]:
        """
        Statistics since the last call, then resets the window.

        For each ordered pair `(i, j)`: `surgery/<i>-<j>/adjustments`, the number of corrections of `g_i'` against
        `g_j` (summed over groups and steps), and `surgery/<i>-<j>/cosine`, the mean of `cos(g_i', g_j)` before the
        correction (over groups and steps); per task, `surgery/<task>/grad_norm`, the mean norm of its gradient of the
        shared parameters (before any `--gradient_scaling`). Empty when no finite step was taken.
        """
        stats = {}
        for i, name in enumerate(self.task_names if self._window_norm_count else ()):
            stats[f"surgery/{name}/grad_norm"] = float(self._window_norm_sum[i]) / self._window_norm_count
        if self._window_cosine_count > 0:
            for i, name_i in enumerate(self.task_names):
                for j, name_j in enumerate(self.task_names):
                    if i == j:
                        continue
                    prefix = f"surgery/{name_i}-{name_j}"
                    stats[f"{prefix}/adjustments"] = float(self._window_adjustments[i, j])
                    stats[f"{prefix}/cosine"] = float(self._window_cosine_sum[i, j]) / self._window_cosine_count
        self._reset_window()
        return stats

    # ----------------------------------------------------------------------------------------------------------------
    # Procedure

    def _hyperparameters(self) -> dict:
        """The method's own hyper-parameters and their values."""
        return {key: getattr(self, key) for key in self.hyperparameters}

    def _pair_step(
        self, i: int, j: int, dot: torch.Tensor, cosine: torch.Tensor, norm_i: torch.Tensor, norm_j: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Correction of `g_i'` against `g_j` for every group (all arguments are `[n_groups]` float64 tensors).

        Returns `(mask, coefficient)`: where `mask` is true, `coefficient * g_j` is added to `g_i'`.
        """
        raise NotImplementedError

    def _draw_orders(self) -> list[list[int]]:
        """For each task `i`, the other tasks in the order they are visited (one permutation per `i`)."""
        orders = []
        for i in range(self.num_tasks):
            others = [j for j in range(self.num_tasks) if j != i]
            if len(others) > 1:
                permutation = torch.randperm(len(others), generator=self.generator, device=self.generator.device)
                others = [others[p] for p in permutation.tolist()]
            orders.append(others)
        return orders

    def _weights(
        self, gramian: torch.Tensor, orders: list[list[int]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Runs the pair loop on the Gramians `[n_groups, K, K]` (float64, host), vectorised over groups.

        Returns the weights `W` `[n_groups, K, K]`, and per ordered pair and group `[K, K, n_groups]`, whether `g_i'`
        was adjusted against `g_j` and the cosine before the adjustment.
        """
        num_groups, num_tasks = gramian.shape[0], self.num_tasks
        weights = torch.eye(num_tasks, dtype=torch.float64).repeat(num_groups, 1, 1)
        adjusted = torch.zeros(num_tasks, num_tasks, num_groups, dtype=torch.bool)
        cosines = torch.zeros(num_tasks, num_tasks, num_groups, dtype=torch.float64)
        norms = gramian.diagonal(dim1=1, dim2=2).clamp(min=0).sqrt()  # [n_groups, K]
        # Adding a multiple of a zero gradient changes nothing: do not count it as an adjustment.
        nonzero = norms > 0
        for i, order in enumerate(orders):
            row = weights[:, i]  # [n_groups, K]: g_i' in the basis of the original gradients (a view)
            for j in order:
                dots = (gramian @ row.unsqueeze(2)).squeeze(2)  # g_i' . g_l for every l
                norm_i = (dots * row).sum(1).clamp(min=0).sqrt()
                norm_j = norms[:, j]
                # Rounding in the Gramian can push |cos| past 1, which would make sqrt(1 - phi_hat^2) vanish.
                cosine = (dots[:, j] / (norm_i * norm_j + self.eps)).clamp(-1.0, 1.0)
                mask, coefficient = self._pair_step(i, j, dots[:, j], cosine, norm_i, norm_j)
                mask &= nonzero[:, j]
                row[:, j] += torch.where(mask, coefficient, 0.0)
                adjusted[i, j] = mask
                cosines[i, j] = cosine
        return weights, adjusted, cosines

    def _check(self, grads: torch.Tensor) -> None:
        if grads.dim() != 2 or grads.shape[0] != self.num_tasks:
            raise ValueError(
                f"Expected per-task gradients of shape [num_tasks={self.num_tasks}, P], got {tuple(grads.shape)}."
            )
        if not grads.is_floating_point():
            raise ValueError(f"Expected floating-point gradients, got {grads.dtype}.")
        if self.group_sizes is not None and sum(self.group_sizes) != grads.shape[1]:
            raise ValueError(
                f"group_sizes sum to {sum(self.group_sizes)} but the gradients have P={grads.shape[1]} entries."
            )

    def _reset_window(self) -> None:
        shape = (self.num_tasks, self.num_tasks)
        self._window_adjustments = torch.zeros(shape, dtype=torch.float64)
        self._window_cosine_sum = torch.zeros(shape, dtype=torch.float64)
        self._window_cosine_count = 0  # cosines summed per pair: steps x groups
        self._window_norm_sum = torch.zeros(self.num_tasks, dtype=torch.float64)
        self._window_norm_count = 0
