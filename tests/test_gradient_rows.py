# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""Tests of trainer/gradient_rows.py: each task's backward lands in its row, the combination is the sum or the
surgery's result (unscaled for it under fp16), sparse embedding rows are zeroed and combined as dense ones."""

import pytest
import torch
from torch import nn

from trainer.gradient_rows import GradientRows
from trainer.surgery import build_surgery


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embeddings = nn.Embedding(50, 4)
        self.linear = nn.Linear(4, 3)

    def forward(self, input_ids):
        return self.linear(self.embeddings(input_ids)).square().mean()


def task_gradients(model, batches) -> torch.Tensor:
    """Each task's gradient of all parameters, flat, by plain dense autograd."""
    parameters = list(model.parameters())
    return torch.stack(
        [torch.cat([g.flatten() for g in torch.autograd.grad(model(**b), parameters)]) for b in batches]
    )


def backward_tasks(rows, model, batches):
    rows.start_window()
    for index, batch in enumerate(batches):
        rows.write_task(index, batch)
        model(**batch).backward()


BATCHES = [{"input_ids": torch.tensor([[1, 2, 3]])}, {"input_ids": torch.tensor([[3, 7, 7, 9]])}]


@pytest.mark.parametrize("sparse", [True, False])
def test_each_task_lands_in_its_row_and_the_sum_is_the_gradient(sparse):
    model = Tiny()
    expected = task_gradients(model, BATCHES)
    rows = GradientRows(list(model.parameters()), 2, torch.device("cpu"), model.embeddings if sparse else None)
    assert model.embeddings.sparse == sparse
    for _ in range(2):  # the second window starts from zero again
        backward_tasks(rows, model, BATCHES)
        torch.testing.assert_close(rows.rows, expected)
        rows.combine()
        torch.testing.assert_close(rows.combined, expected.sum(0))
        storage = rows.combined.untyped_storage().data_ptr()  # the optimizer steps on the combined gradient
        assert all(p.grad.untyped_storage().data_ptr() == storage for p in model.parameters())
    if sparse:
        assert rows.sparse.rows.tolist() == [1, 2, 3, 7, 9]
    rows.restore_embeddings()
    assert not model.embeddings.sparse


def test_one_row_is_the_combined_gradient():
    model = Tiny()
    rows = GradientRows(list(model.parameters()), 1, torch.device("cpu"))
    backward_tasks(rows, model, BATCHES)
    rows.combine()
    assert rows.combined.data_ptr() == rows.rows.data_ptr() and rows.nbytes == rows.rows.nbytes
    torch.testing.assert_close(rows.combined, task_gradients(model, BATCHES).sum(0))


@pytest.mark.parametrize("sparse", [True, False])
def test_surgery_sees_the_unscaled_rows_and_the_result_is_scaled_back(sparse):
    """As under fp16: the rows hold scaled gradients; surgery acts on the unscaled ones, the result is scaled again."""
    model = Tiny()
    expected = build_surgery("pcgrad", num_tasks=2)(task_gradients(model, BATCHES))
    rows = GradientRows(list(model.parameters()), 2, torch.device("cpu"), model.embeddings if sparse else None)
    rows.start_window()
    for index, batch in enumerate(BATCHES):
        rows.write_task(index, batch)
        (model(**batch) * 1024.0).backward()
    rows.combine(build_surgery("pcgrad", num_tasks=2), grad_scale=1024.0)
    torch.testing.assert_close(rows.combined, expected * 1024.0)
