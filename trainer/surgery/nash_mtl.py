# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""Nash-MTL (Navon et al. 2022, "Multi-Task Learning as a Bargaining Game"), as in torchjd."""

import numpy as np
import scipy.optimize
import torch

from .base import Hyperparameter
from .weighting import GramianWeighting


def _newton(value, derivatives, x: np.ndarray, max_iterations: int = 200) -> np.ndarray | None:
    """
    Minimises a convex `value` (`inf` outside its domain) from `x` by Newton's method: backtracking while the Newton
    decrement is large, full steps once it is small (where, for a self-concordant function, they converge
    quadratically; backtracking there would stall on rounding in `value`). `None` if the iterates diverge.
    """
    full_steps = 0
    for _ in range(max_iterations):
        gradient, hessian = derivatives(x)
        try:
            step = -np.linalg.solve(hessian, gradient)
        except np.linalg.LinAlgError:
            return None
        decrement = float(-gradient @ step)
        if not np.isfinite(decrement):
            return None
        if decrement < 1e-24 or full_steps > 8:
            return x
        size = 1.0
        if decrement < 1e-2 and np.isfinite(value(x + step)):
            full_steps += 1
        else:
            current = value(x)
            while not value(x + size * step) <= current - 0.25 * size * decrement:
                size *= 0.5
                if size < 1e-12:
                    return x if decrement < 1e-12 else None
        x = x + size * step
        if not np.isfinite(x).all() or np.abs(x).max() > 1e150:
            return None
    return None


def nash_point(gramian: np.ndarray) -> np.ndarray | None:
    """
    The `beta > 0` with `G beta = 1 / beta` (the Nash bargaining solution of the paper, where every constraint
    `beta_i (G beta)_i >= 1` is tight), the minimiser of the self-concordant `beta^T G beta / 2 - sum(log beta)`, by
    Newton's method. `None` when it does not exist: then some `d >= 0`, `d != 0` has `G d = 0` (a zero gradient, two
    opposite ones, a non-negative combination that vanishes), no `beta >= 0` has `G beta > 0` and the constraints are
    infeasible.
    """
    diagonal = np.diag(gramian)
    if not (diagonal > 0).all():
        return None

    def value(x):
        return 0.5 * x @ gramian @ x - np.log(x).sum() if (x > 0).all() else np.inf

    def derivatives(x):
        return gramian @ x - 1 / x, gramian + np.diag(1 / x**2)

    beta = _newton(value, derivatives, 1 / np.sqrt(diagonal), max_iterations=500)
    if beta is None or np.abs(beta * (gramian @ beta) - 1).max() > 1e-9:
        return None
    return beta


def _unbounded(gramian: np.ndarray, cost: np.ndarray) -> bool:
    """Whether `cost . d < 0` for some `d >= 0` with `G d >= 0` (a direction of the feasible set)."""
    num_tasks = gramian.shape[0]
    result = scipy.optimize.linprog(
        cost / np.abs(cost).max(),
        A_ub=-gramian,
        b_ub=np.zeros(num_tasks),
        A_eq=np.ones((1, num_tasks)),
        b_eq=[1.0],
        bounds=[(0, None)] * num_tasks,
        method="highs",
    )
    return bool(result.status == 0 and result.fun < -1e-9)


def _constraint_terms(gramian, beta):
    """`l_i = log beta_i + log (G beta)_i` (feasible: `l >= 0`), their gradients `[K, K]` and Hessians `[K, K, K]`."""
    products = gramian @ beta
    values = np.log(beta) + np.log(products)
    gradients = np.diag(1 / beta) + gramian / products[:, None]
    hessians = -np.einsum("ij,ik->ijk", np.eye(len(beta)) / beta[:, None], np.eye(len(beta)) / beta[:, None])
    hessians -= np.einsum("ij,ik->ijk", gramian, gramian) / products[:, None, None] ** 2
    return values, gradients, hessians


def _barrier_solve(gramian: np.ndarray, cost: np.ndarray, start: np.ndarray) -> np.ndarray | None:
    """`min cost . beta` subject to `l_i(beta) >= 0`, from a strictly feasible `start`: log-barrier and Newton."""
    beta = start
    cost = cost / np.abs(cost).max()
    num_tasks = len(beta)

    def value(x, weight):
        if (x <= 0).any() or ((gramian @ x) <= 0).any():
            return np.inf
        values = np.log(x) + np.log(gramian @ x)
        if (values <= 0).any():
            return np.inf
        return weight * cost @ x - np.log(values).sum()

    def derivatives(x, weight):
        values, gradients, hessians = _constraint_terms(gramian, x)
        scaled = gradients / values[:, None]
        hessian = scaled.T @ scaled - (hessians / values[:, None, None]).sum(0)
        return weight * cost - scaled.sum(0), hessian

    # The barrier's minimisers approach the solution to a duality gap of K / weight; at a gap of ~1e-8 the active
    # constraints are plain (their multipliers `1 / (weight l_i)` dwarf the others') and Newton on the KKT equations
    # finishes the job (further barrier steps would only lose accuracy to the Hessian's conditioning).
    weight = 1.0
    while True:
        minimiser = _newton(lambda x: value(x, weight), lambda x: derivatives(x, weight), beta)
        if minimiser is None:
            if weight == 1.0:
                return None
            weight /= 10
            break
        beta = minimiser
        if num_tasks / weight < 1e-8 * (1 + abs(cost @ beta)):
            break
        weight *= 10
    return _polish(gramian, cost, beta, weight)


def _polish(gramian, cost, beta, weight):
    """
    Newton on the KKT equations `cost = sum_{i active} lambda_i grad l_i`, `l_i = 0` (active `i`), for the
    constraints the barrier found active, from the barrier's point and multipliers (`1 / (weight l_i)`): quadratic
    convergence. Falls back to the barrier's point unless the result is a KKT point near it.
    """
    values, _, _ = _constraint_terms(gramian, beta)
    multipliers = 1 / (weight * values)
    active = multipliers > 1e-6 * multipliers.max()
    x, lam = beta.copy(), multipliers[active]
    num_tasks, num_active = len(beta), int(active.sum())
    for _ in range(30):
        if (x <= 0).any() or ((gramian @ x) <= 0).any():
            return beta
        values, gradients, hessians = _constraint_terms(gramian, x)
        residual = np.concatenate([cost - lam @ gradients[active], values[active]])
        jacobian = np.zeros((num_tasks + num_active, num_tasks + num_active))
        jacobian[:num_tasks, :num_tasks] = -np.einsum("i,ijk->jk", lam, hessians[active])
        jacobian[:num_tasks, num_tasks:] = -gradients[active].T
        jacobian[num_tasks:, :num_tasks] = gradients[active]
        try:
            delta = -np.linalg.solve(jacobian, residual)
        except np.linalg.LinAlgError:
            return beta
        x, lam = x + delta[:num_tasks], lam + delta[num_tasks:]
        if np.abs(delta[:num_tasks]).max() <= 1e-13 * np.abs(x).max():
            break
    if (x <= 0).any() or ((gramian @ x) <= 0).any():
        return beta
    values = np.log(x) + np.log(gramian @ x)
    if (lam < 0).any() or (values < -1e-9).any() or np.abs(x - beta).max() > 1e-3 * np.abs(beta).max():
        return beta
    return x


class NashMTL(GramianWeighting):
    """
    Nash-MTL (Navon et al. 2022, "Multi-Task Learning as a Bargaining Game", Algorithm 1): the step `d = alpha @ J`
    is the Nash bargaining solution of the tasks, `alpha_i (G alpha)_i = 1` for every task (`G alpha = 1 / alpha`):
    each task's improvement `g_i . d` is inversely proportional to its weight, so that no task dominates and the
    step is invariant to rescaling one task's loss. As in torchjd 0.18's `NashMTL` (which follows the authors'
    code), per parameter group and every `update_weights_every` calls, with `G' = G / ||G||_F`:

        alpha <- argmin_{alpha >= 0} sum(G' alpha) + phi_t . (alpha - alpha_t) / ||G||_F
                 subject to  alpha_i (G' alpha)_i >= 1 / ||G||_F
        phi_t = 1 / alpha_t + G' (1 / (G' alpha_t))

    (a linearisation of `phi(alpha) = sum(log alpha + log G' alpha)`, re-solved from `alpha_t` = the previous alpha,
    at most `optim_niter` times; it stops at `alpha_t` as soon as `||G' alpha_t - 1 / alpha_t|| < 1e-3`, or the new
    alpha moves less than 1e-6, or the sub-problem has no solution), then `alpha` is scaled down so that
    `||alpha @ J|| <= max_norm`. In between updates the last alpha is reused (clipped against the new gradients).

    torchjd solves each sub-problem with cvxpy + ECOS. Here, without a convex-optimisation package, in the scale-free
    `gamma = alpha sqrt(||G||_F diag(G'))` (constraints `gamma_i (E gamma)_i >= 1`, `E` the Gramian of the unit
    gradients; see `_sub_problem`): where the Nash point `G' beta = 1 / beta` is
    itself the solution (its multipliers `(diag(1 / gamma) + E diag(gamma))^-1 cost` are all non-negative; the usual
    case), by Newton's method (see [`nash_point`]); otherwise by a log-barrier Newton method polished by Newton on the
    KKT equations, after an LP (scipy's HiGHS) has ruled out an unbounded sub-problem. Both are exact to ~1e-13. The
    weights match torchjd's to 1e-6 relative (ECOS's accuracy, ~1e-7 there) on well-scaled gradients. Where ECOS
    reports an inaccurate solution or fails, torchjd keeps ECOS's unconverged output and the weights differ: with row
    norms spanning orders of magnitude, or a small Gramian (gradient norms ~1e-3, where torchjd's constraint bound
    `1 / ||G||_F` is large). A sub-problem without a solution (infeasible: the gradients have a vanishing non-negative
    combination, such as a zero gradient or two opposite ones; or unbounded) keeps the previous alpha, as in torchjd
    (`1` before the first solve); so does a zero Gramian, where torchjd raises (its normalisation divides by zero).

    The weights are positive and unbounded: a task with a small gradient gets a large weight. State, per group and
    saved in `state_dict`: the previous alpha, the call counter and the last normalisation `||G||_F`.

    Args:
        max_norm: Largest norm of the combined gradient `alpha @ J` of a group (torchjd's 1.0; 0 disables it).
        update_weights_every: The weights are recomputed every this many calls (torchjd's 1).
        optim_niter: Most sub-problems solved per update (torchjd's 20).
        Other arguments: see [`GradientSurgery`].
    """

    name = "nash_mtl"
    has_state = True
    hyperparameters = {
        "max_norm": Hyperparameter(
            1.0,
            "largest norm of each group's combined gradient (0 disables it); torchjd's 1.0",
            check=lambda value: value >= 0,
            rule="non-negative",
        ),
        "update_weights_every": Hyperparameter(
            1,
            "the weights are recomputed every this many steps; torchjd's 1",
            check=lambda value: value >= 1,
            rule="a positive integer",
        ),
        "optim_niter": Hyperparameter(
            20,
            "most convex sub-problems solved per update; torchjd's 20",
            check=lambda value: value >= 1,
            rule="a positive integer",
        ),
    }

    def __init__(self, num_tasks: int, group_sizes: list[int] | None = None, **kwargs) -> None:
        super().__init__(num_tasks, group_sizes, **kwargs)
        self.steps = torch.zeros(self.num_groups, dtype=torch.int64)
        self.alphas = torch.ones(self.num_groups, num_tasks, dtype=torch.float64)
        self.normalization = torch.ones(self.num_groups, dtype=torch.float64)

    def task_weights(self, gramian: torch.Tensor, group: int) -> torch.Tensor:
        update = int(self.steps[group]) % self.update_weights_every == 0
        self.steps[group] += 1
        if update:
            normalization = float(torch.linalg.norm(gramian))
            self.normalization[group] = normalization
            if normalization > 0:
                self.alphas[group] = torch.from_numpy(
                    self._solve((gramian / normalization).numpy(), normalization, self.alphas[group].numpy())
                )
        alpha = self.alphas[group].clone()
        if self.max_norm > 0:
            norm = max(float(alpha @ gramian @ alpha), 0.0) ** 0.5  # ||alpha @ J||
            if norm > self.max_norm:
                alpha = alpha / norm * self.max_norm
        return alpha

    def _solve(self, gramian: np.ndarray, normalization: float, alpha: np.ndarray) -> np.ndarray:
        """torchjd's `_solve_optimization`: the sequence of sub-problems from the previous alpha."""
        diagonal = np.diag(gramian)
        if not (diagonal > 0).all():
            return alpha.copy()  # a zero gradient: every sub-problem is infeasible
        # The sub-problems in `gamma = beta sqrt(diag(G'))` (`beta = alpha sqrt(||G||_F)`), whose Gramian has a unit
        # diagonal: `beta_i (G' beta)_i = gamma_i (E gamma)_i`, `E = D G' D`, `D = diag(G')^-1/2`. Gradients whose
        # norms span orders of magnitude then make no ill-conditioned Newton systems.
        scales = 1 / np.sqrt(diagonal)
        equilibrated = gramian * scales[:, None] * scales[None, :]
        nash = nash_point(equilibrated)  # the sub-problems differ in their cost only
        if nash is None:
            return alpha.copy()  # infeasible
        alpha_t = alpha.copy()
        for _ in range(self.optim_niter):
            new = self._sub_problem(gramian, normalization, alpha_t, equilibrated, scales, nash)
            if new is None:
                break
            if np.linalg.norm(gramian @ alpha_t - 1 / (alpha_t + 1e-10)) < 1e-3:
                break
            if np.linalg.norm(new - alpha_t) < 1e-6:
                break
            alpha_t = new
        return alpha_t

    @staticmethod
    def _sub_problem(gramian, normalization, previous, equilibrated, scales, nash):
        """
        torchjd's sub-problem, `argmin_{alpha >= 0} cost . alpha` subject to `alpha_i (G' alpha)_i >= 1 / ||G||_F`
        (`cost = sum(G' alpha) + phi_t . alpha / ||G||_F`), solved in `gamma` (`alpha = D gamma / sqrt(||G||_F)`,
        constraints `gamma_i (E gamma)_i >= 1`, cost `D cost`); `nash` is `E`'s Nash point. `None` where it has no
        solution (torchjd's ECOS reports it infeasible or unbounded, or cvxpy fails).
        """
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            linearization = 1 / previous + gramian @ (1 / (gramian @ previous))
            cost = scales * (gramian.sum(0) + linearization / normalization)
        if not np.isfinite(cost).all() or not np.abs(cost).max() > 0:
            return None
        try:
            multipliers = np.linalg.solve(np.diag(1 / nash) + equilibrated * nash, cost)
        except np.linalg.LinAlgError:
            multipliers = None
        if multipliers is not None and (multipliers >= 0).all():
            gamma = nash  # the Nash point is optimal: its KKT multipliers are non-negative
        elif _unbounded(equilibrated, cost):
            return None
        else:
            gamma = _barrier_solve(equilibrated, cost, 1.01 * nash)
        if gamma is None or not np.isfinite(gamma).all():
            return None
        return scales * gamma / normalization**0.5

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "nash_steps": self.steps.clone(),
            "nash_alphas": self.alphas.clone(),
            "nash_normalization": self.normalization.clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        for key, name in (("nash_steps", "steps"), ("nash_alphas", "alphas"), ("nash_normalization", "normalization")):
            value, current = state[key], getattr(self, name)
            if tuple(value.shape) != tuple(current.shape):
                raise ValueError(f"{key} has shape {tuple(value.shape)}, expected {tuple(current.shape)}.")
            setattr(self, name, value.to(device="cpu", dtype=current.dtype).clone())
