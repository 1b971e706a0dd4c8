# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
A demo page for a trained model (the `demo` extra, Gradio), as a model on the Hub has in its Space:

    python demo.py outputs/combined [--port 7860] [--share]

One sentence gets every single-sentence task's classes (sentiment, with the class probabilities as bars); two
sentences get every pair task's answer (paraphrase probability, similarity score). It runs the model through its
multitask pipeline, so the page shows what `pipeline(model=MODEL_DIR, trust_remote_code=True)` returns.
"""

import argparse
import os
import sys

from transformers import AutoTokenizer, pipeline

from modeling_bert_pals import PIPELINE_TASK, BertPalsForMultitask
from trainer.tasks import TASKS, fill_label_names


def load_pipeline(model_dir: str):
    model = BertPalsForMultitask.from_pretrained(model_dir).eval()
    fill_label_names(model.config)  # a model saved before the class names were recorded: the registry's
    return pipeline(PIPELINE_TASK, model=model, tokenizer=AutoTokenizer.from_pretrained(model_dir))


def task_title(task: str) -> str:
    return TASKS[task].description if task in TASKS and TASKS[task].description else task


def build_demo(pipe):
    """The page: a tab for one sentence, a tab for a pair, one output per task that takes that input."""
    import gradio as gr

    heads = pipe.model.heads
    single = [task for task in heads if heads[task].encoding == "single"]
    pairs = [task for task in heads if heads[task].encoding != "single"]

    def output(task):
        if heads[task].is_regression:
            low, high = pipe.model.config.score_range(task)
            return gr.Number(label=f"{task_title(task)} ({low:g} to {high:g})", precision=3, elem_id=f"out-{task}")
        return gr.Label(label=task_title(task), num_top_classes=heads[task].num_labels, elem_id=f"out-{task}")

    def answer(task, result):
        if heads[task].is_regression:
            return result["score"]
        return {entry["label"]: entry["score"] for entry in result}

    def one_or_all(values):  # Gradio takes one output's value alone, several as a list
        return values[0] if len(values) == 1 else values

    def classify(sentence):
        return one_or_all([answer(task, pipe(sentence or "", task=task, top_k=None)) for task in single])

    def compare(first, second):
        pair = {"text": first or "", "text_pair": second or ""}
        every_class = {task: {} if heads[task].is_regression else {"top_k": None} for task in pairs}
        return one_or_all([answer(task, pipe(pair, task=task, **every_class[task])) for task in pairs])

    with gr.Blocks(title="bert-pals-multitask") as demo:
        gr.Markdown(f"## One BERT, {len(heads)} tasks: {', '.join(task_title(task) for task in heads)}")
        if single:
            with gr.Tab("One sentence"):
                sentence = gr.Textbox(
                    label="Sentence", value="A gorgeous, witty, seductive movie.", elem_id="sentence"
                )
                run = gr.Button("Classify", variant="primary", elem_id="classify")
                outputs = [output(task) for task in single]
                run.click(classify, sentence, outputs)
                sentence.submit(classify, sentence, outputs)
        if pairs:
            with gr.Tab("Two sentences"):
                first = gr.Textbox(label="First sentence", value="How do I learn Python quickly?", elem_id="first")
                second = gr.Textbox(label="Second sentence", value="What is the fastest way to learn Python?",
                                    elem_id="second")  # fmt: skip
                run_pair = gr.Button("Compare", variant="primary", elem_id="compare")
                pair_outputs = [output(task) for task in pairs]
                run_pair.click(compare, [first, second], pair_outputs)
    return demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", help="a model saved by run_multitask.py (or save_pretrained)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="a public gradio.live link (needs the internet)")
    args = parser.parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from an offline machine
    try:
        import gradio as gr
    except ImportError:
        print("demo.py: error: the demo needs Gradio: pip install -e '.[demo]'", file=sys.stderr)
        return 1
    try:
        pipe = load_pipeline(args.model_dir)
    except (OSError, ValueError) as error:
        print(f"demo.py: error: {args.model_dir}: {error}", file=sys.stderr)
        return 1
    # System fonts: the default theme would fetch its web fonts from the internet.
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["monospace"])
    build_demo(pipe).launch(server_name=args.host, server_port=args.port, share=args.share, theme=theme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
