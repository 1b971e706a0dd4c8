# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
The `[K, P]` matrix `J` of task gradients (one row per task, one column per shared parameter entry): its
per-group Gramians `J_k J_k^T`, and weighted sums of its rows, computed on the gradients' device, chunk by chunk,
reading only the touched rows of a sparse word-embedding block ([`SparseRows`]).
"""

from dataclasses import dataclass

import torch


_CHUNK = 4096  # columns per chunk of the batched Gramian product
_COMBINE_CHUNK = 1 << 18  # columns per chunk of the weighted sum: a chunk of the output stays in cache


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


def group_slices(group_sizes: list[int] | None, size: int) -> list[slice]:
    """The column range of each group; `None` is one group over all `size` columns."""
    slices, start = [], 0
    for group_size in group_sizes if group_sizes is not None else [size]:
        slices.append(slice(start, start + group_size))
        start += group_size
    return slices


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # fp16/bf16 dot products over millions of entries are too coarse (and overflow): upcast to float32.
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


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


def gramians(
    grads: torch.Tensor, slices: list[slice], sparse: SparseRows | None = None, gathered: torch.Tensor | None = None
) -> torch.Tensor:
    """
    The per-group Gramians `J_k J_k^T`, `[n_groups, K, K]`, in float64 on the gradients' device (products in float32
    at least). `gathered` is `sparse.gather(grads)`, if the caller has it.
    """
    dtype = compute_dtype(grads.dtype)
    result = []
    for group in slices:
        pieces, holds_sparse = _pieces(group, sparse)
        if holds_sparse and gathered is None:
            gathered = sparse.gather(grads)
        blocks = [grads[:, piece] for piece in pieces] + ([gathered] if holds_sparse else [])
        result.append(sum(_block_gramian(block.to(dtype)) for block in blocks))
    return torch.stack(result).to(torch.float64)


def combine(
    grads: torch.Tensor,
    coefficients: torch.Tensor,
    slices: list[slice],
    sparse: SparseRows | None,
    out: torch.Tensor,
    gathered: torch.Tensor | None = None,
) -> torch.Tensor:
    """
    Writes `coefficients[k] @ J_k` for each group `k` into `out` (`coefficients`: `[n_groups, K]`, on the host).

    Groups whose coefficients are all exactly 1 (no adjustment) are summed directly, so that untouched groups are
    bit-identical to `grads.sum(0)`. With `sparse`, only its touched rows are written in its block.
    """
    dtype = compute_dtype(grads.dtype)
    for group, group_coefficients in zip(slices, coefficients.tolist()):
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


def combine_rows(grads: torch.Tensor, weights: torch.Tensor, slices: list[slice]) -> torch.Tensor:
    """The adjusted rows `[K, P]`: `weights[k] @ J_k` for each group `k` (`weights`: `[n_groups, K, K]`)."""
    dtype = compute_dtype(grads.dtype)
    device_weights = weights.to(device=grads.device, dtype=dtype)
    out = torch.empty_like(grads)
    for k, group in enumerate(slices):
        out[:, group] = device_weights[k] @ grads[:, group].to(dtype)
    return out
