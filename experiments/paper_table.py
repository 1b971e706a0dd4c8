# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
The paper's Table 1, reproduced: per experiment, mean and spread over seeds of the dev metrics and timings beside
the paper's numbers (`trainer.presets`); every experiment against `naive`, and `combined` against `cosine`, held
against the seed spread (`seed_statistics`); GradVac's adjustments per epoch. `build_table` gives `table.json`,
`format_table` its Markdown.
"""

import shlex

from trainer.presets import PAPER_PRESETS, PRESETS
from trainer.tasks import PAPER_TASKS, metric_keys

from .records import group_by_row, row_of, thread_count
from .seed_statistics import SPREAD_RULE, compare, mean_std
from .tables import cell, metric_titles


METRICS = metric_keys(PAPER_TASKS)  # {task: "eval_<task>_<metric>", ..., "overall": "eval_overall"}
METRIC_TITLES = metric_titles(PAPER_TASKS)


def budget_of(record: dict) -> list[str]:
    """A run's command without what names the run (preset, seed, output dir) and the preset's own flags."""
    argv = shlex.split(record["command"])[2:]
    kept, index = [], 0
    while index < len(argv):
        if argv[index] in ("--preset", "--seed", "--output_dir"):
            index += 2
            continue
        kept.append(argv[index])
        index += 1
    own = list(PRESETS[row_of(record)].reproduction_flags)
    for start in range(len(kept) - len(own) + 1) if own else ():
        if kept[start : start + len(own)] == own:
            del kept[start : start + len(own)]
            break
    return kept


def comparisons(presets: list[str]) -> list[tuple[str, str]]:
    pairs = [(preset, "naive") for preset in presets if preset != "naive" and "naive" in presets]
    if "combined" in presets and "cosine" in presets:
        pairs.append(("combined", "cosine"))
    return pairs


def build_table(records: list[dict]) -> dict:
    """Per experiment, mean and spread over seeds of the metrics and timings; differences against the spread."""
    by_preset = {p: sorted(runs, key=lambda r: r["seed"]) for p, runs in group_by_row(records, PAPER_PRESETS).items()}
    presets = list(by_preset)
    budgets = {shlex.join(budget_of(r)) for r in records}
    experiments = {}
    for preset, runs in by_preset.items():
        metrics = {}
        for name, key in METRICS.items():
            values = [r[key] for r in runs]
            mean, std = mean_std(values)
            metrics[name] = {"mean": mean, "std": std, "values": values, "paper": PRESETS[preset].paper_results[name]}
        timings = {}
        for key in ("time_per_epoch_s", "run_time_s", "wall_time_s", "mean_eval_runtime_per_epoch_s"):
            values = [r[key] for r in runs if r.get(key) is not None]
            mean, std = mean_std(values)
            timings[key] = {"mean": mean, "std": std}
        experiment = {
            "name": PRESETS[preset].title,
            "seeds": [r["seed"] for r in runs],
            "metrics": metrics,
            "steps": sorted({r["steps"] for r in runs}),
            "epochs": sorted({r["epochs"] for r in runs}),
            "timings": timings,
            "threads": [str(thread_count(r) or "?") for r in runs],
            "paper_epoch_minutes": PRESETS[preset].paper_epoch_minutes,
            "conflicts": None,
        }
        surgery_runs = [r for r in runs if r.get("surgery")]
        if surgery_runs:
            epochs = sorted({item["epoch"] for r in surgery_runs for item in r["surgery"]["per_epoch"]})
            per_epoch = []
            for epoch in epochs:
                items = [i for r in surgery_runs for i in r["surgery"]["per_epoch"] if i["epoch"] == epoch]
                adjusted, compared = (
                    mean_std([i["adjustments"] for i in items]),
                    mean_std([i["pairs_compared"] for i in items]),
                )
                pairs = sorted({pair for i in items for pair in i["by_pair"]})
                per_epoch.append({
                    "epoch": epoch,
                    "adjustments": {"mean": adjusted[0], "std": adjusted[1]},
                    "pairs_compared": compared[0],
                    "fraction": adjusted[0] / compared[0] if compared[0] else None,
                    "by_pair": {pair: mean_std([i["by_pair"].get(pair, 0.0) for i in items])[0] for pair in pairs},
                })  # fmt: skip
            experiment["conflicts"] = {"seeds": [r["seed"] for r in surgery_runs], "per_epoch": per_epoch}
        experiments[preset] = experiment

    differences = []
    for a, b in comparisons(presets):
        for name in METRICS:
            ma, mb = experiments[a]["metrics"][name], experiments[b]["metrics"][name]
            paper_diff = PRESETS[a].paper_results[name] - PRESETS[b].paper_results[name]
            differences.append({"a": a, "b": b, "metric": name, **compare(ma, mb), "paper_diff": paper_diff})
    wall = [r["wall_time_s"] for r in records if r.get("wall_time_s")]
    # Core-hours: wall time x the threads a run used (every core for a run whose threads were not recorded).
    cores = [
        r["wall_time_s"] * (thread_count(r) or (r.get("machine") or {}).get("cpu_count") or 1)
        for r in records
        if r.get("wall_time_s")
    ]
    return {
        "rule": SPREAD_RULE,
        "seeds": sorted({r["seed"] for r in records}),
        "budget": min(budgets) if len(budgets) == 1 else None,
        "budgets_differ": sorted(budgets) if len(budgets) > 1 else None,
        "commits": sorted({r["commit"] for r in records if r.get("commit")}),
        "dirty": any(r.get("dirty") for r in records),
        "machine": records[0].get("machine") if records else None,
        "total_wall_time_h": sum(wall) / 3600 if wall else None,
        "total_core_hours": sum(cores) / 3600 if cores else None,
        "experiments": experiments,
        "differences": differences,
        "paper": {preset: PRESETS[preset].paper_results for preset in PAPER_PRESETS},
        "paper_conflicts": "GradVac adjusted ~2,000 of 54,000 gradient pairs (3.7%) in epoch 1, under 0.5% later",
    }


def format_table(table: dict) -> str:
    """`table.md`: the results, the times, the differences against the seed spread and GradVac's adjustments."""
    lines = ["# The paper's Table 1 (dev), reproduced", ""]
    lines.append(
        f"Seeds {', '.join(map(str, table['seeds']))}. Each cell: mean ± sample standard deviation over seeds, and "
        "the paper's number in brackets (bert-base, 10 epochs, 141k Quora pairs). Dev metrics of each run's best "
        "epoch by `eval_overall`."
    )
    if table["budget"] is not None:
        lines += ["", f"Shared flags of every run: `{table['budget']}`."]
    else:
        budgets = "; ".join(f"`{budget}`" for budget in table["budgets_differ"])
        lines += ["", f"**Warning: the runs do not share one budget:** {budgets}"]
    lines += [
        "",
        "| experiment | seeds | " + " | ".join(METRIC_TITLES.values()) + " | steps |",
        "|---|---|" + "---|" * len(METRICS) + "---|",
    ]
    for preset, experiment in table["experiments"].items():
        metrics = [f"{cell(m['mean'], m['std'])} ({m['paper']:.3f})" for m in experiment["metrics"].values()]
        steps = ", ".join(map(str, experiment["steps"]))
        lines.append(f"| {preset} | {len(experiment['seeds'])} | {' | '.join(metrics)} | {steps} |")
    lines += _time_section(table)
    lines += _differences_section(table)
    lines += _adjustments_section(table)
    commits = ", ".join(c[:10] for c in table["commits"]) or "unknown"
    lines += ["", f"Code: commit {commits}" + (" (with uncommitted changes)" if table["dirty"] else "") + "."]
    lines += ["Regenerate: `python -m experiments.reproduce_paper --table_only`; the runs: `--dry_run`.", ""]
    return "\n".join(lines)


def _time_section(table: dict) -> list[str]:
    """Minutes per epoch and per run, and the runs' total time."""
    lines = ["", "## Time", ""]
    lines.append(
        "Minutes, mean ± standard deviation over seeds. Per epoch and per run: the Trainer's `train_runtime` per step "
        "(the training loop with the dev evaluation and checkpoint after every epoch) times the steps; the dev "
        "evaluation's share; wall: every attempt's whole process (start, data, final evaluation). Threads: each "
        "seed's `OMP_NUM_THREADS`; a one-thread run shared the two cores with another run. The paper: one GPU, "
        "bert-base."
    )
    lines += [
        "",
        "| experiment | threads | per epoch | of which dev evaluation | per run | wall per run | paper per epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for preset, experiment in table["experiments"].items():
        timings = experiment["timings"]
        cells = [
            cell(*(None if v is None else v / 60 for v in (timings[key]["mean"], timings[key]["std"])), digits=1)
            for key in ("time_per_epoch_s", "mean_eval_runtime_per_epoch_s", "run_time_s", "wall_time_s")
        ]
        paper = experiment["paper_epoch_minutes"]
        threads = ", ".join(experiment["threads"])
        lines.append(f"| {preset} | {threads} | {' | '.join(cells)} | {paper if paper else ''} |")
    if table["total_wall_time_h"] is not None:
        machine_info = table["machine"] or {}
        lines += [
            "",
            (
                f"All runs together: {table['total_wall_time_h']:.2f} hours of wall time, "
                f"{table['total_core_hours']:.2f} core-hours (wall time x threads; every core for a run whose threads "
                f"were not recorded), on a {machine_info.get('cpu_count')}-core CPU ({machine_info.get('platform')}, "
                f"torch {machine_info.get('torch')})."
            ),
        ]
    return lines


def _differences_section(table: dict) -> list[str]:
    """Each comparison's differences, against the seed spread and the paper's."""
    lines = ["", "## Differences against the seed spread", ""]
    if not table["differences"]:
        lines.append("No comparison: they need `naive` (every experiment against it) or `cosine` and `combined`.")
    else:
        lines.append(
            f"A difference counts as larger than the seed spread when {table['rule']}: **bold**, with the spread "
            "after `vs`. Welch's t-test p in brackets, for reference only (few seeds). The paper's difference beside."
        )
        lines += ["", "| comparison | " + " | ".join(METRIC_TITLES.values()) + " |", "|---|" + "---|" * len(METRICS)]
        by_pair, larger = {}, []
        for item in table["differences"]:
            by_pair.setdefault((item["a"], item["b"]), []).append(item)
        for (a, b), items in by_pair.items():
            cells = [_difference_cell(a, b, item, larger) for item in items]
            lines.append(f"| {a} − {b} | " + " | ".join(cells) + " |")
        if all(item["spread"] is None for item in table["differences"]):
            lines += ["", "Larger than the seed spread: cannot tell, it needs at least 2 seeds per experiment."]
        else:
            lines += ["", "Larger than the seed spread: " + ("; ".join(larger) if larger else "none") + "."]
    return lines


def _difference_cell(a: str, b: str, item: dict, larger: list[str]) -> str:
    """One metric's difference `a - b`: bold when larger than the seed spread (then also listed in `larger`)."""
    text = f"{item['diff']:+.3f}"
    if item["spread"] is not None:
        text += f" vs {item['spread']:.3f}"
    if item["larger_than_spread"]:
        text = f"**{text}**"
        larger.append(
            f"{a} − {b}, {METRIC_TITLES[item['metric']]}: {item['diff']:+.3f} (paper {item['paper_diff']:+.3f})"
        )
    if item["welch_p"] is not None:
        text += f" (p={item['welch_p']:.2g})"
    return f"{text}; paper {item['paper_diff']:+.3f}"


def _adjustments_section(table: dict) -> list[str]:
    """GradVac's adjustments per epoch (the paper's Figure 5), if any run took them."""
    surgery = {p: e["conflicts"] for p, e in table["experiments"].items() if e["conflicts"]}
    if not surgery:
        return []
    lines = ["", "## GradVac adjustments (Figure 5)", ""]
    lines.append(
        "Adjustments of g_i against g_j per epoch (mean over seeds) against the pairs compared: logged steps x "
        f"ordered task pairs. The paper: {table['paper_conflicts']} (its 54,000 is 18,000 steps x 3)."
    )
    lines += [
        "",
        "| experiment | epoch | adjusted | pairs compared | % | by pair i-j |",
        "|---|---|---|---|---|---|",
    ]
    for preset, conflicts in surgery.items():
        for item in conflicts["per_epoch"]:
            fraction = "n/a" if item["fraction"] is None else f"{100 * item['fraction']:.2f}"
            pairs = ", ".join(f"{pair} {count:.0f}" for pair, count in item["by_pair"].items())
            adjusted = cell(item["adjustments"]["mean"], item["adjustments"]["std"], 0)
            compared = f"{item['pairs_compared']:.0f}"
            lines.append(f"| {preset} | {item['epoch']} | {adjusted} | {compared} | {fraction} | {pairs} |")
    return lines
