"""BERT with Projected Attention Layers for multi-task learning, as a Transformers (remote-code) model."""

from transformers import AutoConfig, AutoModel

from .configuration_bert_pals import DEFAULT_TASKS, BertPalsConfig
from .modeling_bert_pals import BertPalsForMultitask, BertPalsModel, BertPalsPreTrainedModel, MultitaskOutput


# In-process: the Auto classes know the model without trust_remote_code.
AutoConfig.register(BertPalsConfig.model_type, BertPalsConfig)
AutoModel.register(BertPalsConfig, BertPalsForMultitask)
# On disk: save_pretrained copies both code files and writes `auto_map`, so anyone loads it with trust_remote_code.
BertPalsConfig.register_for_auto_class()
BertPalsForMultitask.register_for_auto_class("AutoModel")

__all__ = [
    "DEFAULT_TASKS",
    "BertPalsConfig",
    "BertPalsForMultitask",
    "BertPalsModel",
    "BertPalsPreTrainedModel",
    "MultitaskOutput",
]
