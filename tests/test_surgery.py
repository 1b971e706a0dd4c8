# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""Tests of trainer/surgery: properties of PCGrad / GradVac, state handling, sparse rows and sharded columns (the
agreement with torchjd is in test_surgery_torchjd.py)."""

import io

import pytest
import torch

from trainer.surgery import (
    DEFAULT_GRADVAC_BETA,
    GradVac,
    PCGrad,
    SparseRows,
    Sum,
    build_surgery,
    parameter_groups,
)
from trainer.surgery.rows import gramians
from trainer.training_args import MultitaskTrainingArguments


SEEDS = (0, 1, 2)
GROUPS = [7, 20, 13]  # P = 40, three groups


def random_grads(num_tasks, seed, size=sum(GROUPS), conflict=0.5, dtype=torch.float64):
    """Random per-task gradients; each row leans against the previous one so that conflicts are common."""
    generator = torch.Generator().manual_seed(1000 + seed)
    grads = torch.randn(num_tasks, size, generator=generator, dtype=dtype)
    for i in range(1, num_tasks):
        grads[i] -= conflict * grads[i - 1]
    return grads


def group_slices(sizes):
    start = 0
    for size in sizes:
        yield slice(start, start + size)
        start += size


def cosine(a, b):
    return float(a @ b / (a.norm() * b.norm()))


def orders_for(seed, num_tasks):
    """The orders a surgery with a generator seeded `seed` uses on its first step."""
    return PCGrad(num_tasks, generator=torch.Generator().manual_seed(seed))._draw_orders()


# ---------------------------------------------------------------------------------------------------------------------
# Properties of the procedure


@pytest.mark.parametrize("seed", SEEDS)
def test_gradvac_reaches_target_cosine(seed):
    """After GradVac corrects g_i against g_j, cos(g_i', g_j) equals the target it had before the step."""
    surgery = GradVac(2, GROUPS, generator=torch.Generator().manual_seed(seed), task_names=["a", "b"])
    targets = torch.tensor([0.3, -0.2, 0.6], dtype=torch.float64)
    state = surgery.state_dict()
    state["phi_hat"][0, 1] = targets
    state["phi_hat"][1, 0] = targets
    surgery.load_state_dict(state)

    grads = random_grads(2, seed, conflict=1.0)  # cos(g_0, g_1) ~ -0.7 < every target
    adjusted = surgery.adjusted(grads)
    for k, group in enumerate(group_slices(GROUPS)):
        assert cosine(grads[0, group], grads[1, group]) < targets[k]
        assert cosine(adjusted[0, group], grads[1, group]) == pytest.approx(float(targets[k]), abs=1e-5)
        assert cosine(adjusted[1, group], grads[0, group]) == pytest.approx(float(targets[k]), abs=1e-5)

    stats = surgery.pop_stats()
    assert stats["surgery/a-b/adjustments"] == 3.0 and stats["surgery/b-a/adjustments"] == 3.0
    expected = sum(cosine(grads[0, group], grads[1, group]) for group in group_slices(GROUPS)) / 3
    assert stats["surgery/a-b/cosine"] == pytest.approx(expected, abs=1e-9)
    assert surgery.pop_stats() == {}  # the window was reset
    assert surgery.state_dict()["total_adjustments"].tolist() == [[0, 3], [3, 0]]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("num_tasks", [2, 3])
def test_pcgrad_removes_conflict(seed, num_tasks):
    """After PCGrad, g_i' has no negative inner product with the last g_j it was projected against."""
    surgery = PCGrad(num_tasks, GROUPS, generator=torch.Generator().manual_seed(seed))
    orders = orders_for(seed, num_tasks)
    grads = random_grads(num_tasks, seed, conflict=1.0)
    adjusted = surgery.adjusted(grads)
    for group in group_slices(GROUPS):
        for i in range(num_tasks):
            last = orders[i][-1]
            scale = adjusted[i, group].norm() * grads[last, group].norm()
            # eps in the denominator leaves a residual of about eps / ||g_j||^2 times the original inner product.
            assert adjusted[i, group] @ grads[last, group] >= -1e-7 * scale


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("num_tasks", [2, 3])
def test_gradvac_with_zero_targets_equals_pcgrad(seed, num_tasks):
    grads = random_grads(num_tasks, seed)
    gradvac = GradVac(num_tasks, GROUPS, generator=torch.Generator().manual_seed(seed))
    pcgrad = PCGrad(num_tasks, GROUPS, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(gradvac(grads), pcgrad(grads), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
def test_targets_move_for_every_pair(seed):
    # Task 1 agrees with task 0 (never adjusted at step 0); task 2 conflicts with both.
    grads = random_grads(3, seed)
    grads[1] = grads[0] + 0.5 * random_grads(1, seed + 10)[0]
    grads[2] = -0.7 * grads[0] + random_grads(1, seed + 20)[0]
    surgery = GradVac(3, GROUPS, beta=0.5, generator=torch.Generator().manual_seed(seed))
    surgery(grads)
    off_diagonal = ~torch.eye(3, dtype=torch.bool)
    assert (surgery.phi_hat[off_diagonal] != 0).all()
    # Targets of the agreeing pair rise above 0 although it was not adjusted.
    assert (surgery.phi_hat[0, 1] > 0).all() and (surgery.phi_hat[1, 0] > 0).all()

    two = GradVac(2, GROUPS, beta=0.5)
    two(grads[:2])
    assert two.state_dict()["total_adjustments"].sum() == 0
    for k, group in enumerate(group_slices(GROUPS)):
        expected = 0.5 * cosine(grads[0, group], grads[1, group])
        assert float(two.phi_hat[0, 1, k]) == pytest.approx(expected, abs=1e-8)  # eps in the cosine


@pytest.mark.parametrize("cls", [PCGrad, GradVac])
@pytest.mark.parametrize("num_tasks", [2, 3])
def test_zero_gradients_give_no_nan(cls, num_tasks):
    surgery = cls(num_tasks, GROUPS)
    zero_row = random_grads(num_tasks, 0)
    zero_row[1] = 0
    zero_group = random_grads(num_tasks, 1)
    zero_group[0, 7:27] = 0  # task 0 has no gradient in the second group
    for grads in (zero_row, zero_group, torch.zeros(num_tasks, sum(GROUPS), dtype=torch.float64), zero_row):
        out = surgery(grads)
        assert torch.isfinite(out).all()
        assert torch.isfinite(surgery.adjusted(grads)).all()
    assert torch.equal(surgery(torch.zeros(num_tasks, sum(GROUPS))), torch.zeros(sum(GROUPS)))
    if cls is GradVac:
        assert torch.isfinite(surgery.phi_hat).all()
    assert all(torch.isfinite(torch.tensor(value)) for value in surgery.pop_stats().values())


@pytest.mark.parametrize("cls", [PCGrad, GradVac])
@pytest.mark.parametrize("seed", SEEDS)
def test_agreeing_tasks_are_untouched(cls, seed):
    base = random_grads(1, seed, dtype=torch.float32)[0]
    grads = torch.stack([base, 2 * base + 0.01 * random_grads(1, seed + 1, dtype=torch.float32)[0]])
    surgery = cls(2, GROUPS, generator=torch.Generator().manual_seed(seed))
    for _ in range(4):  # GradVac targets rise towards the cosine but never above it
        assert torch.equal(surgery(grads), grads.sum(0))
    assert surgery.state_dict()["total_adjustments"].sum() == 0


@pytest.mark.parametrize("cls", [PCGrad, GradVac])
@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_non_finite_step_is_plain_sum_and_leaves_no_trace(cls, bad):
    surgery = cls(3, GROUPS)
    surgery(random_grads(3, 0))
    surgery.pop_stats()
    before = surgery.state_dict()

    grads = random_grads(3, 1, dtype=torch.float16)
    grads[2, 30] = bad
    out = surgery(grads)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out, grads.sum(0), equal_nan=True, rtol=0, atol=0)
    after = surgery.state_dict()
    assert torch.equal(after["generator"], before["generator"])
    assert torch.equal(after["total_adjustments"], before["total_adjustments"])
    if cls is GradVac:
        assert torch.equal(after["phi_hat"], before["phi_hat"])
    assert surgery.pop_stats() == {}


@pytest.mark.parametrize("cls", [PCGrad, GradVac])
@pytest.mark.parametrize("num_tasks", [2, 3])
def test_groups_are_independent(cls, num_tasks):
    """Each group's result equals the procedure run on that slice alone (the order is drawn once for all groups)."""
    seed = 4
    whole = cls(num_tasks, GROUPS, generator=torch.Generator().manual_seed(seed))
    parts = [cls(num_tasks, generator=torch.Generator().manual_seed(seed)) for _ in GROUPS]
    for step in range(3):
        grads = random_grads(num_tasks, step)
        out = whole(grads)
        for part, group in zip(parts, group_slices(GROUPS)):
            torch.testing.assert_close(out[group], part(grads[:, group]), rtol=1e-10, atol=1e-12)
    if cls is GradVac:
        torch.testing.assert_close(whole.phi_hat, torch.cat([part.phi_hat for part in parts], dim=2))


@pytest.mark.parametrize("cls", [PCGrad, GradVac])
def test_state_dict_round_trip(cls):
    steps = [random_grads(3, seed) for seed in range(4)]
    reference = cls(3, GROUPS, generator=torch.Generator().manual_seed(7))
    for grads in steps[:2]:
        reference(grads)

    buffer = io.BytesIO()
    torch.save(reference.state_dict(), buffer)
    buffer.seek(0)
    restored = cls(3, GROUPS, generator=torch.Generator().manual_seed(123))
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    for grads in steps[2:]:
        assert torch.equal(restored(grads), reference(grads))
    assert torch.equal(restored.state_dict()["total_adjustments"], reference.state_dict()["total_adjustments"])

    with pytest.raises(ValueError, match="groups"):
        cls(3, [40]).load_state_dict(reference.state_dict())


def test_half_precision_gradients():
    grads = random_grads(3, 0, dtype=torch.float32)
    half = grads.to(torch.float16)
    out = GradVac(3, GROUPS)(half)
    assert out.dtype == torch.float16
    expected = GradVac(3, GROUPS)(half.to(torch.float32))
    torch.testing.assert_close(out.to(torch.float32), expected, rtol=2e-3, atol=2e-3)


def test_sum_and_factory():
    grads = random_grads(3, 0)
    surgery = build_surgery("none", 3, GROUPS)
    assert isinstance(surgery, Sum)
    assert torch.equal(surgery(grads), grads.sum(0))
    assert surgery.pop_stats() == {}
    assert isinstance(build_surgery("pcgrad", 3), PCGrad)
    gradvac = build_surgery("gradvac", 3, beta=0.1, task_names=["sst", "para", "sts"])
    assert isinstance(gradvac, GradVac) and gradvac.beta == 0.1
    gradvac(grads)
    assert "surgery/sst-para/cosine" in gradvac.pop_stats()
    with pytest.raises(ValueError, match=r"Unknown surgery 'graddrop'; expected one of \('none', "):
        build_surgery("graddrop", 3)
    with pytest.raises(ValueError, match=r"pcgrad: unknown hyper-parameter 'beta' \(it has: none\)"):
        build_surgery("pcgrad", 3, beta=0.5)
    with pytest.raises(ValueError, match=r"gradvac beta=2.0: must be in \[0, 1\]"):
        build_surgery("gradvac", 3, beta=2)


def test_input_validation():
    surgery = PCGrad(3, GROUPS)
    with pytest.raises(ValueError, match="num_tasks=3"):
        surgery(torch.zeros(2, 40))
    with pytest.raises(ValueError, match="P=41"):
        surgery(torch.zeros(3, 41))
    with pytest.raises(ValueError, match="task names"):
        PCGrad(3, task_names=["a", "b"])


# ---------------------------------------------------------------------------------------------------------------------
# parameter_groups


def test_parameter_groups_on_tiny_bert():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, vocab_size=99
    )
    named = list(transformers.BertModel(config).named_parameters())
    total = sum(tensor.numel() for _, tensor in named)

    assert parameter_groups(named, "model") == [total]
    assert parameter_groups(named, "tensor") == [tensor.numel() for _, tensor in named]

    layers = parameter_groups(named, "layer")
    assert sum(layers) == total and len(layers) == 4

    def size(prefix):
        return sum(tensor.numel() for name, tensor in named if name.startswith(prefix))

    assert layers == [size("embeddings."), size("encoder.layer.0."), size("encoder.layer.1."), size("pooler.")]

    with pytest.raises(ValueError, match="'blocks'.*'model', 'layer', 'tensor'"):
        parameter_groups(named, "blocks")


def test_parameter_groups_keys():
    def t(n):
        return torch.zeros(n)

    named = [
        ("bert.embeddings.word_embeddings.weight", t(1)),
        ("bert.embeddings.LayerNorm.bias", t(2)),
        ("bert.encoder.layer.0.attention.self.query.weight", t(4)),
        ("bert.encoder.layer.0.pals.layer.1.weight", t(8)),  # nested `layer.<N>` stays in its outer layer
        ("bert.encoder.layer.10.output.dense.bias", t(16)),
        ("bert.pooler.dense.weight", t(32)),
    ]
    assert parameter_groups(named, "layer") == [3, 12, 16, 32]
    assert parameter_groups([], "layer") == []


def test_chunked_gramian_of_large_groups():
    """Groups of several chunks use a batched product; it must equal the plain Gramian."""
    sizes = [128 * 4096 + 17, 5, 130 * 4096]
    grads = random_grads(3, 0, size=sum(sizes), dtype=torch.float32)
    gramian = gramians(grads, list(group_slices(sizes)))
    for k, group in enumerate(group_slices(sizes)):
        block = grads[:, group].double()
        torch.testing.assert_close(gramian[k], block @ block.T, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("cls", [Sum, PCGrad, GradVac])
@pytest.mark.parametrize("groups", [[7, 12 * 5, 13], [80]], ids=["layer-groups", "one-group"])
def test_sparse_rows_give_the_dense_result(cls, groups):
    """A word-embedding block of which only some rows are non-zero: reading and writing those rows alone gives the
    same Gramians, targets and combined gradient as the dense computation, and leaves the other rows of `out` alone."""
    num_tasks, offset, num_rows, row_size = 3, 7 if len(groups) == 3 else 10, 12, 5
    rows = torch.tensor([1, 4, 5, 11])
    dense_surgery = cls(num_tasks, groups, generator=torch.Generator().manual_seed(0))
    sparse_surgery = cls(num_tasks, groups, generator=torch.Generator().manual_seed(0))
    for step in range(4):
        grads = random_grads(num_tasks, step, size=sum(groups))
        block = grads[:, offset : offset + num_rows * row_size].view(num_tasks, num_rows, row_size)
        untouched = torch.ones(num_rows, dtype=torch.bool)
        untouched[rows] = False
        block[:, untouched] = 0.0
        sparse = SparseRows(offset, num_rows, row_size, rows)
        out = torch.zeros(sum(groups), dtype=grads.dtype)
        out.view(-1)[offset : offset + num_rows * row_size].view(num_rows, row_size)[untouched] = 7.0  # not written
        result = sparse_surgery(grads, sparse, out=out)
        expected = dense_surgery(grads)
        assert result.data_ptr() == out.data_ptr()
        written = torch.ones(sum(groups), dtype=torch.bool)
        written[offset : offset + num_rows * row_size].view(num_rows, row_size)[untouched] = False
        torch.testing.assert_close(result[written], expected[written], rtol=1e-12, atol=1e-12)
        assert (result[~written] == (0.0 if cls is Sum else 7.0)).all()  # `Sum` writes its whole plain sum
    if cls is GradVac:
        torch.testing.assert_close(sparse_surgery.phi_hat, dense_surgery.phi_hat, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------------
# Sharded columns (FSDP), flags, repr and defaults


@pytest.mark.parametrize("cls", [PCGrad, GradVac])
def test_sharded_columns_give_the_unsharded_result(cls):
    """Two "ranks" each hold some columns of every group (one holds none of the second group): summing their local
    Gramians through `all_reduce` gives each rank the weights of the whole matrix, and their outputs, side by side,
    are the unsharded result; the targets and statistics are the same on both."""
    cuts = [3, 20, 5]  # columns of each group on rank 0; the rest of the group is on rank 1
    columns = [[], []]
    for cut, group in zip(cuts, group_slices(GROUPS)):
        columns[0] += list(range(group.start, group.start + cut))
        columns[1] += list(range(group.start + cut, group.stop))
    local_sizes = [cuts, [size - cut for size, cut in zip(GROUPS, cuts)]]
    assert local_sizes[1][1] == 0
    whole = cls(3, GROUPS, generator=torch.Generator().manual_seed(3))
    ranks = [cls(3, sizes, generator=torch.Generator().manual_seed(3)) for sizes in local_sizes]
    for step in range(4):
        grads = random_grads(3, step, conflict=1.0)
        shards = [grads[:, index] for index in columns]
        local = [gramians(shard, list(group_slices(sizes))) for shard, sizes in zip(shards, local_sizes)]
        outputs = [
            rank(shard, all_reduce=lambda gramian, other=local[1 - r]: gramian.add_(other))
            for r, (rank, shard) in enumerate(zip(ranks, shards))
        ]
        expected = whole(grads)
        torch.testing.assert_close(outputs[0], expected[columns[0]], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(outputs[1], expected[columns[1]], rtol=1e-10, atol=1e-12)
    assert whole.state_dict()["total_adjustments"].sum() > 0
    for rank in ranks:
        assert torch.equal(rank.state_dict()["total_adjustments"], whole.state_dict()["total_adjustments"])
        if cls is GradVac:
            torch.testing.assert_close(rank.phi_hat, whole.phi_hat, rtol=1e-10, atol=1e-12)


def test_flags_and_repr():
    assert (Sum.compares_tasks, Sum.has_state) == (False, False)
    for cls in (PCGrad, GradVac):
        assert (cls.compares_tasks, cls.has_state) == (True, True)
    assert repr(GradVac(3, beta=0.01)) == "GradVac(num_tasks=3, beta=0.01, eps=1e-08, groups=1)"
    assert repr(build_surgery("pcgrad", 2, GROUPS, eps=1e-6)) == "PCGrad(num_tasks=2, eps=1e-06, groups=3)"
    assert repr(build_surgery("none", 3)) == "Sum(num_tasks=3, eps=1e-08, groups=1)"


def test_gradvac_beta_default_is_the_clis(tmp_path):
    """The library, the factory and `--gradvac_beta` share one default: the GradVac paper's 0.01."""
    assert DEFAULT_GRADVAC_BETA == 0.01
    assert GradVac(3).beta == build_surgery("gradvac", 3).beta == DEFAULT_GRADVAC_BETA
    assert MultitaskTrainingArguments(output_dir=str(tmp_path), report_to="none").gradvac_beta == DEFAULT_GRADVAC_BETA
