# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
[`GradientRows`]: the buffers in which [`MultitaskTrainer`] collects each task's gradient of the shared parameters,
and the combined gradient the optimizer steps on.

The shared parameters' `.grad` are views into one flat row of a `[num_rows, P]` buffer: autograd (and FSDP2's
reduce-scatter) accumulates into an existing `.grad` in place, so pointing the views at task `i`'s row before its
backward puts its gradient there and nowhere else. Under FSDP2 the views are `DTensor`s over this rank's shards, and
`P` counts the local entries only. The word embeddings, when they are shared and not sharded, switch to sparse
gradients: a step touches ~2% of their rows, and zeroing and surgery skip the others ([`SparseRows`]).
"""

import torch
import torch.distributed as dist
from torch import nn

from .fsdp import like_parameter, local_tensor
from .surgery import GradientSurgery, SparseRows


class GradientRows:
    """
    One flat gradient row per task (or one row for all tasks), and the combined gradient.

    Args:
        parameters: The shared parameters, in the order of the columns (under FSDP2, the sharded ones).
        num_rows: The number of tasks, or 1: every task then writes into the one row, which is also the combined
            gradient (a plain sum needs no more).
        device: Where the rows live.
        word_embeddings: The input embeddings, if their weight is among `parameters` and unsharded: their gradients
            are then sparse while the rows are in use (see [`~GradientRows.restore_embeddings`]).

    Attributes:
        rows: `[num_rows, P]`, float32.
        combined: `[P]`, the gradient the optimizer sees after [`~GradientRows.combine`] (`rows[0]` with one row).
        sparse: The word-embedding block of the columns and the rows this window touched, or `None`.
    """

    def __init__(
        self,
        parameters: list[torch.Tensor],
        num_rows: int,
        device: torch.device,
        word_embeddings: nn.Embedding | None = None,
    ):
        self.parameters = list(parameters)
        size = sum(local_tensor(p).numel() for p in self.parameters)
        self.rows = torch.zeros(num_rows, size, device=device, dtype=torch.float32)
        if num_rows == 1:
            self.combined = self.rows[0]
            self._combined_views = self._views(self.combined)
            self._row_views = [self._combined_views]
        else:
            self._row_views = [self._views(row) for row in self.rows]
            self.combined = torch.zeros(size, device=device, dtype=torch.float32)
            self._combined_views = self._views(self.combined)
        self._embeddings, self._embeddings_were_sparse = None, False
        self.sparse = self._sparse_block(word_embeddings)
        self._window_token_ids = []

    @property
    def nbytes(self) -> int:
        """The memory of the rows and of the combined gradient (counted once when it is a row)."""
        shares_row = self.combined.data_ptr() == self.rows.data_ptr()
        return self.rows.nbytes + (0 if shares_row else self.combined.nbytes)

    def start_window(self) -> None:
        """Zeroes the rows for a new accumulation window (the word embeddings give sparse gradients again)."""
        if self._embeddings is not None:
            self._embeddings.sparse = True
        self.zero_rows()

    def zero_rows(self) -> None:
        block = self.sparse
        if block is None:
            self.rows.zero_()
            return
        # Outside `block.rows`, the rows the last window touched (none yet at first), the block is still zero.
        self.rows[:, : block.offset].zero_()
        self.rows[:, block.end :].zero_()
        block.matrix(self.rows).index_fill_(1, block.rows, 0.0)

    def write_task(self, index: int, batch: dict[str, torch.Tensor]) -> None:
        """Points the shared parameters' `.grad` at row `index` (0 with one row), for the backward of `batch`."""
        if self.sparse is not None:
            self._window_token_ids += [batch[key].reshape(-1) for key in ("input_ids", "input_ids_b") if key in batch]
        for parameter, view in zip(self.parameters, self._row_views[index if len(self._row_views) > 1 else 0]):
            parameter.grad = view

    def combine(
        self,
        surgery: GradientSurgery | None = None,
        grad_scale: float = 1.0,
        average_over_processes: bool = False,
        gramian_all_reduce=None,
    ) -> None:
        """
        Writes the combined gradient and points the shared parameters' `.grad` at it.

        Args:
            surgery: Combines the task rows; `None` sums them.
            grad_scale: fp16's loss scale, by which the rows are scaled: surgery compares the unscaled gradients,
                and the result is scaled back for the scaler's `unscale_` and inf check (an overflow stays inf, and
                surgery then only sums).
            average_over_processes: Whether the rows hold this process's gradients only (DDP): they are averaged
                over processes, before surgery (which acts on the global batch) or after the sum.
            gramian_all_reduce: Passed to `surgery` (under FSDP2, sums the Gramians of the shards over ranks).
        """
        previous_rows = self._update_touched_rows(average_over_processes) if self.sparse is not None else None
        if surgery is None:
            self._sum(average_over_processes)
        else:
            self._surgery(surgery, grad_scale, average_over_processes, gramian_all_reduce, previous_rows)
        for parameter, view in zip(self.parameters, self._combined_views):
            parameter.grad = view

    def restore_embeddings(self) -> None:
        """Gives the word embeddings back the gradients they had (`sparse` as before the rows were in use)."""
        if self._embeddings is not None:
            self._embeddings.sparse = self._embeddings_were_sparse

    def _sum(self, average_over_processes: bool) -> None:
        if self.rows.shape[0] > 1:
            torch.sum(self.rows, dim=0, out=self.combined)
        if average_over_processes:
            _average(self.combined)

    def _surgery(self, surgery, grad_scale, average_over_processes, gramian_all_reduce, previous_rows) -> None:
        if average_over_processes:  # surgery acts on the global batch: the same task gradients on every process
            _average(self.rows)
        if grad_scale != 1.0:
            self.rows.div_(grad_scale)
        if self.sparse is not None:  # surgery writes this window's rows only
            self.sparse.matrix(self.combined).index_fill_(0, previous_rows, 0.0)
        surgery(self.rows, self.sparse, out=self.combined, all_reduce=gramian_all_reduce)
        if grad_scale != 1.0:
            self.combined.mul_(grad_scale)

    def _update_touched_rows(self, all_processes: bool) -> torch.Tensor:
        """
        Sets `sparse.rows` to the word-embedding rows this window's tokens touched (on every process, when the rows
        are averaged over processes) and returns the rows of the window before.
        """
        touched = torch.zeros(self.sparse.num_rows, dtype=torch.int32, device=self.rows.device)
        for token_ids in self._window_token_ids:
            touched.index_fill_(0, token_ids.to(touched.device), 1)
        self._window_token_ids = []
        if all_processes:
            dist.all_reduce(touched)
        previous, self.sparse.rows = self.sparse.rows, touched.nonzero().squeeze(1)
        return previous

    def _sparse_block(self, embeddings: nn.Embedding | None) -> SparseRows | None:
        """
        The word-embedding matrix in the column layout, its module switched to sparse gradients: a step's backward
        then writes the rows of its tokens only (autograd adds a sparse gradient into the dense `.grad` view in
        place), and zeroing and surgery skip the other rows. The optimizer still sees a dense gradient, zero
        elsewhere, exactly as with dense gradients.
        """
        offset = 0
        for parameter in self.parameters if embeddings is not None else ():
            if parameter is embeddings.weight:
                self._embeddings, self._embeddings_were_sparse = embeddings, embeddings.sparse
                embeddings.sparse = True
                num_rows, row_size = parameter.shape
                no_rows = torch.zeros(0, dtype=torch.long, device=self.rows.device)
                return SparseRows(offset, num_rows, row_size, no_rows)
            offset += parameter.numel()
        return None

    def _views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Gradients of the shared parameters that are views into `flat` (under FSDP2, of this rank's shards)."""
        views, offset = [], 0
        for parameter in self.parameters:
            local = local_tensor(parameter)
            views.append(like_parameter(flat[offset : offset + local.numel()].view_as(local), parameter))
            offset += local.numel()
        return views


def _average(tensor: torch.Tensor) -> None:
    """Averages `tensor` over processes, in place."""
    dist.all_reduce(tensor)
    tensor /= dist.get_world_size()
