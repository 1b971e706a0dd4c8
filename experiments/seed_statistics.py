# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
Statistics over seeds. Mean and sample standard deviation (n - 1). A difference between two experiments counts as
larger than the seed spread when `|mean_a - mean_b| > s_a + s_b`, the sum of the two standard deviations
(conservative, and meaningful with 2 or 3 seeds); Welch's t-test p-value is given beside it for reference.
"""

import math
import statistics


SPREAD_RULE = "|mean_a - mean_b| > s_a + s_b (sample standard deviations over seeds)"


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1; None for one value), in exact arithmetic: equal values give 0."""
    if not values:
        return None, None
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None


def welch_p(a: list[float], b: list[float]) -> float | None:
    """Welch's t-test p-value; None with fewer than 2 values a side, or no variance at all."""
    if len(a) < 2 or len(b) < 2 or statistics.variance(a) + statistics.variance(b) == 0:
        return None
    from scipy.stats import ttest_ind

    p = float(ttest_ind(a, b, equal_var=False).pvalue)
    return None if math.isnan(p) else p


def compare(a: dict, b: dict) -> dict:
    """`a` against `b`, each `{"mean", "std", "values"}` over seeds: the difference, the spread it is held against
    (None without two seeds a side), whether it is larger (`SPREAD_RULE`), and Welch's p."""
    diff = a["mean"] - b["mean"]
    spread = a["std"] + b["std"] if a["std"] is not None and b["std"] is not None else None
    return {
        "diff": diff,
        "spread": spread,
        "larger_than_spread": abs(diff) > spread if spread is not None else None,
        "welch_p": welch_p(a["values"], b["values"]),
    }
