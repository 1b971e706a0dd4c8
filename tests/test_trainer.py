# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""MultitaskTrainer on a tiny random BERT: per-task backward passes give the summed loss's gradients, accumulation
windows equal larger batches, and a killed run resumes to the same weights."""

import pytest
import torch
from conftest import tiny_config, tiny_datasets
from transformers import AutoTokenizer, TrainerCallback

from modeling_bert_pals import BertPalsForMultitask
from trainer.multitask_trainer import SURGERY_STATE_NAME, MultitaskTrainer
from trainer.surgery import METHODS, SURGERIES
from trainer.training_args import MultitaskTrainingArguments


@pytest.fixture(scope="module")
def tokenizer(minilm_path):
    return AutoTokenizer.from_pretrained(minilm_path)  # only pads: the ids are random


def tiny_model(dropout=0.0, seed=0):
    torch.manual_seed(seed)
    config = tiny_config(
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        classifier_dropout=dropout,
        pal_decoder_init="normal",
        sts_head="linear",
    )
    return BertPalsForMultitask(config)


def make_trainer(tmp_path, tokenizer, model=None, callbacks=None, **kwargs):
    defaults = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=0.1,
        optim="sgd",
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=0,
        use_cpu=True,
        dataloader_pin_memory=False,
    )
    defaults.update(kwargs)
    args = MultitaskTrainingArguments(**defaults)
    return MultitaskTrainer(
        model=model if model is not None else tiny_model(),
        args=args,
        train_dataset=tiny_datasets(),
        processing_class=tokenizer,
        callbacks=callbacks,
    )


def parameters(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def assert_same_parameters(a, b, atol=1e-6):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=atol, msg=f"{name} differs")


class CaptureGradients(TrainerCallback):
    """The gradients the optimizer is about to apply, at every step."""

    def __init__(self):
        self.steps = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.steps.append({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})


@pytest.mark.parametrize("mixed_precision", ["no", "bf16"])
def test_per_task_backward_equals_summed_loss_gradient(tmp_path, tokenizer, mixed_precision):
    capture = CaptureGradients()
    trainer = make_trainer(tmp_path, tokenizer, callbacks=[capture], max_steps=1, bf16=mixed_precision == "bf16")
    step = next(iter(trainer.get_train_dataloader()))
    reference = tiny_model()
    trainer.train()

    # One backward of the summed loss. Each task's forward gets its own autocast region: within one region the bf16
    # copy of a weight is cached and shared, and the tasks' gradients would then be summed in bf16 before reaching
    # the fp32 weight (the trainer sums them in fp32, which is the more exact of the two).
    losses = []
    for batch in step.values():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed_precision == "bf16"):
            losses.append(reference(**batch).loss)
    sum(losses).backward()
    expected = {n: p.grad for n, p in reference.named_parameters() if p.grad is not None}
    got = capture.steps[0]
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("surgery", ["none", "pcgrad", "gradvac"])
def test_gradient_accumulation_equals_one_double_batch(tmp_path, tokenizer, surgery):
    single = make_trainer(tmp_path / "single", tokenizer, per_device_train_batch_size=4, gradient_surgery=surgery)
    single.train()
    accumulated = make_trainer(
        tmp_path / "accumulated",
        tokenizer,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        gradient_surgery=surgery,
    )
    accumulated.train()
    assert_same_parameters(parameters(single.model), parameters(accumulated.model))
    assert single.state.global_step == accumulated.state.global_step == 3
    if surgery == "gradvac":
        torch.testing.assert_close(single.surgery.state_dict()["phi_hat"], accumulated.surgery.state_dict()["phi_hat"])


def test_task_parameters_get_only_their_own_gradient(tmp_path, tokenizer):
    """With one task per step, the other tasks' parameters get no gradient at all (so AdamW leaves them alone)."""
    capture = CaptureGradients()
    trainer = make_trainer(tmp_path, tokenizer, callbacks=[capture], task_schedule="sequential", max_steps=8)
    trainer.train()
    model = trainer.model
    for grads in capture.steps:
        tasks = {model.parameter_task(name) for name in grads} - {None}
        assert len(tasks) == 1
        assert all(model.parameter_task(n) in tasks for n in grads if model.parameter_task(n) is not None)


def test_frozen_encoder_trains_only_task_parameters(tmp_path, tokenizer):
    trainer = make_trainer(tmp_path, tokenizer, freeze_encoder=True)
    before = parameters(trainer.model)
    trainer.train()
    after = parameters(trainer.model)
    for name in before:
        changed = not torch.equal(before[name], after[name])
        assert changed == (trainer.model.parameter_task(name) is not None), name


def test_per_task_losses_are_logged(tmp_path, tokenizer):
    trainer = make_trainer(tmp_path, tokenizer, logging_steps=1, gradient_surgery="gradvac")
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 3
    for entry in logs:
        assert {"loss_sst", "loss_para", "loss_sts"} <= entry.keys()
        assert entry["loss"] == pytest.approx(entry["loss_sst"] + entry["loss_para"] + entry["loss_sts"], rel=1e-3)
        assert "surgery/sst-para/cosine" in entry and "surgery/sts-para/adjustments" in entry


def test_non_finite_loss_stops_with_a_clear_error(tmp_path, tokenizer):
    model = tiny_model()
    with torch.no_grad():
        model.heads["sts"].classifier.weight.fill_(float("nan"))
    trainer = make_trainer(tmp_path, tokenizer, model=model)
    before = parameters(model)
    with pytest.raises(FloatingPointError, match="Non-finite training loss at step 0.*weights were not updated"):
        trainer.train()
    after = parameters(model)
    assert all(torch.equal(before[n], after[n]) or torch.isnan(before[n]).any() for n in before)


class KillAtStep(TrainerCallback):
    """Simulates a killed process: training stops dead after `step`, without saving anything."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


# A run that saves at step 3 of 7 (and is killed after it, at step 5), with AdamW and a decaying learning rate.
KILLED_RUN = dict(
    max_steps=7,
    save_strategy="steps",
    save_steps=3,
    learning_rate=1e-3,
    optim="adamw_torch",
    lr_scheduler_type="linear",
)


@pytest.mark.parametrize("surgery", ["none", "gradvac", "nash_mtl"])
def test_killed_run_resumes_to_the_same_weights(tmp_path, tokenizer, surgery):
    """Mid-epoch (an epoch here is 10 steps), with dropout, AdamW, a decaying learning rate, and the state of the
    methods that keep one (GradVac's targets, Nash-MTL's previous weights)."""
    common = dict(**KILLED_RUN, max_grad_norm=1.0, gradient_surgery=surgery, gradvac_beta=0.5)
    full = make_trainer(tmp_path / "full", tokenizer, model=tiny_model(dropout=0.1), **common)
    assert len(full.get_train_dataloader()) == 10
    full.train()

    killed = make_trainer(
        tmp_path / "killed", tokenizer, model=tiny_model(dropout=0.1), callbacks=[KillAtStep(5)], **common
    )
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    checkpoint = tmp_path / "killed" / "checkpoint-3"
    assert checkpoint.is_dir() and not (tmp_path / "killed" / "checkpoint-6").exists()
    assert (checkpoint / SURGERY_STATE_NAME).is_file() == METHODS[surgery].has_state

    resumed = make_trainer(tmp_path / "killed", tokenizer, model=tiny_model(dropout=0.1, seed=1), **common)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 7
    assert_same_parameters(parameters(full.model), parameters(resumed.model), atol=1e-6)
    if surgery == "gradvac":
        full_state, resumed_state = full.surgery.state_dict(), resumed.surgery.state_dict()
        torch.testing.assert_close(full_state["phi_hat"], resumed_state["phi_hat"], rtol=0, atol=1e-12)
        assert (full_state["phi_hat"] != 0).any()


@pytest.mark.parametrize("surgery", SURGERIES)
def test_fp16_loss_scaling_does_not_change_the_update(tmp_path, tokenizer, surgery):
    """With a GradScaler (as fp16 on a GPU sets up), surgery sees the unscaled task gradients and the optimizer the
    unscaled result. Scaling by a power of two is exact in float32, so the weights must match the unscaled run.
    (On the CPU, Accelerate sets up no scaler for fp16, so the test installs one; the optimizer step unscales.)"""
    plain = make_trainer(tmp_path / "plain", tokenizer, gradient_surgery=surgery)
    plain.train()
    scaled = make_trainer(tmp_path / "scaled", tokenizer, gradient_surgery=surgery)
    scaled.accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    scaled.train()
    assert scaled.accelerator.scaler.get_scale() == 2.0**12  # no step was skipped
    assert_same_parameters(parameters(plain.model), parameters(scaled.model), atol=1e-6)


@pytest.mark.parametrize("surgery", ["none", "gradvac"])
def test_sparse_word_embedding_gradients_give_the_dense_update(tmp_path, tokenizer, surgery):
    """The trainer switches the word embeddings to sparse gradients and zeroes / combines only the touched rows; with
    AdamW (which moves untouched rows too) the weights after several steps equal those of the dense path. The model
    ends with the dense gradients it came with."""

    class RecordSparse(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            self.seen.append(model.get_input_embeddings().sparse)

    trained = {}
    for sparse in (True, False):
        record = RecordSparse()
        record.seen = []
        # A large epsilon keeps AdamW from blowing rounding noise (the key biases' ~0 gradient) up to lr-sized steps.
        trainer = make_trainer(
            tmp_path / str(sparse),
            tokenizer,
            callbacks=[record],
            max_steps=4,
            optim="adamw_torch",
            learning_rate=1e-2,
            adam_epsilon=1e-3,
            gradient_surgery=surgery,
            max_grad_norm=1.0,
        )
        embeddings = trainer.model.get_input_embeddings()
        trainer.sparse_embedding_gradients = sparse
        trainer.train()
        assert record.seen == [sparse] * 4 and not embeddings.sparse
        trained[sparse] = parameters(trainer.model)
        assert (trainer.gradient_rows.sparse is not None) == sparse
        if sparse:  # the rows of the last step's tokens, and no more, were written
            rows = trainer.gradient_rows.sparse.rows
            assert 0 < len(rows) < embeddings.num_embeddings
    assert_same_parameters(trained[True], trained[False], atol=1e-6)


def test_evaluation_by_length_gives_the_metrics_and_predictions_of_the_plain_loop(tmp_path, tokenizer):
    """Rows run longest first in large batches: the metrics equal those of a plain loop over the rows in their order,
    `predict` returns the rows in the dataset's order, and the same weights are not evaluated twice."""
    dev = tiny_datasets(seed=1)
    trainer = make_trainer(tmp_path, tokenizer, per_device_eval_batch_size=7)
    trainer.eval_dataset = dev
    trainer.train()
    model = trainer.model.eval()
    metrics = trainer.evaluate()
    logged = len(trainer.state.log_history)
    for task, dataset in dev.items():
        collate = trainer.data_collator
        with torch.no_grad():  # one row at a time, in the dataset's order: no padding at all
            logits = torch.cat(
                [model(**{k: v for k, v in collate([row]).items() if k != "labels"}).logits for row in dataset]
            )
        output = trainer.predict(dataset)
        torch.testing.assert_close(torch.as_tensor(output.predictions), logits, atol=1e-5, rtol=1e-5)
        labels = torch.tensor(dataset["labels"])
        if task == "sts":
            pearson = float(torch.corrcoef(torch.stack([logits, labels]))[0, 1])
            assert metrics["eval_sts_pearson"] == pytest.approx(pearson, abs=1e-5)
        else:
            assert metrics[f"eval_{task}_accuracy"] == pytest.approx(
                float((logits.argmax(-1) == labels).float().mean())
            )
    assert trainer.evaluate() == metrics
    assert len(trainer.state.log_history) == logged  # reused, not run again


def test_layerwise_learning_rate_decay_groups():
    from trainer.optimization import layerwise_parameter_groups

    model = BertPalsForMultitask(tiny_config())  # 2 layers: embeddings at depth 0, layers 1-2, pooler 3
    names = {id(p): name for name, p in model.named_parameters()}
    decay_names = [name for name in names.values() if not name.endswith("bias") and "LayerNorm" not in name]
    groups = layerwise_parameter_groups(model, 1e-3, 0.5, 0.01, decay_names)
    grouped = [id(p) for group in groups for p in group["params"]]
    assert sorted(grouped) == sorted(names) and len(grouped) == len(set(grouped))  # every parameter, once
    rate = {names[id(p)]: group["lr"] for group in groups for p in group["params"]}
    weight_decay = {names[id(p)]: group["weight_decay"] for group in groups for p in group["params"]}
    assert rate["bert.pooler.dense.weight"] == pytest.approx(1e-3)
    assert rate["bert.encoder.layer.1.attention.self.query.weight"] == pytest.approx(1e-3 * 0.5)
    assert rate["bert.encoder.layer.0.output.dense.weight"] == pytest.approx(1e-3 * 0.25)
    assert rate["bert.embeddings.word_embeddings.weight"] == pytest.approx(1e-3 * 0.125)
    # New, task-specific parameters (PALs inside a layer, their projections, heads) take the full rate.
    for name in (
        "bert.encoder.layer.0.pals.sst.query.weight",
        "bert.encoder.pal_encoders.para.weight",
        "heads.sst.classifier.weight",
    ):
        assert rate[name] == pytest.approx(1e-3)
    assert weight_decay["heads.sst.classifier.weight"] == 0.01 and weight_decay["heads.sst.classifier.bias"] == 0.0


def test_layerwise_decay_trains_each_layer_at_its_rate(tmp_path, tokenizer):
    """One SGD step (constant schedule): each parameter moves by its group's rate times its gradient."""
    grads = CaptureGradients()
    trainer = make_trainer(tmp_path, tokenizer, callbacks=[grads], max_steps=1, layerwise_lr_decay=0.5)
    before = parameters(trainer.model)
    trainer.train()
    after = parameters(trainer.model)
    (step,) = grads.steps
    for name, scale in (
        ("bert.pooler.dense.weight", 1.0),
        ("bert.encoder.layer.0.output.dense.weight", 0.25),
        ("bert.embeddings.word_embeddings.weight", 0.125),
        ("heads.sst.classifier.weight", 1.0),
    ):
        torch.testing.assert_close(before[name] - after[name], 0.1 * scale * step[name], rtol=1e-4, atol=1e-7)
