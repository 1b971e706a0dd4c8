# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
The projection onto the dual cone of the task gradients, in the Gramian, shared by UPGrad and DualProj (Quinton &
Rey 2024, "Jacobian Descent for Multi-Objective Optimization"): torchjd's `project_weights` with its
`QuadprogProjector`, without quadprog. A helper of those two methods, not a method itself.
"""

import numpy as np
import scipy.optimize
import torch

from .base import Hyperparameter


def projector_hyperparameters(reg_eps_rule: str = "non-negative") -> dict[str, Hyperparameter]:
    """
    `norm_eps` and `reg_eps`, the hyper-parameters of torchjd's `QuadprogProjector` (1e-4 each; see
    [`normalized_gramian`]). `reg_eps_rule` is `"non-negative"` or `"positive"` (0 excluded).
    """
    checks = {"non-negative": lambda value: value >= 0, "positive": lambda value: value > 0}
    helps = {
        "norm_eps": "Gramians with a smaller trace (sum of squared gradient norms) count as zero and give the mean",
        "reg_eps": "added to the diagonal of the trace-normalised Gramian before the projection",
    }
    rules = {"norm_eps": "non-negative", "reg_eps": reg_eps_rule}
    return {
        name: Hyperparameter(0.0001, f"{helps[name]}; torchjd's 1e-4", check=checks[rules[name]], rule=rules[name])
        for name in helps
    }


def normalized_gramian(gramian: torch.Tensor, norm_eps: float, reg_eps: float) -> torch.Tensor:
    """
    torchjd's regularised Gramian `G' = G / tr(G) + reg_eps I`, and `G' = reg_eps I` where `tr(G) < norm_eps` (an
    absolute threshold on the sum of the squared gradient norms) or `tr(G) <= 0` (where torchjd divides by zero).
    """
    num_tasks = gramian.shape[0]
    trace = float(gramian.diagonal().sum())
    normalized = gramian / trace if trace >= norm_eps and trace > 0 else torch.zeros_like(gramian)
    return normalized + reg_eps * torch.eye(num_tasks, dtype=torch.float64)


def dual_cone_weights(gramian: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """
    For each row `u` of `targets` `[n, K]`, the solution `v` of the QP `min_v v^T G v` subject to `v >= u`, with
    `G = gramian` `[K, K]` positive semi-definite (float64): `J^T v` is the projection of `J^T u` onto the dual cone
    `{x : J x >= 0}` of the rows of `J` (`G = J J^T`; Proposition 1 of the UPGrad paper). Returns `[n, K]` float64.

    Exact, as torchjd's quadprog: with `v = u + S x`, as the non-negative least squares `min_{x >= 0} ||R (y + x)||`
    (scipy's Lawson-Hanson active set method), where `S = diag(G)^(-1/2)` equilibrates the Gramian (a zero gradient
    keeps `1`), `y = S^-1 u`, and `R^T R = S G S` (Cholesky, or the eigendecomposition of a singular `G`).
    The equilibration keeps the weights of small gradients accurate (a row of norm 1e-4 beside one of 1e4: without
    it the combined gradient is off by ~1e-5 at `reg_eps = 0`). Faster than enumerating the `2^K` active sets at
    every `K` from 2 (~50 us a target at 3 tasks, ~65 us at 10), with KKT residuals at rounding.
    """
    g, u = gramian.numpy(), targets.numpy()
    diagonal = np.diagonal(g)
    scales = 1 / np.sqrt(np.where(diagonal > 0, diagonal, 1.0))
    equilibrated = g * scales[:, None] * scales[None, :]
    try:
        root = np.linalg.cholesky(equilibrated).T  # R with R^T R = S G S
    except np.linalg.LinAlgError:  # singular
        eigenvalues, eigenvectors = np.linalg.eigh(equilibrated)
        root = np.sqrt(np.clip(eigenvalues, 0, None))[:, None] * eigenvectors.T
    rows = [target + scales * scipy.optimize.nnls(root, -root @ (target / scales))[0] for target in u]
    return torch.from_numpy(np.stack(rows))
