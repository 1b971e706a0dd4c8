# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""Integration: a short real run of the packaged all-MiniLM-L6-v2 on the real data beats the untrained model."""

import pytest
from transformers import AutoTokenizer, set_seed

from modeling_bert_pals import BertPalsForMultitask
from trainer.cs224n_builder import load_cs224n
from trainer.multitask_trainer import MultitaskTrainer
from trainer.tokenization import tokenize_split
from trainer.training_args import MultitaskTrainingArguments


DEV_ROWS = 400  # per task: enough for differences of a few points, quick on two cores
STEPS = 160


@pytest.mark.slow
def test_short_run_beats_the_untrained_model(minilm_path, data_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    # The combined preset (PALs, cosine STS head, GradVac) with mean pooling. The seed comes first: the new heads'
    # initial weights (and so the untrained metrics) would otherwise change from run to run.
    set_seed(0)
    model = BertPalsForMultitask.from_pretrained(minilm_path, use_pals=True, sts_head="cosine", pooling="mean")
    raw = {task: load_cs224n(task, data_dir) for task in model.config.task_names}
    encodings = {task: model.heads[task].encoding for task in raw}
    train = tokenize_split(raw, "train", tokenizer, encodings)
    dev = tokenize_split(raw, "validation", tokenizer, encodings, limit=DEV_ROWS)
    args = MultitaskTrainingArguments(
        output_dir=str(tmp_path),
        max_steps=STEPS,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=64,
        learning_rate=1e-4,
        warmup_steps=16,
        gradient_surgery="gradvac",
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        use_cpu=True,
        dataloader_pin_memory=False,
    )
    trainer = MultitaskTrainer(
        model=model, args=args, train_dataset=train, eval_dataset=dev, processing_class=tokenizer
    )
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    summary = {
        key: (round(before[key], 3), round(after[key], 3))
        for key in ("eval_sst_accuracy", "eval_para_accuracy", "eval_sts_pearson", "eval_overall")
    }
    print(f"dev metrics on {DEV_ROWS} rows per task (untrained, after {STEPS} steps): {summary}")
    for key, (untrained, trained) in summary.items():
        assert trained > untrained, f"{key}: {trained} after training, {untrained} untrained"
