"""`--ema_decay`: the average's formula, that it is what is evaluated and saved, and that a killed run resumes it."""

import pytest
import torch
from conftest import cli_args, tiny_datasets
from safetensors.torch import load_file
from test_trainer import KILLED_RUN, KillAtStep, assert_same_parameters, make_trainer, parameters, tiny_model

import run_multitask
from trainer.multitask_trainer import leaderboard_score
from trainer.weight_averaging import TRAINING_WEIGHTS_NAME, WeightAverage


@pytest.fixture(scope="module")
def tokenizer(minilm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


def test_the_average_follows_its_formula():
    weight = torch.nn.Parameter(torch.zeros(3))
    average = WeightAverage([("w", weight)], decay=0.5)
    expected = torch.zeros(3)
    for n, value in enumerate([1.0, 2.0, 4.0, 8.0]):
        weight.data.fill_(value)
        average.update()
        decay = min(0.5, (1 + n) / (10 + n))  # 0.1, 0.18..., then the decay itself
        expected = decay * expected + (1 - decay) * value
    torch.testing.assert_close(average.average[0], expected)
    with average.swapped_in():
        torch.testing.assert_close(weight.detach(), expected)
    assert (weight.detach() == 8.0).all()  # swapped back
    average.apply()
    torch.testing.assert_close(weight.detach(), expected)


def test_the_average_is_evaluated_and_kept_and_a_killed_run_continues_it(tmp_path, tokenizer):
    common = dict(**KILLED_RUN, ema_decay=0.8, gradient_surgery="upgrad")
    full = make_trainer(tmp_path / "full", tokenizer, model=tiny_model(dropout=0.1), **common)
    full.train()
    # The model ends with the average, and the training weights are what the last checkpoint holds beside it.
    checkpoint = tmp_path / "full" / "checkpoint-6"
    trained = load_file(checkpoint / TRAINING_WEIGHTS_NAME)
    averaged = load_file(checkpoint / "model.safetensors")
    name = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.allclose(trained[name], averaged[name])
    final = parameters(full.model)
    torch.testing.assert_close(final[name], dict(zip(full.weight_average.names, full.weight_average.average))[name])

    killed = make_trainer(
        tmp_path / "killed", tokenizer, model=tiny_model(dropout=0.1), callbacks=[KillAtStep(5)], **common
    )
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    resumed = make_trainer(tmp_path / "killed", tokenizer, model=tiny_model(dropout=0.1, seed=1), **common)
    resumed.train(resume_from_checkpoint=str(tmp_path / "killed" / "checkpoint-3"))
    assert resumed.weight_average.updates == full.weight_average.updates == 7
    assert_same_parameters(final, parameters(resumed.model), atol=1e-6)


def test_evaluation_in_training_sees_the_average(tmp_path, tokenizer):
    def trained(output_dir, **kwargs):
        trainer = make_trainer(output_dir, tokenizer, max_steps=4, learning_rate=1.0, **kwargs)
        trainer.eval_dataset = tiny_datasets(seed=1)
        trainer.args.eval_strategy, trainer.args.eval_steps = "steps", 4
        trainer.train()
        return trainer

    trainer = trained(tmp_path / "average", ema_decay=0.9)
    during = [entry for entry in trainer.state.log_history if "eval_overall" in entry]
    assert len(during) == 1
    # After training the model holds the last average: evaluating it again gives training's evaluation.
    trainer._evaluated.clear()
    after = trainer.evaluate()
    assert after["eval_overall"] == pytest.approx(during[0]["eval_overall"], abs=1e-6)
    assert trainer.evaluate(trainer.eval_dataset)["eval_overall"] == pytest.approx(after["eval_overall"], abs=1e-6)
    plain = trained(tmp_path / "plain")
    assert parameters(plain.model).keys() == parameters(trainer.model).keys()
    assert not torch.allclose(plain.model.heads["sst"].classifier.weight, trainer.model.heads["sst"].classifier.weight)


def test_leaderboard_score_is_the_course_formula():
    sst, quora, sts = 0.5, 0.8, 0.6
    assert leaderboard_score([("accuracy", sst), ("accuracy", quora), ("pearson", sts)]) == pytest.approx(
        (sst + quora + (sts + 1) / 2) / 3
    )


@pytest.mark.parametrize("flags, message", [(["--ema_decay", "1"], r"--ema_decay must be in \[0, 1\)")])
def test_wrong_values_are_refused(tiny_checkpoint, tiny_data, tmp_path, flags, message):
    with pytest.raises(ValueError, match=message):
        run_multitask.parse_args(cli_args(tiny_checkpoint, tiny_data, tmp_path, "--do_train", *flags))
