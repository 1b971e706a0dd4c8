# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""BERT with Projected Attention Layers for multi-task learning, as a Transformers (remote-code) model."""

from transformers import AutoConfig, AutoModel
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_bert_pals import DEFAULT_TASKS, BertPalsConfig
from .modeling_bert_pals import (
    BertPalsForMultitask,
    BertPalsForSentenceEmbedding,
    BertPalsModel,
    BertPalsPreTrainedModel,
    MultitaskOutput,
)
from .pipeline_bert_pals import PIPELINE_TASK, BertPalsMultitaskPipeline


# In-process: the Auto classes know the model without trust_remote_code.
AutoConfig.register(BertPalsConfig.model_type, BertPalsConfig)
AutoModel.register(BertPalsConfig, BertPalsForMultitask)
# On disk: save_pretrained copies both code files and writes `auto_map`, so anyone loads it with trust_remote_code.
BertPalsConfig.register_for_auto_class()
BertPalsForMultitask.register_for_auto_class("AutoModel")
BertPalsForSentenceEmbedding.register_for_auto_class("AutoModel")  # the auto_map of an exported sentence encoder
# In-process `pipeline("bert-pals-multitask", model=...)`; a saved model names it in `custom_pipelines` for the rest.
PIPELINE_REGISTRY.register_pipeline(
    PIPELINE_TASK, pipeline_class=BertPalsMultitaskPipeline, pt_model=AutoModel, type="text"
)

__all__ = [
    "DEFAULT_TASKS",
    "BertPalsConfig",
    "BertPalsForMultitask",
    "BertPalsForSentenceEmbedding",
    "BertPalsModel",
    "BertPalsMultitaskPipeline",
    "BertPalsPreTrainedModel",
    "MultitaskOutput",
]
