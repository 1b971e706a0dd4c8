# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
How much of each task goes into the step, before any method: the gradient scalings (`--gradient_scaling`
unit|mean|clip, on the Gramian) composed with every surgery method, and the loss weightings (`--task_weights`,
`--loss_weighting uncertainty|dwa`) against their formulas and through real training runs, resumed exactly.
"""

import json
import math

import pytest
import torch
from conftest import cli_args
from safetensors.torch import load_file
from test_surgery import GROUPS, random_grads

import run_multitask
from trainer.loss_weighting import DynamicWeightAverage, LossWeighting, UncertaintyWeighting
from trainer.surgery import SURGERIES, build_surgery
from trainer.surgery.scaling import GradientScaling


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread each (conftest.py)


def expected_scales(grads, mode, max_norm=1.0):
    norms = grads.norm(dim=1)
    if mode == "unit":
        return 1 / norms
    if mode == "mean":
        return norms.mean() / norms
    return torch.clamp(max_norm / norms, max=1.0)


@pytest.mark.parametrize("mode", ["unit", "mean", "clip"])
@pytest.mark.parametrize("method", SURGERIES)
def test_a_scaling_composes_with_every_method(mode, method):
    """Scaling the rows, then the method, equals the method on the rows scaled by hand, group by group."""
    grads = random_grads(3, 7) * torch.tensor([[0.01], [1.0], [30.0]], dtype=torch.float64)  # badly scaled tasks
    scaling = GradientScaling(mode, max_norm=2.0)
    scaled = grads * expected_scales(grads, mode, 2.0).unsqueeze(1)
    ours = build_surgery(method, 3, GROUPS, generator=torch.Generator().manual_seed(3), scaling=scaling)
    reference = build_surgery(method, 3, GROUPS, generator=torch.Generator().manual_seed(3))
    # The same arithmetic but for the order of the scalings (and the methods' eps against other norms): ~1e-12.
    torch.testing.assert_close(ours(grads), reference(scaled), rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(ours.adjusted(grads), reference.adjusted(scaled), rtol=1e-7, atol=1e-10)


def test_scaling_formulas_and_zero_rows():
    grads = random_grads(3, 1)
    grads[1] = 0
    gramian = (grads @ grads.T).unsqueeze(0)
    norms = grads.norm(dim=1)
    unit = GradientScaling("unit").scales(gramian)
    assert unit[1] == 0 and torch.allclose(unit[[0, 2]], 1 / norms[[0, 2]])
    mean = GradientScaling("mean").scales(gramian)
    assert torch.allclose(mean[[0, 2]], norms.mean() / norms[[0, 2]])
    clip = GradientScaling("clip", max_norm=float(norms[0]) / 2).scales(gramian)
    assert torch.allclose(clip[0], torch.tensor(0.5, dtype=torch.float64)) and clip[1] == 1
    assert GradientScaling("none").scales(gramian) is None
    with pytest.raises(ValueError, match="Unknown gradient scaling 'half'"):
        GradientScaling("half")


def test_uncertainty_weighting_is_its_formula():
    weighting = UncertaintyWeighting(["a", "b"], {"b": 3.0})
    with torch.no_grad():
        weighting.log_vars.copy_(torch.tensor([0.5, -1.0]))
    loss = torch.tensor(2.0)
    for index, (log_var, factor) in enumerate([(0.5, 1.0), (-1.0, 3.0)]):
        expected = factor * 2.0 * math.exp(-log_var) / 2 + log_var / 2
        assert weighting.weighted(index, loss).item() == pytest.approx(expected)
    (weighting.weighted(0, loss) + weighting.weighted(1, loss)).backward()
    assert torch.allclose(weighting.log_vars.grad, torch.tensor([-math.exp(-0.5) + 0.5, -3 * math.exp(1.0) + 0.5]))


def test_dwa_follows_the_ratio_of_the_last_two_epochs():
    dwa = DynamicWeightAverage(["a", "b", "c"], temperature=2.0)
    epochs = [[1.0, 1.0, 1.0], [0.5, 0.9, 1.0], [0.2, 0.9, 0.5]]
    for epoch, losses in enumerate(epochs):
        dwa.start_period(epoch)
        assert torch.equal(dwa.dynamic, torch.ones(3, dtype=torch.float64)) or epoch == 2
        for _ in range(2):
            for index, loss in enumerate(losses):
                dwa.observe(index, torch.tensor(loss))
    dwa.start_period(3)
    ratios = torch.tensor(epochs[2]) / torch.tensor(epochs[1])
    expected = 3 * torch.softmax(ratios / 2.0, 0)
    assert torch.allclose(dwa.dynamic.float(), expected)
    restored = DynamicWeightAverage(["a", "b", "c"])
    restored.load_state_dict(dwa.state_dict())
    assert restored.current_weights() == dwa.current_weights() and restored.period == 3


def test_dwa_over_periods_of_steps_follows_the_logged_losses(tiny_checkpoint, tiny_data, tmp_path):
    """`--dwa_period_steps 1`: from step 3, each step's weights are DWA's of the two steps before, as logged."""
    output_dir = tmp_path / "run"
    run_multitask.main(
        cli_args(tiny_checkpoint, tiny_data, output_dir, "--do_train", "--max_steps", "5", "--preset", "naive",
                 "--loss_weighting", "dwa", "--dwa_period_steps", "1", "--learning_rate", "1e-2",
                 "--logging_steps", "1", "--save_strategy", "no")
    )  # fmt: skip
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    logs = {e["step"]: e for e in history if "loss" in e}
    tasks = ["sst", "para", "sts"]
    for step in (1, 2):
        assert all(logs[step][f"loss_weight/{task}"] == 1 for task in tasks)
    for step in (3, 4, 5):
        ratios = torch.tensor([logs[step - 1][f"loss_{t}"] / logs[step - 2][f"loss_{t}"] for t in tasks])
        expected = 3 * torch.softmax(ratios.double() / 2.0, 0)
        logged = torch.tensor([logs[step][f"loss_weight/{t}"] for t in tasks], dtype=torch.float64)
        assert torch.allclose(logged, expected, rtol=1e-3), step  # the logged losses are rounded to 4 digits
    assert not torch.allclose(logged, torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="--dwa_period_steps must be 0"):
        run_multitask.parse_args(
            ["--output_dir", "/tmp/unused", "--loss_weighting", "dwa", "--dwa_period_steps", "-1"]
        )
    with pytest.raises(ValueError, match="needs --loss_weighting dwa"):  # it would change nothing
        run_multitask.parse_args(["--output_dir", "/tmp/unused", "--dwa_period_steps", "50"])


def test_static_weights_are_checked():
    with pytest.raises(ValueError, match=r"--task_weights: 'qqp' is not one of the tasks"):
        LossWeighting(["sst", "sts"], {"qqp": 1.0})
    with pytest.raises(ValueError, match=r"--task_weights 'sst=-1': expected task=weight"):
        run_multitask.parse_args(["--output_dir", "/tmp/unused", "--task_weights", "sst=-1"])


def test_a_task_of_weight_zero_trains_nothing_of_its_own(tiny_checkpoint, tiny_data, tmp_path):
    """`--task_weights sts=0`: the STS head gets no gradient (AdamW without decay leaves it exactly as loaded)."""
    output_dir = tmp_path / "run"
    run_multitask.main(
        cli_args(tiny_checkpoint, tiny_data, output_dir, "--do_train", "--max_steps", "2", "--preset", "naive",
                 "--task_weights", "sts=0", "para=2", "--save_steps", "1", "--logging_steps", "1")
    )  # fmt: skip
    before = load_file(output_dir / "checkpoint-1" / "model.safetensors")
    after = load_file(output_dir / "model.safetensors")
    sts = [key for key in after if key.startswith("heads.sts.")]
    para = [key for key in after if key.startswith("heads.para.")]
    assert sts and all(torch.equal(before[key], after[key]) for key in sts)
    assert any(not torch.equal(before[key], after[key]) for key in para)
    logged = [e for e in json.loads((output_dir / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert logged[0]["loss_weight/sts"] == 0 and logged[0]["loss_weight/para"] == 2
    assert "Task loss weights: `static` (sts 0.0, para 2.0)" in (output_dir / "README.md").read_text()


@pytest.mark.parametrize("weighting", ["uncertainty", "dwa", "dwa_steps"])
def test_learned_loss_weights_resume_exactly(weighting, tiny_checkpoint, tiny_data, tmp_path):
    """4 steps straight against 2 steps, then a resume for 2 more: the same weights, log-variances or DWA state
    (`dwa_steps`: DWA over periods of one step, so that its weights change before and after the resume)."""
    flags = {
        "uncertainty": ["--loss_weighting", "uncertainty"],
        "dwa": ["--loss_weighting", "dwa"],
        "dwa_steps": ["--loss_weighting", "dwa", "--dwa_period_steps", "1"],
    }[weighting]
    common = ["--do_train", "--max_steps", "4", "--preset", "naive", *flags,
              "--learning_rate", "1e-2", "--save_steps", "2", "--logging_steps", "1", "--max_train_samples", "8",
              "--per_device_train_batch_size", "2"]  # fmt: skip
    straight = tmp_path / "straight"
    run_multitask.main(cli_args(tiny_checkpoint, tiny_data, straight, *common))
    resumed = tmp_path / "resumed"
    run_multitask.main(
        cli_args(tiny_checkpoint, tiny_data, resumed, *common, "--resume_from_checkpoint",
                 str(straight / "checkpoint-2"))
    )  # fmt: skip
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    state_a = torch.load(straight / "checkpoint-4" / "loss_weighting.pt", weights_only=True)
    state_b = torch.load(resumed / "checkpoint-4" / "loss_weighting.pt", weights_only=True)
    assert state_a.keys() == state_b.keys()
    if weighting == "uncertainty":  # the log-variances were trained, and their AdamW moments resumed
        assert not torch.equal(state_a["log_vars"], torch.zeros(3))
        moments = [state["optimizer"]["state"][0] for state in (state_a, state_b)]
        assert all(torch.equal(moments[0][key], moments[1][key]) for key in ("exp_avg", "exp_avg_sq"))
        state_a, state_b = ({"log_vars": state["log_vars"]} for state in (state_a, state_b))
    if weighting == "dwa_steps":  # the weights moved, before the resume and after it
        assert not torch.equal(state_a["dynamic"], torch.ones(3, dtype=torch.float64))
    for key, value in state_a.items():
        assert torch.equal(value, state_b[key]) if torch.is_tensor(value) else value == state_b[key], key
    history = json.loads((straight / "trainer_state.json").read_text())["log_history"]
    assert all(f"loss_weight/{task}" in history[0] for task in ("sst", "para", "sts"))
