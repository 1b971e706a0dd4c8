# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""A regular (non-editable) install works: the wheel carries the model-card template and the metric, and the
installed package trains, writes its card and saves a model that loads with remote code."""

import json
import os
import site
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, tiny_args


@pytest.mark.slow
def test_the_installed_wheel_trains_writes_its_card_and_reloads(tiny_checkpoint, data_dir, tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(REPO)],
        check=True,
    )
    (wheel,) = dist.glob("bert_pals_multitask-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for packaged in (
        "trainer/model_card_template.md",
        "trainer/metrics/cs224n_metric.py",
        "run_multitask.py",
        "modeling_bert_pals/modeling_bert_pals.py",
        "trainer/tasks.py",
    ):
        assert packaged in names, f"{packaged} is not in {wheel.name}"

    # A fresh environment whose dependencies (torch, transformers, ...) come from this one's site-packages, in a
    # virtual environment or not: `--system-site-packages` alone would give the base interpreter's, without them.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    fresh_site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], check=True, capture_output=True,
        text=True,
    ).stdout.strip()  # fmt: skip
    (Path(fresh_site) / "this_environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)

    # Outside the repository, with the repository off sys.path: only the installed package can be imported.
    work = tmp_path / "work"
    work.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), OMP_NUM_THREADS="1")
    located = subprocess.run(
        [python, "-c", "import trainer, run_multitask; print(trainer.__file__)"],
        cwd=work,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert located.startswith(str(venv)), located
    output_dir = tmp_path / "run"
    subprocess.run(
        [
            python,
            "-m",
            "run_multitask",
            *tiny_args(tiny_checkpoint, data_dir, output_dir),
            "--do_train", "--do_eval", "--max_train_samples", "16", "--max_eval_samples", "32", "--max_steps",
            "2", "--per_device_train_batch_size", "4", "--save_strategy", "no",
        ],
        cwd=work,
        env=env,
        check=True,
    )  # fmt: skip
    card = (output_dir / "README.md").read_text()
    assert "## Results (dev)" in card and "STS similarity" in card
    results = json.loads((output_dir / "all_results.json").read_text())
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["modeling_bert_pals"] = None  # the saved code files alone
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(output_dir)!r}, trust_remote_code=True)
        print(type(model).__name__, sorted(model.config.tasks))
        """
    )
    loaded = subprocess.run([python, "-c", script], cwd=work, env=env, check=True, capture_output=True, text=True)
    assert loaded.stdout.split()[0] == "BertPalsForMultitask"
    assert "eval_overall" in results
