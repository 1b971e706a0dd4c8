# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
import collections
import math

import datasets
import pytest
from accelerate import skip_first_batches
from torch.utils.data import DataLoader

from trainer.sampling import MultitaskBatchSampler, MultitaskDataset


SIZES = {"sst": 50, "para": 130, "sts": 30}


def task_of(index, sizes=SIZES):
    for task, size in sizes.items():
        if index < size:
            return task, index
        index -= size
    raise IndexError


def steps(sampler, epoch=0):
    sampler.set_epoch(epoch)
    return [[task_of(i) for i in batch] for batch in sampler]


def test_round_robin_every_step_has_every_task_and_shorter_tasks_restart():
    sampler = MultitaskBatchSampler(SIZES, batch_size=8, schedule="round_robin", seed=1)
    plan = steps(sampler)
    assert len(plan) == len(sampler) == math.ceil(130 / 8)
    for batch in plan:
        assert [task for task, _ in batch] == ["sst"] * 8 + ["para"] * 8 + ["sts"] * 8
    rows = collections.defaultdict(list)
    for batch in plan:
        for task, row in batch:
            rows[task].append(row)
    assert sorted(rows["para"][:130]) == list(range(130))  # the largest task: every row once
    assert sorted(rows["sts"][:30]) == list(range(30))  # a shorter task: every row, then a fresh shuffle
    assert sorted(rows["sts"][30:60]) == list(range(30)) and rows["sts"][30:60] != rows["sts"][:30]


def test_sequential_visits_each_task_in_turn():
    sampler = MultitaskBatchSampler(SIZES, batch_size=10, schedule="sequential", seed=1)
    plan = steps(sampler)
    assert len(plan) == 5 + 13 + 3
    assert [batch[0][0] for batch in plan] == ["sst"] * 5 + ["para"] * 13 + ["sts"] * 3
    assert sorted(row for batch in plan[:5] for _, row in batch) == list(range(50))


@pytest.mark.parametrize("schedule", ["proportional", "annealed"])
def test_sampling_probabilities(schedule):
    sizes = {"a": 100, "b": 900}
    sampler = MultitaskBatchSampler(sizes, batch_size=1, schedule=schedule, seed=0, num_epochs=5)
    shares = []
    for epoch in range(5):
        sampler.set_epoch(epoch)
        plan = sampler.step_plan()
        assert len(plan) == 1000 and all(len(tasks) == 1 for tasks in plan)
        shares.append(sum(tasks == ["a"] for tasks in plan) / len(plan))
    if schedule == "proportional":
        assert all(abs(share - 0.1) < 0.03 for share in shares)
    else:  # alpha 1.0 -> 0.2: p_a = 100^a / (100^a + 900^a) goes from 0.10 to 0.39
        sampler.set_epoch(0)
        assert sampler.alpha() == 1.0
        sampler.set_epoch(4)
        assert sampler.alpha() == pytest.approx(0.2)
        expected = [100**a / (100**a + 900**a) for a in (1.0, 0.8, 0.6, 0.4, 0.2)]
        assert all(abs(s - e) < 0.04 for s, e in zip(shares, expected))
        assert shares[-1] > shares[0] + 0.2


def test_deterministic_per_seed_and_epoch():
    def plan(seed, epoch):
        return steps(MultitaskBatchSampler(SIZES, batch_size=4, schedule="proportional", seed=seed), epoch)

    assert plan(3, 0) == plan(3, 0)
    assert plan(3, 0) != plan(3, 1)
    assert plan(3, 0) != plan(4, 0)


@pytest.mark.parametrize("schedule", ["round_robin", "sequential", "proportional"])
def test_processes_split_the_single_process_batch(schedule):
    single = list(MultitaskBatchSampler(SIZES, batch_size=6, schedule=schedule, seed=2))
    shards = [
        list(MultitaskBatchSampler(SIZES, batch_size=3, schedule=schedule, seed=2, num_processes=2, process_index=p))
        for p in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == len(single)
    for whole, first, second in zip(single, *shards):
        assert sorted(whole) == sorted(first + second)
        assert {task_of(i)[0] for i in first} == {task_of(i)[0] for i in second}  # the same tasks on both


def test_resuming_mid_epoch_gives_the_remaining_batches():
    dataset = MultitaskDataset({task: datasets.Dataset.from_dict({"x": list(range(n))}) for task, n in SIZES.items()})
    sampler = MultitaskBatchSampler(dataset.task_sizes(), batch_size=4, seed=5)
    sampler.set_epoch(2)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=lambda rows: [r["x"] for r in rows])
    full = list(loader)
    assert full[7:] == list(skip_first_batches(loader, 7))


def test_multitask_dataset_maps_global_indices_to_tasks():
    dataset = MultitaskDataset(
        {"a": datasets.Dataset.from_dict({"x": [0, 1]}), "b": datasets.Dataset.from_dict({"x": [10]})}
    )
    assert len(dataset) == 3 and [dataset[i]["x"] for i in range(3)] == [0, 1, 10]
    assert dataset.task_sizes() == {"a": 2, "b": 1}


def test_invalid_schedule_and_empty_task():
    with pytest.raises(ValueError, match="Unknown task schedule 'random'"):
        MultitaskBatchSampler(SIZES, batch_size=2, schedule="random")
    with pytest.raises(ValueError, match="at least one training example"):
        MultitaskBatchSampler({"sst": 0}, batch_size=2)
