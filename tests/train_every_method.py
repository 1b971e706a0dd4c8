# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
Trains every configuration of `CONFIGURATIONS` in turn, in one process or one process group (`torchrun`), each into
`<root>/<name>`: `python tests/train_every_method.py ROOT ARGS...`. One launch serves every method, so that
test_methods_on_processes.py compares N processes against one on the union batch for each of them at the cost of
a few launches.
"""

import sys

import run_multitask
from trainer.surgery import SURGERIES


# Every method alone, then the scalings and learned loss weights composed with one.
CONFIGURATIONS = {
    **{method: ["--gradient_surgery", method] for method in SURGERIES},
    "upgrad+unit": ["--gradient_surgery", "upgrad", "--gradient_scaling", "unit"],
    "none+clip": ["--gradient_surgery", "none", "--gradient_scaling", "clip", "--per_task_max_grad_norm", "0.5"],
    "pcgrad+uncertainty": ["--gradient_surgery", "pcgrad", "--loss_weighting", "uncertainty"],
    "cagrad+dwa": ["--gradient_surgery", "cagrad", "--loss_weighting", "dwa", "--dwa_period_steps", "1"],
    "mgda+weights": ["--gradient_surgery", "mgda", "--task_weights", "sst=2", "sts=0.5"],
    # The regularisers of the heads (without dropout R-Drop's divergence is 0, but the batch runs twice).
    "upgrad+regularisers": ["--gradient_surgery", "upgrad", "--rdrop", "1", "--label_smoothing", "0.1"],
}
# Printed to stderr as each configuration starts, so that a failure names it.
STARTING = "train_every_method: starting "
# Weight averaging keeps whole weights: one process or DDP, not FSDP.
NOT_UNDER_FSDP = {"pcgrad+ema": ["--gradient_surgery", "pcgrad", "--ema_decay", "0.5", "--rdrop", "sts=1"]}


def main(argv: list[str]) -> None:
    root, common = argv[0], argv[1:]
    configurations = CONFIGURATIONS if "--fsdp" in common else {**CONFIGURATIONS, **NOT_UNDER_FSDP}
    for name, flags in configurations.items():
        print(f"{STARTING}{name}", file=sys.stderr, flush=True)
        run_multitask.main([*common, *flags, "--output_dir", f"{root}/{name}"])


if __name__ == "__main__":
    main(sys.argv[1:])
