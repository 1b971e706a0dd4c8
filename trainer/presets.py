# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
The presets: one [`Preset`] entry says everything the project knows about one.

`run_multitask.py --preset NAME` takes its `values` as command-line defaults (explicit flags win); the paper
reproduction (`experiments/reproduce_paper.py`) runs every preset that has `paper` numbers, with its
`reproduction_flags`, and sets its table beside those numbers; the recipe ablation trains a row on a preset for the
preset's own `epochs`; `benchmarks/bench_presets.py` times the paper's presets against `paper_epoch_minutes`. Adding a
preset is one entry below.
"""

from dataclasses import dataclass, field

from .tasks import OVERALL, PAPER_TASKS


@dataclass(frozen=True)
class Preset:
    r"""
    One preset, completely.

    Args:
        name (`str`):
            `--preset NAME`, and the name of its runs (`results/paper/runs/<name>-seed<k>.json`).
        title (`str`):
            Its display name (the paper's name of the experiment, for the reproduction's table).
        values (`dict`):
            `{flag: value}` without the dashes: command-line defaults (a list is one flag's values).
        paper (`tuple[float, ...]`, *optional*):
            The paper's dev results (its Table 1): one per task of `PAPER_TASKS`, in order, then the overall mean.
            Only the paper's experiments have them; the reproduction runs those.
        paper_epoch_minutes (`float`, *optional*):
            The paper's training time per epoch (one GPU, bert-base), where it gives one.
        reproduction_flags (`tuple[str, ...]`):
            What the reproduction adds to `--preset NAME` so that every run has one budget (see
            `experiments/reproduce_paper.py`, "One budget").
    """

    name: str
    title: str
    values: dict = field(default_factory=dict)
    paper: tuple[float, ...] | None = None
    paper_epoch_minutes: float | None = None
    reproduction_flags: tuple[str, ...] = ()

    def __post_init__(self):
        if self.paper is not None and len(self.paper) != len(PAPER_TASKS) + 1:
            raise ValueError(
                f"Preset {self.name!r}: `paper` needs one number per task of {PAPER_TASKS}, then overall."
            )

    @property
    def epochs(self) -> float | None:
        """The epochs the preset trains for (None: the Trainer's default, or the caller's budget)."""
        return self.values.get("num_train_epochs")

    @property
    def paper_results(self) -> dict[str, float] | None:
        """`{task: number, ..., "overall": number}` of the paper's table, or None for a preset not in it."""
        return None if self.paper is None else dict(zip((*PAPER_TASKS, OVERALL), self.paper))


def fine_tuned(use_pals: bool, sts_head: str, gradient_surgery: str) -> dict:
    """The values of the paper's multitask experiments: round-robin over the tasks, BERT fine-tuned, summed losses;
    they differ in what the paper varies (PALs, the STS head, gradient surgery)."""
    return dict(use_pals=use_pals, sts_head=[sts_head], task_schedule="round_robin", gradient_surgery=gradient_surgery)


PRESETS = {
    preset.name: preset
    for preset in (
        # Frozen BERT, one trainable layer per task, the tasks one after the other. The reproduction gives it the
        # others' round-robin budget: no trainable parameter is shared, so it is still the separate baseline.
        Preset(
            "baseline",
            "Baseline (separate; frozen encoder)",
            dict(
                use_pals=False,
                sts_head=["linear"],
                freeze_encoder=True,
                task_schedule="sequential",
                gradient_surgery="none",
                learning_rate=1e-3,
            ),
            paper=(0.516, 0.783, 0.361, 0.553),
            reproduction_flags=("--task_schedule", "round_robin"),
        ),
        Preset(
            "naive",
            "Naive multitask",
            fine_tuned(use_pals=False, sts_head="linear", gradient_surgery="none"),
            paper=(0.498, 0.765, 0.364, 0.542),
            paper_epoch_minutes=47,
        ),
        Preset(
            "gradvac",
            "Gradient Vaccine",
            fine_tuned(use_pals=False, sts_head="linear", gradient_surgery="gradvac"),
            paper=(0.494, 0.771, 0.367, 0.544),
        ),
        Preset(
            "pals",
            "PALs",
            fine_tuned(use_pals=True, sts_head="linear", gradient_surgery="none"),
            paper=(0.501, 0.773, 0.363, 0.546),
        ),
        Preset(
            "cosine",
            "Cosine similarity",
            fine_tuned(use_pals=False, sts_head="cosine", gradient_surgery="none"),
            paper=(0.492, 0.769, 0.757, 0.673),
        ),
        Preset(
            "combined",
            "Combined (PALs + GradVac + cosine)",
            fine_tuned(use_pals=True, sts_head="cosine", gradient_surgery="gradvac"),
            paper=(0.499, 0.787, 0.727, 0.671),
            paper_epoch_minutes=120,
        ),
        # Beyond the paper: the recipe for all-MiniLM-L6-v2 chosen by dev overall, for 60 minutes of training on a
        # 2-core CPU (README, "Beyond the paper"; experiments/recipe_ablation.py: what each part buys). STS keeps the
        # paper's MSE on the cosine: with two epochs it beat CoSENT on dev.
        Preset(
            "best",
            "The recipe beyond the paper (mean pooling, Quora cross-encoded, lr 1e-4 with warm-up, LLRD, 2 epochs)",
            dict(
                use_pals=False,
                sts_head=["cosine"],
                pooling="mean",
                pair_encoding=["para=cross"],
                loss=["sts=mse"],
                task_schedule="round_robin",
                gradient_surgery="none",
                learning_rate=1e-4,
                warmup_steps=0.1,
                layerwise_lr_decay=0.9,
                num_train_epochs=2,
            ),
        ),
    )
}
# The paper's experiments, in the order of its table.
PAPER_PRESETS = tuple(name for name, preset in PRESETS.items() if preset.paper is not None)
