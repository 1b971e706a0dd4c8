# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
Gradient surgery for multi-task training: the plain sum, the pairwise PCGrad (Yu et al. 2020) and GradVac (Wang et
al. 2021), and the Gramian weightings (MGDA, IMTL-G, Aligned-MTL, UPGrad, CAGrad, Nash-MTL, DualProj). Adding a method
is one file here: the package imports every module, and a class with a `name` registers itself in `METHODS`.

Every method takes the per-task gradients of the shared parameters, stacked as the rows of a `[K, P]` matrix `J`, and
returns one combined `[P]` gradient. The package follows torchjd's `aggregation/`:

- `base.py`: [`GradientSurgery`], which turns the per-group Gramians `J_k J_k^T` into combination weights;
- `rows.py`: the Gramians of `J` and the weighted sums of its rows on the device (chunked; [`SparseRows`]);
- one file per method: `sum.py` ([`Sum`]), `pcgrad.py` ([`PCGrad`]), `gradvac.py` ([`GradVac`]);
- `weighting.py`: [`GramianWeighting`], the base of the methods that weight the tasks from the Gramian alone;
- `mgda.py`: [`MGDA`] (Désidéri 2012; Sener & Koltun 2018);
- `imtl_g.py`: [`IMTLG`] (Liu et al. 2021);
- `aligned_mtl.py`: [`AlignedMTL`] (Senushkin et al. 2023);
- `upgrad.py`: [`UPGrad`] (Quinton & Rey 2024);
- `cagrad.py`: [`CAGrad`] (Liu et al. 2021);
- `nash_mtl.py`: [`NashMTL`] (Navon et al. 2022);
- `dualproj.py`: [`DualProj`] (Quinton & Rey 2024; the projection of GEM);
- `dual_cone.py`: [`dual_cone_weights`], the dual-cone projection of UPGrad and DualProj (a helper, no method);
- `scaling.py`: [`GradientScaling`], each task's gradient row scaled before the method (`--gradient_scaling`);
- `groups.py`: [`parameter_groups`]; `build.py`: [`build_surgery`].
"""

import importlib
import pkgutil

from .base import METHODS, GradientSurgery, Hyperparameter, method_names
from .build import build_surgery
from .gradvac import DEFAULT_GRADVAC_BETA, GradVac
from .groups import GRANULARITIES, parameter_groups
from .pcgrad import PCGrad
from .rows import SparseRows
from .sum import Sum
from .weighting import GramianWeighting


# Every module of the package is imported, so that each method file registers its class: adding a method is one file.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

# The command-line names, `none` first.
SURGERIES = method_names()

__all__ = [
    "DEFAULT_GRADVAC_BETA",
    "GRANULARITIES",
    "METHODS",
    "SURGERIES",
    "GradVac",
    "GradientSurgery",
    "GramianWeighting",
    "Hyperparameter",
    "PCGrad",
    "SparseRows",
    "Sum",
    "build_surgery",
    "parameter_groups",
]
