# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""Agreement of the Gramian weightings MGDA, IMTL-G, Aligned-MTL and DualProj with torchjd 0.18's `*Weighting`s, on
the same float64 Gramian, and their full path through `build_surgery(...)(grads)`.

Skipped, alone, when torchjd (the `test` extra) is not installed; DualProj's reference also needs qpsolvers and
quadprog (ours needs neither).

Tolerances: IMTL-G and Aligned-MTL run torchjd's operations (`pinv`, `eigh`) and DualProj solves torchjd's QP
exactly (torchjd: quadprog), so they are compared at rtol = atol = 1e-6. MGDA is compared tighter, at 1e-9: torchjd
stops its Frank-Wolfe iteration at a step below `epsilon`, so its weights are only `epsilon`-accurate, but ours runs
the same iteration (same start, step, stopping rule and argmin ties) and differs from it by summation order only
(~1e-16); a difference in any decision (another vertex, one more or fewer iterations) would show up far above 1e-9.
"""

import inspect

import pytest
import torch

from trainer.surgery import METHODS, build_surgery


aggregation = pytest.importorskip("torchjd.aggregation")

METHOD_NAMES = ("mgda", "imtl_g", "aligned_mtl", "dualproj")
TOLERANCES = {"mgda": 1e-9, "imtl_g": 1e-6, "aligned_mtl": 1e-6, "dualproj": 1e-6}
SEEDS = (0, 1, 2, 3)


def torchjd_weighting(name, **hyperparameters):
    if name == "mgda":
        return aggregation.MGDAWeighting(**hyperparameters)
    if name == "imtl_g":
        return aggregation.IMTLGWeighting(**hyperparameters)
    if name == "aligned_mtl":
        return aggregation.AlignedMTLWeighting(**hyperparameters)
    pytest.importorskip("qpsolvers")
    pytest.importorskip("quadprog")
    from torchjd.linalg import QuadprogProjector

    return aggregation.DualProjWeighting(projector=QuadprogProjector(**hyperparameters))


def random_jacobian(num_tasks, seed, size=30):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(num_tasks, size, generator=generator, dtype=torch.float64)


def rank_deficient(num_tasks, seed, kind):
    jacobian = random_jacobian(num_tasks, seed)
    if kind == "identical":
        jacobian[1] = jacobian[0]
    elif kind == "collinear":
        jacobian[1] = 2.5 * jacobian[0]
        if num_tasks > 2:
            jacobian[2] = -0.5 * jacobian[0]
    elif kind == "zero_row":
        jacobian[-1] = 0.0
    elif kind == "low_rank":  # K rows in a 2-dimensional span
        jacobian = torch.randn(num_tasks, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        jacobian = jacobian @ random_jacobian(2, seed + 100)
    return jacobian


def badly_scaled(num_tasks, seed):
    """Row norms spanning 1e-4 .. 1e4, in a random order."""
    generator = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-4, 4, num_tasks, dtype=torch.float64)[torch.randperm(num_tasks, generator=generator)]
    jacobian = random_jacobian(num_tasks, seed)
    return jacobian / jacobian.norm(dim=1, keepdim=True) * scales.unsqueeze(1)


def assert_matches(name, gramian, **hyperparameters):
    ours = build_surgery(name, gramian.shape[0], **hyperparameters).task_weights(gramian, 0)
    theirs = torchjd_weighting(name, **hyperparameters)(gramian)
    assert ours.dtype == torch.float64 and ours.shape == (gramian.shape[0],)
    assert torch.isfinite(ours).all()
    tolerance = TOLERANCES[name]
    torch.testing.assert_close(ours, theirs.to(torch.float64), rtol=tolerance, atol=tolerance)
    return ours


# ---------------------------------------------------------------------------------------------------------------------
# Declarations


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_registered_without_state(name):
    method = METHODS[name]
    assert method.name == name and method.has_state is False
    surgery = build_surgery(name, 3)
    assert surgery.state_dict().keys() == build_surgery("none", 3).state_dict().keys()


def test_hyperparameters_are_torchjds():
    from torchjd.linalg import QuadprogProjector

    def defaults(function, skip=()):
        parameters = inspect.signature(function).parameters.values()
        return {p.name: p.default for p in parameters if p.name not in ("self", *skip)}

    def declared(name):
        return {key: value.default for key, value in METHODS[name].hyperparameters.items()}

    assert declared("mgda") == defaults(aggregation.MGDAWeighting.__init__)
    assert declared("imtl_g") == defaults(aggregation.IMTLGWeighting.__init__) == {}
    # pref_vector (a vector) is not supported: only its default, the mean.
    assert declared("aligned_mtl") == defaults(aggregation.AlignedMTLWeighting.__init__, skip=("pref_vector",))
    assert set(inspect.signature(aggregation.DualProjWeighting.__init__).parameters) == {
        "self",
        "pref_vector",
        "projector",
    }
    assert declared("dualproj") == defaults(QuadprogProjector.__init__)


@pytest.mark.parametrize(
    "name, hyperparameters",
    [
        ("mgda", {"epsilon": 0.0}),
        ("mgda", {"max_iters": 0}),
        ("aligned_mtl", {"scale_mode": "max"}),
        ("dualproj", {"norm_eps": -1.0}),
        ("dualproj", {"reg_eps": 0.0}),
        ("dualproj", {"pref_vector": "1,2"}),
    ],
)
def test_invalid_hyperparameters(name, hyperparameters):
    with pytest.raises(ValueError, match=name):
        build_surgery(name, 3, **hyperparameters)


# ---------------------------------------------------------------------------------------------------------------------
# Weights against torchjd's, on one Gramian


# Random and badly scaled Jacobians at every seed, the rank-deficient ones at the first two.
GRAMIAN_CASES = [(kind, seed) for kind in ("random", "badly_scaled") for seed in SEEDS] + [
    (kind, seed) for kind in ("identical", "collinear", "zero_row", "low_rank") for seed in SEEDS[:2]
]


@pytest.mark.parametrize("name", METHOD_NAMES)
@pytest.mark.parametrize("num_tasks", [2, 3, 5])
@pytest.mark.parametrize(("kind", "seed"), GRAMIAN_CASES)
def test_gramian_matches_torchjd(name, num_tasks, kind, seed):
    if kind == "random":
        jacobian = random_jacobian(num_tasks, seed)
    elif kind == "badly_scaled":
        jacobian = badly_scaled(num_tasks, seed)
    else:
        jacobian = rank_deficient(num_tasks, seed, kind)
    assert_matches(name, jacobian @ jacobian.T)


@pytest.mark.parametrize("name", METHOD_NAMES)
@pytest.mark.parametrize("num_tasks", [1, 2, 4])
def test_zero_gramian_matches_torchjd(name, num_tasks):
    # torchjd: MGDA puts all the weight on task 0, IMTL-G gives zeros, Aligned-MTL and DualProj the mean.
    gramian = torch.zeros(num_tasks, num_tasks, dtype=torch.float64)
    expected = {
        "mgda": torch.eye(num_tasks, dtype=torch.float64)[0],
        "imtl_g": torch.zeros(num_tasks, dtype=torch.float64),
        "aligned_mtl": torch.full((num_tasks,), 1 / num_tasks, dtype=torch.float64),
        "dualproj": torch.full((num_tasks,), 1 / num_tasks, dtype=torch.float64),
    }[name]
    torch.testing.assert_close(assert_matches(name, gramian), expected)


@pytest.mark.parametrize(
    "name, hyperparameters",
    [
        ("mgda", {"epsilon": 1e-6, "max_iters": 1000}),
        ("mgda", {"epsilon": 0.1, "max_iters": 3}),
        ("aligned_mtl", {"scale_mode": "median"}),
        ("aligned_mtl", {"scale_mode": "rmse"}),
        ("dualproj", {"norm_eps": 0.0, "reg_eps": 1e-6}),
        ("dualproj", {"norm_eps": 1e-2, "reg_eps": 1e-2}),
    ],
)
@pytest.mark.parametrize("num_tasks", [3, 4, 5])
@pytest.mark.parametrize("seed", SEEDS[:2])
def test_hyperparameters_match_torchjd(name, hyperparameters, num_tasks, seed):
    for jacobian in (random_jacobian(num_tasks, seed), badly_scaled(num_tasks, seed)):
        assert_matches(name, jacobian @ jacobian.T, **hyperparameters)
    jacobian = rank_deficient(num_tasks, seed, "collinear")
    assert_matches(name, jacobian @ jacobian.T, **hyperparameters)


def test_dualproj_norm_eps_is_absolute():
    # As torchjd: a Gramian with a trace below norm_eps counts as zero, so DualProj gives the mean however much the
    # tasks conflict; with norm_eps=0 it projects.
    jacobian = 1e-3 * torch.tensor([[1.0, 0.0], [-0.9, 0.1]], dtype=torch.float64)
    gramian = jacobian @ jacobian.T
    torch.testing.assert_close(assert_matches("dualproj", gramian), torch.full((2,), 0.5, dtype=torch.float64))
    weights = assert_matches("dualproj", gramian, norm_eps=0.0)
    assert weights[1] > 0.5 + 1e-3


def test_dualproj_zero_gramian_without_norm_eps_is_the_mean():
    # torchjd divides by the zero trace (NaN, then quadprog fails); ours gives the mean.
    weights = build_surgery("dualproj", 3, norm_eps=0.0).task_weights(torch.zeros(3, 3, dtype=torch.float64), 0)
    torch.testing.assert_close(weights, torch.full((3,), 1 / 3, dtype=torch.float64))


def small_problems(name):
    """`(jacobian, weights)` of method `name` on 30 random `[K, 4]` Jacobians, 10 each for K = 2, 3 and 5."""
    for num_tasks in (2, 3, 5):
        for seed in range(10):
            jacobian = random_jacobian(num_tasks, seed, size=4)
            yield jacobian, build_surgery(name, num_tasks).task_weights(jacobian @ jacobian.T, 0)


def test_dualproj_projects():
    # On the random Gramians above, the projection is active in some cases (not only the mean) and its result is in
    # the dual cone up to reg_eps: no task's gradient has a negative dot product with the step.
    projected = 0
    for jacobian, weights in small_problems("dualproj"):
        num_tasks = jacobian.shape[0]
        assert (weights >= 1 / num_tasks - 1e-12).all()
        dots = jacobian @ (weights @ jacobian)
        assert (dots >= -1e-3 * jacobian.norm() ** 2).all()
        projected += bool((weights > 1 / num_tasks + 1e-9).any())
    assert projected >= 5


def test_mgda_weights_are_on_the_simplex_and_not_trivial():
    iterated = 0
    for jacobian, weights in small_problems("mgda"):
        assert (weights >= 0).all()
        torch.testing.assert_close(weights.sum(), torch.tensor(1.0, dtype=torch.float64))
        iterated += bool((weights - 1 / jacobian.shape[0]).abs().max() > 1e-3)
    assert iterated >= 10


# ---------------------------------------------------------------------------------------------------------------------
# Full path: build_surgery(...)(grads) against a loop over the groups


GROUP_SIZES = [7, 0, 20, 13]  # P = 40; an empty group has a zero Gramian


@pytest.mark.parametrize("name", METHOD_NAMES)
@pytest.mark.parametrize("num_tasks", [2, 3, 5])
def test_grouped_call_matches_loop_over_groups(name, num_tasks):
    generator = torch.Generator().manual_seed(num_tasks)
    grads = torch.randn(num_tasks, sum(GROUP_SIZES), generator=generator)  # float32
    grads[1, :7] = -grads[0, :7]  # a conflicting pair in the first group
    task_names = [f"task{i}" for i in range(num_tasks)]
    surgery = build_surgery(name, num_tasks, group_sizes=GROUP_SIZES, task_names=task_names)
    combined = surgery(grads)
    assert combined.dtype == torch.float32 and combined.shape == (sum(GROUP_SIZES),)

    reference = build_surgery(name, num_tasks)
    expected = torch.zeros(sum(GROUP_SIZES), dtype=torch.float64)
    weight_sum = torch.zeros(num_tasks, dtype=torch.float64)
    start = 0
    for k, size in enumerate(GROUP_SIZES):
        block = grads[:, start : start + size]
        weights = reference.task_weights((block @ block.T).to(torch.float64), k)
        expected[start : start + size] = weights @ block.to(torch.float64)
        weight_sum += weights
        start += size
    torch.testing.assert_close(combined, expected.to(torch.float32), rtol=1e-5, atol=1e-6)

    stats = surgery.pop_stats()
    weight_keys = {f"surgery/{task}/weight" for task in task_names}
    assert weight_keys <= stats.keys()
    assert not any(key.endswith("/adjustments") for key in stats)
    for i, task in enumerate(task_names):
        assert stats[f"surgery/{task}/weight"] == pytest.approx(float(weight_sum[i]) / len(GROUP_SIZES), abs=1e-9)
    assert surgery.pop_stats() == {}  # the window was reset
