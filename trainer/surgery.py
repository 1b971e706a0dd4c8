# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""Gradient surgery for multi-task training: PCGrad (Yu et al. 2020) and GradVac (Wang et al. 2021).

Both methods take the per-task gradients of the shared parameters, stacked as the rows of a `[K, P]` matrix `J`, and
return one combined `[P]` gradient. For each task `i` and each other task `j` (in a random order), per parameter group
`k`, the gradient `g_i'[k]` (already modified) is corrected against the original `g_j[k]`:

- PCGrad: if `g_i'.g_j < 0`: `g_i' -= (g_i'.g_j / (||g_j||^2 + eps)) g_j`;
- GradVac: `phi = cos(g_i', g_j)`; if `phi < phi_hat[i, j, k]`, add the multiple of `g_j` that brings the cosine up to
  `phi_hat`; then, for every pair, adjusted or not, `phi_hat <- (1 - beta) phi_hat + beta phi`.

The result is `sum_i g_i'`. Every correction adds a multiple of an original gradient, so `g_i'[k] = sum_j W[k, i, j]
g_j[k]`: the whole procedure runs on the per-group Gramians `J_k J_k^T` (`[n_groups, K, K]`, on the host, in float64)
and is applied once on the device as `(sum_i W[k, i, :]) @ J_k`. No `[K, K, P]` intermediate is ever built.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import torch


__all__ = ["GradientSurgery", "GradVac", "PCGrad", "SparseRows", "Sum", "build_surgery", "parameter_groups"]

GRANULARITIES = ("model", "layer", "tensor")
SURGERIES = ("none", "pcgrad", "gradvac")
_CHUNK = 4096  # columns per chunk of the batched Gramian product
_COMBINE_CHUNK = 1 << 18  # columns per chunk of the weighted sum: a chunk of the output stays in cache

# `encoder.layer.3.attention...` -> `encoder.layer.3`; the first match wins so nested modules stay in their layer.
_LAYER_PATTERN = re.compile(r"(?:^|\.)layer\.\d+\.")


def _group_key(name: str) -> str:
    match = _LAYER_PATTERN.search(name)
    if match is not None:
        return name[: match.end() - 1]
    parts = name.split(".")
    # `bert.embeddings.word_embeddings.weight` -> `bert.embeddings`; short names (`classifier.weight`) keep their module.
    return ".".join(parts[:-2] if len(parts) > 2 else parts[:1])


def parameter_groups(named_parameters: Iterable[tuple[str, torch.Tensor]], granularity: str) -> list[int]:
    """
    Sizes of the consecutive parameter groups that surgery treats separately.

    Args:
        named_parameters: `(name, tensor)` pairs, in the order in which the gradients are flattened.
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


def _block_gramian(block: torch.Tensor) -> torch.Tensor:
    """`block @ block.T` for a `[K, n]` block with a large `n`.

    BLAS, cuBLAS above all, is slow on a `[K, n] @ [n, K]` product with a huge inner dimension (an H100 took 590 us
    for n = 7.3M): a batched product over chunks of `_CHUNK` columns, then a sum, takes 80 us there, is no slower on
    CPU, and accumulates more accurately. Below ~128 chunks its extra kernels cost more than they save.
    """
    num_chunks = block.shape[1] // _CHUNK
    if num_chunks < 128:
        return block @ block.T
    chunks = block[:, : num_chunks * _CHUNK].unflatten(1, (num_chunks, _CHUNK)).transpose(0, 1)  # [m, K, c], a view
    rest = block[:, num_chunks * _CHUNK :]
    return torch.bmm(chunks, chunks.transpose(1, 2)).sum(0) + rest @ rest.T


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # fp16/bf16 dot products over millions of entries are too coarse (and overflow): upcast to float32.
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


@dataclass
class SparseRows:
    """
    A `[num_rows, row_size]` matrix inside the gradient columns, from `offset`, of which only `rows` can be non-zero
    in any task's gradient: a word-embedding matrix, whose gradient has rows for the step's tokens only.

    Surgery then reads and writes those rows alone: they are the same Gramians and the same result, without the work
    on the zero rows (half of MiniLM's parameters are its word embeddings; a step touches about 2% of their rows).
    The rows of the output outside `rows` are not written: the caller keeps them at zero.
    """

    offset: int
    num_rows: int
    row_size: int
    rows: torch.Tensor  # unique row indices, on the gradients' device

    @property
    def end(self) -> int:
        return self.offset + self.num_rows * self.row_size

    def matrix(self, flat: torch.Tensor) -> torch.Tensor:
        """The `[..., num_rows, row_size]` view of this block in `flat` (`[..., P]`)."""
        return flat[..., self.offset : self.end].unflatten(-1, (self.num_rows, self.row_size))

    def gather(self, grads: torch.Tensor) -> torch.Tensor:
        """The touched rows of every task, as a `[K, len(rows) * row_size]` matrix."""
        # Row by row: `index_select` on the strided `[K, num_rows, row_size]` view is ~200x slower on the CPU.
        return torch.stack([matrix.index_select(0, self.rows).flatten() for matrix in self.matrix(grads)])


def _pieces(group: slice, sparse: SparseRows | None) -> tuple[list[slice], bool]:
    """The dense column ranges of `group` (without the sparse block) and whether the group holds the sparse block."""
    if sparse is None or sparse.end <= group.start or sparse.offset >= group.stop:
        return [group], False
    if sparse.offset < group.start or sparse.end > group.stop:
        raise ValueError(f"The sparse rows [{sparse.offset}, {sparse.end}) straddle a parameter group boundary.")
    dense = [slice(group.start, sparse.offset), slice(sparse.end, group.stop)]
    return [piece for piece in dense if piece.stop > piece.start], True


def _combine(block: torch.Tensor, coefficients: list[float], out: torch.Tensor) -> None:
    """`out = sum_i coefficients[i] * block[i]`, chunk by chunk so that each chunk of `out` is written once from cache
    (a `[P, K] @ [K]` matrix-vector product is ~2x slower on the CPU)."""
    for start in range(0, block.shape[1], _COMBINE_CHUNK):
        chunk = slice(start, start + _COMBINE_CHUNK)
        target = out[chunk]
        torch.mul(block[0, chunk], coefficients[0], out=target)
        for row, coefficient in zip(block[1:, chunk], coefficients[1:]):
            target.add_(row, alpha=coefficient)


class GradientSurgery:
    """
    Base class: combines per-task gradients `[K, P]` into one gradient `[P]`.

    Subclasses implement `_pair_step`, which corrects `g_i'` against `g_j` for all parameter groups at once.

    Args:
        num_tasks: Number of tasks `K` (rows of the gradient matrix).
        group_sizes: Sizes of consecutive parameter groups (see [`parameter_groups`]), summing to `P`. `None` means one
            group over all parameters.
        eps: Added to every denominator, so that a zero gradient gives no NaN.
        generator: CPU generator drawing the order of the other tasks (one `torch.randperm(K - 1)` per task `i` per
            step, shared by all groups). Under DDP, seed it identically on every rank. `None` creates one seeded 0.
        task_names: Names used in the keys of [`pop_stats`]; defaults to `"0"`, `"1"`, ...

    A step whose gradients hold any inf or NaN (an fp16 overflow) returns the plain sum, so that the optimizer's inf
    check still sees it, and changes nothing: no targets, statistics or random draws. It is detected on the Gramian's
    diagonal, so float32 gradients whose squared norm overflows (entries above ~1e19) are treated the same way.
    """

    def __init__(
        self,
        num_tasks: int,
        group_sizes: list[int] | None = None,
        eps: float = 1e-8,
        generator: torch.Generator | None = None,
        task_names: list[str] | None = None,
    ) -> None:
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
        # Running total of adjustments per ordered pair (i adjusted against j), summed over groups; checkpointed.
        self.total_adjustments = torch.zeros(num_tasks, num_tasks, dtype=torch.int64)
        self._reset_window()

    # ----------------------------------------------------------------------------------------------------------------
    # Public API

    def __call__(
        self, grads: torch.Tensor, sparse: SparseRows | None = None, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """
        Returns the combined gradient `sum_i g_i'`, shape `[P]`, with the dtype and device of `grads` `[K, P]`.

        `sparse` marks a block of columns where only some rows are non-zero (see [`SparseRows`]); `out` receives the
        result (with `sparse`, its block must be zero outside the touched rows, which are the only ones written).
        """
        gathered = sparse.gather(grads) if sparse is not None else None  # read once, used twice
        weights = self._step(grads, sparse, gathered)
        if out is None:
            out = torch.zeros(grads.shape[1], dtype=grads.dtype, device=grads.device)
        if weights is None:
            return torch.sum(grads, 0, out=out)
        return self._apply(grads, weights.sum(1), sparse, out, gathered)

    def adjusted(self, grads: torch.Tensor) -> torch.Tensor:
        """
        Returns the adjusted per-task gradients `g_i'` as a `[K, P]` tensor (their sum is what `__call__` returns).

        Takes one step exactly like `__call__` (draws the order, updates targets and statistics); meant for tests and
        analysis, since it materialises `K x P` values.
        """
        weights = self._step(grads)
        if weights is None:
            return grads.clone()
        return self._apply_rows(grads, weights)

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
        correction (over groups and steps). Empty when no finite step was taken.
        """
        stats = {}
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

    def _pair_step(
        self, i: int, j: int, dot: torch.Tensor, cosine: torch.Tensor, norm_i: torch.Tensor, norm_j: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Correction of `g_i'` against `g_j` for every group (all arguments are `[n_groups]` float64 tensors).

        Returns `(mask, coefficient)`: where `mask` is true, `coefficient * g_j` is added to `g_i'`.
        """
        raise NotImplementedError

    def _step(
        self, grads: torch.Tensor, sparse: SparseRows | None = None, gathered: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """Weights `W` `[n_groups, K, K]` with `g_i'[k] = W[k, i] @ J_k`, or `None` for a non-finite step."""
        self._check(grads)
        gramian = self._gramian(grads, sparse, gathered)
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

    # ----------------------------------------------------------------------------------------------------------------
    # Device side

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

    def _slices(self, grads: torch.Tensor) -> list[slice]:
        sizes = self.group_sizes if self.group_sizes is not None else [grads.shape[1]]
        slices, start = [], 0
        for size in sizes:
            slices.append(slice(start, start + size))
            start += size
        return slices

    def _gramian(
        self, grads: torch.Tensor, sparse: SparseRows | None = None, gathered: torch.Tensor | None = None
    ) -> torch.Tensor:
        """
        Per-group Gramians `J_k J_k^T`, computed on the gradients' device, returned on the host in float64.
        `gathered` is `sparse.gather(grads)`, if the caller has it.
        """
        dtype = _compute_dtype(grads.dtype)
        gramians = []
        for group in self._slices(grads):
            pieces, holds_sparse = _pieces(group, sparse)
            if holds_sparse and gathered is None:
                gathered = sparse.gather(grads)
            blocks = [grads[:, piece] for piece in pieces] + ([gathered] if holds_sparse else [])
            gramians.append(sum(_block_gramian(block.to(dtype)) for block in blocks))
        # One device -> host transfer per step.
        return torch.stack(gramians).to(device="cpu", dtype=torch.float64)

    def _apply(
        self,
        grads: torch.Tensor,
        coefficients: torch.Tensor,
        sparse: SparseRows | None,
        out: torch.Tensor,
        gathered: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Writes the combined gradient `coefficients[k] @ J_k` of each group `k` into `out` (`coefficients`:
        `[n_groups, K]`).

        Groups whose coefficients are all exactly 1 (no adjustment) are summed directly, so that untouched groups are
        bit-identical to `grads.sum(0)`.
        """
        dtype = _compute_dtype(grads.dtype)
        for group, group_coefficients in zip(self._slices(grads), coefficients.tolist()):
            untouched = all(c == 1 for c in group_coefficients)
            pieces, holds_sparse = _pieces(group, sparse)
            for piece in pieces:
                if untouched:
                    torch.sum(grads[:, piece], 0, out=out[piece])
                elif dtype == grads.dtype:
                    _combine(grads[:, piece], group_coefficients, out[piece])
                else:
                    weights = torch.tensor(group_coefficients, dtype=dtype, device=grads.device)
                    out[piece] = torch.mv(grads[:, piece].T.to(dtype), weights)
            if holds_sparse:
                rows = (gathered if gathered is not None else sparse.gather(grads)).to(dtype)
                weights = torch.tensor(group_coefficients, dtype=dtype, device=rows.device)
                combined = rows.sum(0) if untouched else weights @ rows
                sparse.matrix(out).index_copy_(0, sparse.rows, combined.view(-1, sparse.row_size).to(out.dtype))
        return out

    def _apply_rows(self, grads: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Adjusted rows `[K, P]`: `weights[k] @ J_k` for each group `k` (`weights`: `[n_groups, K, K]`)."""
        dtype = _compute_dtype(grads.dtype)
        device_weights = weights.to(device=grads.device, dtype=dtype)
        out = torch.empty_like(grads)
        for k, group in enumerate(self._slices(grads)):
            out[:, group] = device_weights[k] @ grads[:, group].to(dtype)
        return out

    def _reset_window(self) -> None:
        shape = (self.num_tasks, self.num_tasks)
        self._window_adjustments = torch.zeros(shape, dtype=torch.float64)
        self._window_cosine_sum = torch.zeros(shape, dtype=torch.float64)
        self._window_cosine_count = 0  # cosines summed per pair: steps x groups


class Sum(GradientSurgery):
    """No surgery: the plain sum of the task gradients. Draws nothing and records no statistics."""

    def __call__(self, grads: torch.Tensor, sparse: SparseRows | None = None, out: torch.Tensor | None = None):
        self._check(grads)
        return torch.sum(grads, 0, out=out)

    def adjusted(self, grads: torch.Tensor) -> torch.Tensor:
        self._check(grads)
        return grads.clone()


class PCGrad(GradientSurgery):
    """
    PCGrad (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning"): when `g_i'` conflicts with `g_j`
    (`g_i'.g_j < 0`), project `g_i'` onto the normal plane of `g_j`: `g_i' -= (g_i'.g_j / (||g_j||^2 + eps)) g_j`.
    """

    def _pair_step(self, i, j, dot, cosine, norm_i, norm_j):
        return dot < 0, -dot / (norm_j * norm_j + self.eps)


class GradVac(GradientSurgery):
    """
    GradVac (Wang et al. 2021, "Gradient Vaccine"): when `phi = cos(g_i', g_j)` is below the target `phi_hat[i, j, k]`,
    add the multiple of `g_j` that makes the cosine exactly `phi_hat`:

        g_i' += ||g_i'|| (phi_hat sqrt(1 - phi^2) - phi sqrt(1 - phi_hat^2)) / (||g_j|| sqrt(1 - phi_hat^2) + eps) g_j

    Then, for every pair (adjusted or not), `phi_hat <- (1 - beta) phi_hat + beta phi`. Targets start at 0, so the
    first step equals PCGrad (up to `eps`).

    Args:
        beta: EMA rate of the targets (0.5 in LibMTL and torchjd, 1e-2 in the GradVac paper).
        Other arguments: see [`GradientSurgery`].
    """

    def __init__(
        self,
        num_tasks: int,
        group_sizes: list[int] | None = None,
        eps: float = 1e-8,
        generator: torch.Generator | None = None,
        task_names: list[str] | None = None,
        beta: float = 0.5,
    ) -> None:
        super().__init__(num_tasks, group_sizes, eps=eps, generator=generator, task_names=task_names)
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta}.")
        self.beta = beta
        # Targets per ordered pair and group, kept in float64 on the host.
        self.phi_hat = torch.zeros(num_tasks, num_tasks, self.num_groups, dtype=torch.float64)

    def _weights(self, gramian, orders):
        # Each pair is visited once per step and compares against the target from before the step.
        self._target_sin = (1 - self.phi_hat * self.phi_hat).clamp(min=0).sqrt()
        weights, adjusted, cosines = super()._weights(gramian, orders)
        # Every pair moves its target, adjusted or not; otherwise targets could never rise above 0.
        self.phi_hat = (1 - self.beta) * self.phi_hat + self.beta * cosines
        return weights, adjusted, cosines

    def _pair_step(self, i, j, dot, cosine, norm_i, norm_j):
        target, target_sin = self.phi_hat[i, j], self._target_sin[i, j]
        sin = (1 - cosine * cosine).clamp(min=0).sqrt()
        coefficient = norm_i * (target * sin - cosine * target_sin) / (norm_j * target_sin + self.eps)
        return cosine < target, coefficient

    def state_dict(self) -> dict:
        return {**super().state_dict(), "phi_hat": self.phi_hat.clone()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        phi_hat = state["phi_hat"]
        if tuple(phi_hat.shape) != tuple(self.phi_hat.shape):
            raise ValueError(f"phi_hat has shape {tuple(phi_hat.shape)}, expected {tuple(self.phi_hat.shape)}.")
        self.phi_hat = phi_hat.to(device="cpu", dtype=torch.float64).clone()


def build_surgery(
    name: str,
    num_tasks: int,
    group_sizes: list[int] | None = None,
    beta: float = 0.5,
    eps: float = 1e-8,
    generator: torch.Generator | None = None,
    task_names: list[str] | None = None,
) -> GradientSurgery:
    """Builds the surgery called `name`: `"none"` ([`Sum`]), `"pcgrad"` ([`PCGrad`]) or `"gradvac"` ([`GradVac`])."""
    kwargs = {"group_sizes": group_sizes, "eps": eps, "generator": generator, "task_names": task_names}
    if name == "none":
        return Sum(num_tasks, **kwargs)
    if name == "pcgrad":
        return PCGrad(num_tasks, **kwargs)
    if name == "gradvac":
        return GradVac(num_tasks, beta=beta, **kwargs)
    raise ValueError(f"Unknown surgery {name!r}; expected one of {SURGERIES}.")
