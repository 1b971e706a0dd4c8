"""The regularising head options: label smoothing and R-Drop, their formulas, checks and command-line flags."""

import pytest
import torch
from conftest import tiny_args, tiny_config, train
from torch.nn import functional as F

import run_multitask
from modeling_bert_pals import BertPalsConfig, BertPalsForMultitask
from modeling_bert_pals.configuration_bert_pals import DEFAULT_TASKS


def tasks_with(**options):
    """The paper's tasks, with `{task: {option: value}}` added to their entries."""
    return {task: {**spec, **options.get(task, {})} for task, spec in DEFAULT_TASKS.items()}


def batch(task, rows=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    inputs = {
        "input_ids": torch.randint(1, 99, (rows, 7), generator=generator),
        "attention_mask": torch.ones(rows, 7, dtype=torch.long),
    }
    if task != "sst":
        inputs["input_ids_b"] = torch.randint(1, 99, (rows, 5), generator=generator)
        inputs["attention_mask_b"] = torch.ones(rows, 5, dtype=torch.long)
    if task == "sts":
        inputs["labels"] = torch.rand(rows, generator=generator) * 5
    else:
        inputs["labels"] = torch.randint(0, 5 if task == "sst" else 2, (rows,), generator=generator)
    return inputs


def doubled(inputs):
    return {key: torch.cat([value, value]) for key, value in inputs.items() if key != "labels"}


def symmetric_kl(logits_1, logits_2):
    """0.5 * (KL(p1 || p2) + KL(p2 || p1)), batch mean, written with torch's own `kl_div`."""
    log_p1, log_p2 = F.log_softmax(logits_1, -1), F.log_softmax(logits_2, -1)
    kl_12 = F.kl_div(log_p2, log_p1, log_target=True, reduction="batchmean")
    kl_21 = F.kl_div(log_p1, log_p2, log_target=True, reduction="batchmean")
    return 0.5 * (kl_12 + kl_21)


@pytest.mark.parametrize("task", ["sst", "para", "sts"])
def test_rdrop_loss_equals_its_formula(task):
    alpha = 0.7
    torch.manual_seed(0)
    model = BertPalsForMultitask(
        tiny_config(tasks=tasks_with(**{task: {"rdrop": alpha}}), hidden_dropout_prob=0.3, pal_decoder_init="normal")
    ).train()
    inputs = batch(task)
    torch.manual_seed(1)
    output = model(task, **inputs)
    # The same pass by hand: the doubled batch (the same dropout masks, from the same seed), each copy's loss.
    torch.manual_seed(1)
    logits = model(task, **doubled(inputs)).logits
    logits_1, logits_2 = logits.chunk(2)
    labels = inputs["labels"]
    if task == "sts":
        losses = [F.mse_loss(half, labels) for half in (logits_1, logits_2)]
        divergence = ((logits_1 - logits_2) ** 2).mean()
    else:
        losses = [F.cross_entropy(half, labels) for half in (logits_1, logits_2)]
        divergence = symmetric_kl(logits_1, logits_2)
    assert not torch.allclose(logits_1, logits_2)  # the two copies did get different dropout masks
    expected = 0.5 * (losses[0] + losses[1]) + alpha * divergence
    torch.testing.assert_close(output.loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(output.logits, logits_1)
    # Its gradient reaches the shared encoder and the task's head.
    output.loss.backward()
    assert model.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def test_rdrop_is_the_plain_loss_in_evaluation_and_without_dropout():
    inputs = batch("sst")
    torch.manual_seed(0)
    plain = BertPalsForMultitask(
        tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    )
    torch.manual_seed(0)
    with_rdrop = BertPalsForMultitask(
        tiny_config(
            tasks=tasks_with(sst={"rdrop": 2.0}),
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            classifier_dropout=0.0,
        )
    )
    # No dropout: both copies are the same, the divergence is 0 and the loss is the plain one.
    torch.testing.assert_close(with_rdrop.train()(**inputs, task="sst").loss, plain.train()(**inputs, task="sst").loss)
    # In evaluation the batch runs once.
    assert with_rdrop.eval()(**inputs, task="sst").logits.shape[0] == len(inputs["labels"])


@pytest.mark.parametrize("task, classes", [("sst", 5), ("para", 2)])
def test_label_smoothing_is_the_cross_entropy_of_smoothed_targets(task, classes):
    smoothing = 0.2
    torch.manual_seed(0)
    model = BertPalsForMultitask(tiny_config(tasks=tasks_with(**{task: {"label_smoothing": smoothing}}))).eval()
    inputs = batch(task)
    output = model(task, **inputs)
    targets = F.one_hot(inputs["labels"], classes).float() * (1 - smoothing) + smoothing / classes
    expected = -(targets * F.log_softmax(output.logits, -1)).sum(-1).mean()
    torch.testing.assert_close(output.loss, expected)
    assert not torch.isclose(output.loss, F.cross_entropy(output.logits, inputs["labels"]))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"sst": {"label_smoothing": 1.0}}, r"Task 'sst' \(classification\): label_smoothing 1.0 is outside \[0, 1\)"),
        ({"sts": {"label_smoothing": 0.1}}, r"Task 'sts' \(pair_regression\): a pair_regression task takes no"),
        ({"para": {"rdrop": -1}}, r"Task 'para' \(pair_classification\): rdrop -1 is outside \[0, inf\)"),
        ({"sst": {"rdrop": "1"}}, r"rdrop must be a number; got '1'"),
        ({"sst": {"encoding": "cross"}}, r"encoding 'cross' is not one of \('single',\)"),
    ],
)
def test_wrong_option_values_are_refused_naming_the_task(options, message):
    with pytest.raises(ValueError, match=message):
        BertPalsConfig(tasks=tasks_with(**options))


def test_a_config_written_before_the_option_records_still_loads():
    # Old command lines wrote a bare `--pair_encoding separate` / `--pair_features concat` into single-sentence tasks.
    config = BertPalsConfig(tasks=tasks_with(sst={"encoding": "separate", "features": "concat"}))
    assert type(BertPalsForMultitask(tiny_config(tasks=config.tasks)).heads["sst"]).__name__ == (
        "SentenceClassificationHead"
    )


def test_the_command_line_sets_the_options_per_task(tiny_checkpoint, data_dir, tmp_path):
    def config_of(*flags):
        model_args, data_args, _ = run_multitask.parse_args(tiny_args(tiny_checkpoint, data_dir, tmp_path, *flags))
        return run_multitask.build_config(model_args, data_args.tasks)

    tasks = config_of("--label_smoothing", "0.1", "--rdrop", "sst=1", "sts=0.5").tasks
    assert tasks["sst"]["label_smoothing"] == tasks["para"]["label_smoothing"] == 0.1
    assert "label_smoothing" not in tasks["sts"]  # a bare value goes only to the tasks whose kind takes it
    assert (tasks["sst"]["rdrop"], tasks["sts"]["rdrop"]) == (1.0, 0.5) and "rdrop" not in tasks["para"]
    with pytest.raises(ValueError, match=r"--rdrop sst=strong: 'strong' is not a number"):
        config_of("--rdrop", "sst=strong")
    with pytest.raises(ValueError, match=r"--label_smoothing sts=0.1: Task 'sts'"):
        config_of("--label_smoothing", "sts=0.1")


@pytest.mark.slow
def test_a_saved_model_trains_on_with_new_regularisers_but_keeps_its_heads(tiny_checkpoint, tiny_data, tmp_path):
    first = tmp_path / "first"
    train(tiny_checkpoint, tiny_data, first, "--use_pals", "True", "--gradient_surgery", "upgrad", "--rdrop", "sst=1")
    config = BertPalsConfig.from_pretrained(first)
    assert config.tasks["sst"]["rdrop"] == 1.0
    # The loss options do not shape the weights: a saved model takes others ...
    second = tmp_path / "second"
    train(str(first), tiny_data, second, "--rdrop", "sst=0", "--label_smoothing", "0.1")
    tasks = BertPalsConfig.from_pretrained(second).tasks
    assert (tasks["sst"]["rdrop"], tasks["sst"]["label_smoothing"], tasks["para"]["label_smoothing"]) == (0, 0.1, 0.1)
    # ... but not another encoding.
    with pytest.raises(ValueError, match="would change which weights it has"):
        train(str(first), tiny_data, tmp_path / "third", "--pair_encoding", "para=cross")
