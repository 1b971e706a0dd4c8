# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""Agreement of trainer/surgery with torchjd (an independent implementation working on the whole-model Gramian).

Skipped, alone, when torchjd (the `test` extra) is not installed.

torchjd's GradVac draws `torch.randperm(K - 1)` per task i from the global RNG, like ours from its generator: seeding
both with the same seed aligns the orders for any K. torchjd's PCGrad instead draws `torch.randperm(K)` over all tasks
and skips i, so its orders differ from ours for K >= 3: there we replay the global RNG to read the orders it will use
and give them to our procedure. torchjd's PCGrad has no eps (ours adds 1e-8 to ||g_j||^2: a relative difference of
~1e-11 here).
"""

import pytest
import torch
from test_surgery import random_grads

from trainer.surgery import GradVac, PCGrad


aggregation = pytest.importorskip("torchjd.aggregation")
TORCHJD_STEPS = 5


def step_grads(num_tasks, step):
    # Alternately conflicting and agreeing, so that targets rise and fall and some pairs are left alone.
    return random_grads(num_tasks, 100 + step, size=200, conflict=0.3 if step % 2 == 0 else -0.3)


@pytest.mark.parametrize("num_tasks", [2, 3])
@pytest.mark.parametrize("beta", [0.5, 0.1])
def test_gradvac_matches_torchjd(num_tasks, beta):
    seed = 11
    ours = GradVac(num_tasks, beta=beta, generator=torch.Generator().manual_seed(seed))
    theirs = aggregation.GradVac(beta=beta)
    steps = [step_grads(num_tasks, step) for step in range(TORCHJD_STEPS)]
    adjustments = 0
    torch.manual_seed(seed)
    for grads in steps:
        torch.testing.assert_close(ours(grads), theirs(grads), rtol=1e-6, atol=1e-9)
        adjustments += sum(value for key, value in ours.pop_stats().items() if key.endswith("adjustments"))
    torch.testing.assert_close(ours.phi_hat[..., 0], theirs.gramian_weighting._phi_t, rtol=1e-6, atol=1e-9)
    assert 0 < adjustments < TORCHJD_STEPS * num_tasks * (num_tasks - 1)  # some pairs adjusted, some not


@pytest.mark.parametrize("num_tasks", [2, 3])
def test_pcgrad_matches_torchjd(num_tasks):
    ours = PCGrad(num_tasks)
    theirs = aggregation.PCGrad()
    torch.manual_seed(5)
    for step in range(TORCHJD_STEPS):
        grads = step_grads(num_tasks, step)
        if num_tasks > 2:
            rng = torch.get_rng_state()
            permutations = [torch.randperm(num_tasks).tolist() for _ in range(num_tasks)]
            torch.set_rng_state(rng)
            orders = [[j for j in permutation if j != i] for i, permutation in enumerate(permutations)]
            ours._draw_orders = lambda orders=orders: orders
        torch.testing.assert_close(ours(grads), theirs(grads), rtol=1e-6, atol=1e-9)
