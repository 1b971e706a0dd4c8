# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""UPGrad, CAGrad and Nash-MTL (trainer/surgery) against torchjd 0.18's weightings of the same names.

Ours need only torch and scipy; torchjd calls solvers: quadprog (through qpsolvers) for UPGrad, cvxpy + Clarabel for
CAGrad, cvxpy + ECOS for Nash-MTL. A comparison is skipped, alone, when torchjd or its solver is not installed; the
tests of our own behaviour (the full path, the state) always run.

- UPGrad: torchjd's QPs are solved exactly by quadprog and so are ours: weights to rtol 1e-6 (they agree to ~1e-9).
- CAGrad: Clarabel stops at a duality gap of ~1e-8, which leaves its weights ~1e-4 from the optimum (the objective is
  flat there): weights and combined gradients to 2e-3, and ours are at least as optimal (objective no higher than
  torchjd's, up to 1e-9) and satisfy the KKT conditions to 1e-9. Where the weights are not unique (linearly dependent
  gradients), only the combined gradients are compared.
- Nash-MTL: several consecutive calls, state included, to rtol 1e-6 (ECOS's accuracy; they agree to ~2e-7). With row
  norms from 1e-4 to 1e4 ECOS reports inaccurate solutions (and so would Clarabel on torchjd's formulation): there
  each sub-problem is compared with Clarabel at tight tolerances on the equivalent, rescaled problem (rtol 1e-4,
  Clarabel's accuracy there), ours being feasible and at least as good.
"""

import io
import warnings

import numpy as np
import pytest
import torch

from trainer.surgery import build_surgery
from trainer.surgery import cagrad as cagrad_module
from trainer.surgery.nash_mtl import NashMTL, nash_point
from trainer.surgery.rows import gramians, group_slices


KINDS = ("random", "identical", "collinear", "opposite", "zero_row", "low_rank", "scaled")
# Kinds whose task gradients are linearly dependent (their CAGrad weights need not be unique).
DEPENDENT = ("identical", "collinear", "opposite", "zero_row", "low_rank")


def make_dependent(matrix, kind):
    """`matrix` with two rows made dependent (`identical`, `collinear`, `opposite`) or its last zero (`zero_row`)."""
    if kind == "identical":
        matrix[1] = matrix[0]
    elif kind == "collinear":
        matrix[1] = 2.5 * matrix[0]
    elif kind == "opposite":
        matrix[1] = -0.5 * matrix[0]
    elif kind == "zero_row":
        matrix[-1] = 0
    return matrix


def jacobian(num_tasks, seed, kind="random", size=9, step=None):
    """`[K, size]` float64 task gradients of one `kind` (see `KINDS`), leaning against each other."""
    generator = torch.Generator().manual_seed(100 * seed + num_tasks + (0 if step is None else 10_000 * (step + 1)))
    matrix = torch.randn(num_tasks, size, generator=generator, dtype=torch.float64)
    for i in range(1, num_tasks):
        matrix[i] -= 0.5 * matrix[i - 1]
    make_dependent(matrix, kind)
    if kind == "low_rank":
        left = torch.randn(num_tasks, 2, generator=generator, dtype=torch.float64)
        matrix = left @ torch.randn(2, size, generator=generator, dtype=torch.float64)
    elif kind == "scaled":
        order = torch.randperm(num_tasks, generator=torch.Generator().manual_seed(seed))
        matrix = (
            matrix
            / matrix.norm(dim=1, keepdim=True)
            * torch.logspace(-4, 4, num_tasks, dtype=torch.float64)[order, None]
        )
    elif kind == "zero":
        matrix = torch.zeros_like(matrix)
    return matrix


def gram(matrix):
    return matrix @ matrix.T


@pytest.fixture
def aggregation():
    return pytest.importorskip("torchjd.aggregation")


def needs(*modules):
    for module in modules:
        pytest.importorskip(module)


# ---------------------------------------------------------------------------------------------------------------------
# UPGrad


@pytest.mark.parametrize("num_tasks", [2, 3, 5])
@pytest.mark.parametrize("kind", KINDS + ("zero",))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_upgrad_matches_torchjd(aggregation, num_tasks, kind, seed):
    needs("qpsolvers", "quadprog")
    gramian = gram(jacobian(num_tasks, seed, kind))
    ours = build_surgery("upgrad", num_tasks).task_weights(gramian, 0)
    theirs = aggregation.UPGradWeighting()(gramian)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-9)
    assert (ours >= 1 / num_tasks - 1e-12).all()


def test_upgrad_small_and_zero_gramians_give_the_mean():
    surgery = build_surgery("upgrad", 3)
    mean = torch.full((3,), 1 / 3, dtype=torch.float64)
    torch.testing.assert_close(surgery.task_weights(torch.zeros(3, 3, dtype=torch.float64), 0), mean)
    tiny = 1e-6 * gram(jacobian(3, 0, "random"))  # trace below norm_eps = 1e-4
    torch.testing.assert_close(surgery.task_weights(tiny, 0), mean)


# ---------------------------------------------------------------------------------------------------------------------
# CAGrad


def cagrad_problem(gramian, c, weights, onto_simplex=False):
    """torchjd's CAGrad problem for the returned `weights`: the `w*` behind them, its objective, its KKT residual.

    `onto_simplex` clips `w*` to the simplex the problem is posed on: torchjd's solver (clarabel) returns it up to
    its feasibility tolerance outside, e.g. a weight of -3.5e-9 that lowers the objective by 1.8e-9 below the optimum.
    """
    num_tasks = gramian.shape[0]
    normalized = gramian / gramian.diagonal().sum()
    mean = torch.full((num_tasks,), 1 / num_tasks, dtype=torch.float64)
    radius = c * (mean @ normalized @ mean).sqrt()
    excess = weights - mean
    w = excess / excess.sum()
    if onto_simplex:
        w = w.clamp(min=0)
        w = w / w.sum()
    norm = (w @ normalized @ w).clamp(min=0).sqrt()
    objective = normalized @ mean @ w + radius * norm
    gradient = normalized @ mean + radius * normalized @ w / norm
    support = w > 1e-12
    level = gradient[support].mean()
    below = (level - gradient[~support]).clamp(min=0)  # off the support the gradient is at least the level
    residual = max((gradient[support] - level).abs().max(), below.max() if len(below) else 0.0)
    return w, float(objective), float(residual)


def check_cagrad(aggregation, matrix, c, kkt_tolerance=1e-9):
    gramian = matrix @ matrix.T
    kwargs = {} if c is None else {"c": c}
    c = 0.4 if c is None else c
    ours = build_surgery("cagrad", matrix.shape[0], **kwargs).task_weights(gramian, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cvxpy: "Solution may be inaccurate"
        theirs = aggregation.CAGradWeighting(c=c)(gramian)
    assert torch.isfinite(ours).all()
    assert bool((ours == 0).all()) == bool((theirs == 0).all())
    if (theirs == 0).all():
        return
    combined, reference = ours @ matrix, theirs @ matrix
    assert (combined - reference).norm() <= 2e-3 * reference.norm()
    _, objective, residual = cagrad_problem(gramian, c, ours)
    _, their_objective, _ = cagrad_problem(gramian, c, theirs, onto_simplex=True)
    assert objective <= their_objective + 1e-9
    assert residual <= kkt_tolerance
    return ours, theirs


@pytest.mark.parametrize("num_tasks", [2, 3, 5])
@pytest.mark.parametrize("kind", KINDS + ("zero",))
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("c", [None, 0.9])
def test_cagrad_matches_torchjd(aggregation, num_tasks, kind, seed, c):
    needs("cvxpy", "clarabel")
    result = check_cagrad(aggregation, jacobian(num_tasks, seed, kind), c)
    if result is not None and kind not in DEPENDENT:
        ours, theirs = result
        torch.testing.assert_close(ours, theirs, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("num_tasks", [7, 9])
@pytest.mark.parametrize("kind", ["random", "zero_row", "scaled"])
def test_cagrad_slsqp_matches_torchjd(aggregation, monkeypatch, num_tasks, kind):
    """Above `MAX_ENUMERATED_TASKS` (6) the problem goes to SLSQP: KKT to ~1e-6 (and the exact solution to 1e-5)."""
    needs("cvxpy", "clarabel")
    matrix = jacobian(num_tasks, 3, kind, size=12)
    check_cagrad(aggregation, matrix, None, kkt_tolerance=1e-6)
    gramian = matrix @ matrix.T
    approximate = build_surgery("cagrad", num_tasks).task_weights(gramian, 0)
    monkeypatch.setattr(cagrad_module, "MAX_ENUMERATED_TASKS", 10)
    exact = build_surgery("cagrad", num_tasks).task_weights(gramian, 0)
    assert ((approximate - exact) @ matrix).norm() <= 1e-5 * (exact @ matrix).norm()


def test_cagrad_special_cases():
    matrix = jacobian(3, 0, "random")
    gramian = matrix @ matrix.T
    mean = torch.full((3,), 1 / 3, dtype=torch.float64)
    torch.testing.assert_close(build_surgery("cagrad", 3, c=0.0).task_weights(gramian, 0), mean)  # c = 0: the mean
    zero = torch.zeros(3, 3, dtype=torch.float64)
    assert (build_surgery("cagrad", 3).task_weights(zero, 0) == 0).all()
    assert (build_surgery("cagrad", 3, norm_eps=0.0).task_weights(zero, 0) == 0).all()
    assert (build_surgery("cagrad", 3).task_weights(1e-6 * gramian, 0) == 0).all()  # trace below norm_eps
    weights = build_surgery("cagrad", 3, norm_eps=0.0).task_weights(1e-6 * gramian, 0)
    torch.testing.assert_close(weights, build_surgery("cagrad", 3).task_weights(gramian, 0))  # scale-free otherwise


# ---------------------------------------------------------------------------------------------------------------------
# Nash-MTL


def drifting(num_tasks, seed, kind, steps):
    """Consecutive task gradients that drift (as in training), `kind` applied to each."""
    base = jacobian(num_tasks, seed, "random")
    return [make_dependent(base + 0.3 * jacobian(num_tasks, seed, "random", step=step), kind) for step in range(steps)]


def torchjd_nash_weights(aggregation, matrices, **kwargs):
    agg = aggregation.NashMTL(n_tasks=matrices[0].shape[0], **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cvxpy: "not DPP"
        return [agg.weighting(matrix) for matrix in matrices]


# Two opposite gradients make every sub-problem infeasible: ECOS says so for K = 2 and 3, but for K = 5 it runs out of
# iterations and returns an unconverged point ("optimal_inaccurate"), which torchjd uses (see the next test).
NASH_CASES = [
    (num_tasks, kind)
    for num_tasks in (2, 3, 5)
    for kind in ("random", "identical", "collinear", "opposite", "zero_row")
    if (num_tasks, kind) != (5, "opposite")
]


@pytest.mark.parametrize(("num_tasks", "kind"), NASH_CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_nash_mtl_matches_torchjd(aggregation, num_tasks, kind, seed):
    needs("cvxpy", "ecos")
    matrices = drifting(num_tasks, seed, kind, steps=4)
    surgery = build_surgery("nash_mtl", num_tasks)
    for matrix, theirs in zip(matrices, torchjd_nash_weights(aggregation, matrices)):
        ours = surgery.task_weights(matrix @ matrix.T, 0)
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("num_tasks", [2, 3, 5])
def test_nash_mtl_infeasible_keeps_alpha(num_tasks):
    """Opposite gradients (or a zero one): no sub-problem has a solution, alpha stays 1 (clipped to max_norm)."""
    for kind in ("opposite", "zero_row"):
        surgery = build_surgery("nash_mtl", num_tasks, max_norm=0.0)
        for matrix in drifting(num_tasks, 0, kind, steps=2):
            torch.testing.assert_close(surgery.task_weights(matrix @ matrix.T, 0), torch.ones(num_tasks).double())


@pytest.mark.parametrize(
    "hyperparameters", [{"update_weights_every": 2}, {"max_norm": 0.0, "optim_niter": 3}, {"max_norm": 5.0}]
)
def test_nash_mtl_hyperparameters_match_torchjd(aggregation, hyperparameters):
    needs("cvxpy", "ecos")
    matrices = drifting(3, 4, "random", steps=5)
    surgery = build_surgery("nash_mtl", 3, **hyperparameters)
    for matrix, theirs in zip(matrices, torchjd_nash_weights(aggregation, matrices, **hyperparameters)):
        torch.testing.assert_close(surgery.task_weights(matrix @ matrix.T, 0), theirs, rtol=1e-6, atol=1e-12)


def clarabel_sub_problem(gramian, normalization, previous):
    """torchjd's sub-problem in the rescaled variables that make it well-conditioned, by cvxpy + Clarabel."""
    import cvxpy as cp

    scales = 1 / np.sqrt(np.diag(gramian))
    equilibrated = gramian * scales[:, None] * scales[None, :]
    cost = scales * (gramian.sum(0) + (1 / previous + gramian @ (1 / (gramian @ previous))) / normalization)
    x = cp.Variable(len(previous), nonneg=True)
    products = equilibrated @ x
    constraints = [-cp.log(x[i]) - cp.log(products[i]) <= 0 for i in range(len(previous))]
    problem = cp.Problem(cp.Minimize(cost @ x / np.abs(cost).max()), constraints)
    tolerances = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12, "tol_ktratio": 1e-10}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Solution may be inaccurate": such answers are not compared
        problem.solve(solver=cp.CLARABEL, max_iter=500, **tolerances)
    return problem.status, None if x.value is None else scales * x.value / np.sqrt(normalization)


@pytest.mark.parametrize("num_tasks", [2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_nash_mtl_sub_problems_badly_scaled(num_tasks, seed):
    needs("cvxpy", "clarabel")
    matrix = jacobian(num_tasks, seed, "scaled").numpy()
    raw = matrix @ matrix.T
    normalization = np.linalg.norm(raw)
    gramian = raw / normalization
    scales = 1 / np.sqrt(np.diag(gramian))
    equilibrated = gramian * scales[:, None] * scales[None, :]
    nash = nash_point(equilibrated)
    rng = np.random.default_rng(seed)
    compared = 0
    for _ in range(4):  # linearisation points around the solution, as in the iteration
        previous = scales * nash * np.exp(rng.uniform(-1.5, 1.5, num_tasks)) / np.sqrt(normalization)
        ours = NashMTL._sub_problem(gramian, normalization, previous, equilibrated, scales, nash)
        status, theirs = clarabel_sub_problem(gramian, normalization, previous)
        if status == "unbounded":
            assert ours is None
            continue
        if status != "optimal":
            continue
        compared += 1
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())
        cost = gramian.sum(0) + (1 / previous + gramian @ (1 / (gramian @ previous))) / normalization
        assert (ours * (raw @ ours)).min() >= 1 - 1e-9  # feasible: alpha_i (G alpha)_i >= 1
        theirs_feasible = (theirs * (raw @ theirs)).min() >= 1
        assert not theirs_feasible or cost @ ours <= cost @ theirs + 1e-8 * abs(cost @ theirs)
    assert compared > 0


@pytest.mark.parametrize("num_tasks", [2, 3, 5])
def test_nash_mtl_badly_scaled_weights_are_finite(num_tasks):
    surgery = build_surgery("nash_mtl", num_tasks)
    for seed in range(3):
        matrix = jacobian(num_tasks, seed, "scaled")
        weights = surgery.task_weights(matrix @ matrix.T, 0)
        assert torch.isfinite(weights).all() and (weights > 0).all()
        assert (weights @ matrix).norm() <= 1.0 + 1e-9  # max_norm


def test_nash_mtl_zero_gramian_keeps_the_previous_alpha(aggregation):
    needs("cvxpy", "ecos")
    matrix = drifting(3, 0, "random", steps=1)[0]
    surgery = build_surgery("nash_mtl", 3, max_norm=0.0)
    first = surgery.task_weights(matrix @ matrix.T, 0)
    zero = torch.zeros(3, 3, dtype=torch.float64)
    torch.testing.assert_close(surgery.task_weights(zero, 0), first)  # torchjd raises here (0 / 0 in cvxpy)
    fresh = build_surgery("nash_mtl", 3).task_weights(zero, 0)
    torch.testing.assert_close(fresh, torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError):
        aggregation.NashMTL(n_tasks=3).weighting(torch.zeros(3, 9, dtype=torch.float64))


def test_nash_mtl_state_round_trip():
    sizes = [9, 14]
    grads = [torch.randn(3, sum(sizes), generator=torch.Generator().manual_seed(step)) for step in range(6)]
    original = build_surgery("nash_mtl", 3, group_sizes=sizes, update_weights_every=2)
    for step in range(3):
        original(grads[step])
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    restored = build_surgery("nash_mtl", 3, group_sizes=sizes, update_weights_every=2)
    restored.load_state_dict(state)
    assert torch.equal(restored.steps, original.steps) and torch.equal(restored.alphas, original.alphas)
    for step in range(3, 6):
        assert torch.equal(restored(grads[step]), original(grads[step]))
    with pytest.raises(ValueError):
        build_surgery("nash_mtl", 3, group_sizes=[sum(sizes)]).load_state_dict(state)


# ---------------------------------------------------------------------------------------------------------------------
# All three


@pytest.mark.parametrize("name", ["upgrad", "cagrad", "nash_mtl"])
@pytest.mark.parametrize("num_tasks", [2, 3])
def test_full_path_combines_each_group(name, num_tasks):
    sizes = [6, 11, 15]
    surgery = build_surgery(name, num_tasks, group_sizes=sizes, task_names=[f"t{i}" for i in range(num_tasks)])
    reference = build_surgery(name, num_tasks, group_sizes=sizes)  # the same calls in the same order: same state
    for step in range(3):
        grads = jacobian(num_tasks, step, "random", size=sum(sizes)).float()
        slices = group_slices(sizes, grads.shape[1])
        gramian = gramians(grads, slices)
        expected = torch.cat(
            [reference.task_weights(gramian[k], k).float() @ grads[:, group] for k, group in enumerate(slices)]
        )
        torch.testing.assert_close(surgery(grads), expected, rtol=1e-5, atol=1e-6)
    stats = surgery.pop_stats()
    assert {f"surgery/t{i}/weight" for i in range(num_tasks)} <= set(stats)


def test_declared_hyperparameters():
    assert build_surgery("upgrad", 2)._hyperparameters() == {"norm_eps": 1e-4, "reg_eps": 1e-4}
    assert build_surgery("cagrad", 2)._hyperparameters() == {"c": 0.4, "norm_eps": 1e-4}
    nash = build_surgery("nash_mtl", 2)._hyperparameters()
    assert nash == {"max_norm": 1.0, "update_weights_every": 1, "optim_niter": 20}
    assert build_surgery("cagrad", 2, c="0.5").c == 0.5  # a command-line string
    for name, values in [
        ("upgrad", {"pref_vector": "1,1"}),
        ("upgrad", {"reg_eps": -1.0}),
        ("cagrad", {"c": -0.1}),
        ("nash_mtl", {"update_weights_every": 0}),
        ("nash_mtl", {"optim_niter": "2.5"}),
        ("nash_mtl", {"max_norm": -1.0}),
    ]:
        with pytest.raises(ValueError):
            build_surgery(name, 2, **values)
    assert not build_surgery("upgrad", 2).has_state and not build_surgery("cagrad", 2).has_state
    assert build_surgery("nash_mtl", 2).has_state
