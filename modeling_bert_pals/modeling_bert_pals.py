# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""BERT with Projected Attention Layers (PALs, Stickland & Murray 2019) and one head per task.

Remote-code file: it imports nothing beyond torch and transformers, and its config and pipeline files only as
`from .configuration_bert_pals import ...` and `from .pipeline_bert_pals import ...`, so that `save_pretrained` can
ship all three next to the weights (the pipeline file imports only torch and transformers).
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.models.bert.modeling_bert import (
    BertEmbeddings,
    BertLayer,
    BertPooler,
    BertSelfAttention,
    eager_attention_forward,
)
from transformers.utils import ModelOutput, logging
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_bert_pals import HEAD_OPTIONS, BertPalsConfig
from .pipeline_bert_pals import custom_pipelines_entry


logger = logging.get_logger(__name__)

# Module containers whose children are keyed by task name: everything below them belongs to that task.
TASK_CONTAINERS = ("pals", "pal_encoders", "pal_decoders", "heads")
# The class label `F.cross_entropy` ignores (its default `ignore_index`).
IGNORE_INDEX = -100


class TokenPacking:
    """
    The real (unpadded) tokens of a padded batch, for training without computing padding.

    Linear layers, LayerNorm, dropout and activations act on each token alone, so they run on the packed
    `[num_tokens, dim]` tokens; only attention needs the padded `[batch, length, dim]` layout, and gets it back with
    `pad`. Padding never reaches a real token (it is masked as a key), so real tokens get the same values.
    """

    def __init__(self, padding_mask: torch.Tensor):
        self.batch_size, self.length = padding_mask.shape
        self.indices = padding_mask.reshape(-1).nonzero().squeeze(1)

    def pack(self, padded: torch.Tensor) -> torch.Tensor:
        return padded.reshape(self.batch_size * self.length, -1).index_select(0, self.indices)

    def pad(self, packed: torch.Tensor) -> torch.Tensor:
        padded = packed.new_zeros(self.batch_size * self.length, packed.shape[-1]).index_copy(0, self.indices, packed)
        return padded.view(self.batch_size, self.length, -1)


def fused_linear(inputs: torch.Tensor, *linears: nn.Linear) -> tuple[torch.Tensor, ...]:
    """
    The outputs of several `nn.Linear` layers that read the same input, computed as one matrix product when gradients
    are needed (one product and one backward instead of several: fewer kernels). Without gradients, concatenating the
    weights would cost more than it saves.
    """
    if len(linears) == 1 or not torch.is_grad_enabled():
        return tuple(linear(inputs) for linear in linears)
    weight = torch.cat([linear.weight for linear in linears])
    bias = torch.cat([linear.bias for linear in linears])
    return F.linear(inputs, weight, bias).split([linear.out_features for linear in linears], dim=-1)


def attend(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask,
    packing: TokenPacking | None = None,
    **kwargs,
) -> torch.Tensor:
    """
    Multi-head attention of `[..., heads * head_size]` projections with `module`'s heads, scaling, dropout and the
    config's attention implementation, in the layout of its inputs: `[batch, length, ...]`, or packed tokens, which
    are laid out padded for the attention alone.
    """
    if packing is not None:
        query, key, value = packing.pad(query), packing.pad(key), packing.pad(value)
    hidden_shape = (*query.shape[:-1], -1, module.attention_head_size)
    query, key, value = (x.reshape(hidden_shape).transpose(1, 2) for x in (query, key, value))
    attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
        module.config._attn_implementation, eager_attention_forward
    )
    attn_output, _ = attention_interface(
        module,
        query,
        key,
        value,
        attention_mask,
        dropout=0.0 if not module.training else module.dropout.p,
        scaling=module.scaling,
        **kwargs,
    )
    attn_output = attn_output.reshape(*hidden_shape[:-2], -1)
    return packing.pack(attn_output) if packing is not None else attn_output


class PalSelfAttention(nn.Module):
    """Multi-head self-attention inside the PAL's small space: q/k/v with bias, no output projection, no LayerNorm."""

    def __init__(self, config: BertPalsConfig):
        super().__init__()
        self.config = config
        self.num_attention_heads = config.pal_num_heads
        self.attention_head_size = config.pal_size // config.pal_num_heads
        self.scaling = self.attention_head_size**-0.5
        self.query = nn.Linear(config.pal_size, config.pal_size)
        self.key = nn.Linear(config.pal_size, config.pal_size)
        self.value = nn.Linear(config.pal_size, config.pal_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)
        # The SDPA path would otherwise apply a causal mask to batches without padding.
        self.is_causal = False

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        query, key, value = fused_linear(hidden_states, self.query, self.key, self.value)
        return attend(self, query, key, value, attention_mask, **kwargs)


class PalDecoder(nn.Linear):
    """V^D, from the PAL's small space back to the hidden size; its own class so that `_init_weights` can find it."""


class BertPalsLayer(BertLayer):
    """A BERT layer with one PAL per task beside it: `LN2(FFN(a) + a + PAL(h))`, `a = LN1(h + SA(h))`."""

    def __init__(self, config: BertPalsConfig, layer_idx: int | None = None):
        super().__init__(config, layer_idx=layer_idx)
        if config.use_pals:
            self.pals = nn.ModuleDict({task: PalSelfAttention(config) for task in config.task_names})
        self.pal_activation = ACT2FN[config.hidden_act]

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        task: str | None = None,
        pal_encoder: nn.Module | None = None,
        pal_decoder: nn.Module | None = None,
        packing: TokenPacking | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """
        `hidden_states` is `[batch, length, hidden_size]`, or with `packing` the packed real tokens `[tokens,
        hidden_size]`. Everything that reads the layer input (BERT's query/key/value and the PAL's V^E) is one matrix
        product, and so are the PAL's own query/key/value: far fewer kernels, which is what small batches cost on a
        GPU.
        """
        if kwargs.get("output_attentions", self.attention.self.config.output_attentions):
            # BertSelfAttention's own forward, where the attention weights are recorded.
            return self._forward_recording_attentions(
                hidden_states, attention_mask, task, pal_encoder, pal_decoder, **kwargs
            )
        self_attention = self.attention.self
        pal_projections = [pal_encoder] if pal_encoder is not None else []
        query, key, value, *pal_input = fused_linear(
            hidden_states, self_attention.query, self_attention.key, self_attention.value, *pal_projections
        )
        context = attend(self_attention, query, key, value, attention_mask, packing, **kwargs)
        attention_output = self.attention.output(context, hidden_states)
        residual = attention_output
        if pal_encoder is not None:
            # The PAL reads the layer input, as self-attention does, and joins the FFN's residual.
            pal = self.pals[task]
            pal_context = attend(
                pal, *fused_linear(pal_input[0], pal.query, pal.key, pal.value), attention_mask, packing, **kwargs
            )
            residual = attention_output + self.pal_activation(pal_decoder(pal_context))
        return self.output(self.intermediate(attention_output), residual)

    def _forward_recording_attentions(self, hidden_states, attention_mask, task, pal_encoder, pal_decoder, **kwargs):
        attention_output, _ = self.attention(hidden_states, attention_mask, **kwargs)
        residual = attention_output
        if pal_encoder is not None:
            pal_output = self.pals[task](pal_encoder(hidden_states), attention_mask, **kwargs)
            residual = attention_output + self.pal_activation(pal_decoder(pal_output))
        return self.output(self.intermediate(attention_output), residual)


class BertPalsEncoder(nn.Module):
    """The layers, plus each task's V^E / V^D projections, registered once here and shared by every layer."""

    def __init__(self, config: BertPalsConfig):
        super().__init__()
        self.config = config
        self.layer = nn.ModuleList([BertPalsLayer(config, layer_idx=i) for i in range(config.num_hidden_layers)])
        if config.use_pals:
            self.pal_encoders = nn.ModuleDict(
                {task: nn.Linear(config.hidden_size, config.pal_size) for task in config.task_names}
            )
            self.pal_decoders = nn.ModuleDict(
                {task: PalDecoder(config.pal_size, config.hidden_size) for task in config.task_names}
            )

    def forward(
        self,
        hidden_states,
        attention_mask=None,
        task: str | None = None,
        packing: TokenPacking | None = None,
        **kwargs,
    ):
        pal_encoder = pal_decoder = None
        if self.config.use_pals and task is not None:
            if task not in self.pal_encoders:
                raise ValueError(f"Unknown task {task!r}; this model has tasks {self.config.task_names}.")
            pal_encoder, pal_decoder = self.pal_encoders[task], self.pal_decoders[task]
        if packing is not None:
            hidden_states = packing.pack(hidden_states)
        for layer_module in self.layer:
            hidden_states = layer_module(
                hidden_states,
                attention_mask,
                task=task,
                pal_encoder=pal_encoder,
                pal_decoder=pal_decoder,
                packing=packing,
                **kwargs,
            )
        # Padding positions come back as zeros: nothing reads them (the pooler reads [CLS], mean pooling masks them).
        return packing.pad(hidden_states) if packing is not None else hidden_states


class BertPalsPreTrainedModel(PreTrainedModel):
    config_class = BertPalsConfig
    base_model_prefix = "bert"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_record_outputs = {"hidden_states": BertPalsLayer, "attentions": BertSelfAttention}

    def __init__(self, config: BertPalsConfig, *inputs, **kwargs):
        config.validate_pals()  # options set on the config after its `__init__` are checked here at the latest
        super().__init__(config, *inputs, **kwargs)

    def _adjust_missing_and_unexpected_keys(self, loading_info) -> None:
        super()._adjust_missing_and_unexpected_keys(loading_info)
        # A plain BERT checkpoint has no PAL or head weights: creating them is the point of loading it here, so they
        # are not reported as missing. A checkpoint that has some task weights but lacks others is still reported.
        task_keys = {key for key in self.state_dict() if set(key.split(".")) & set(TASK_CONTAINERS)}
        if task_keys and task_keys <= set(loading_info.missing_keys):
            logger.info(f"Initialised the {len(task_keys)} PAL and head weights that a BERT checkpoint does not have.")
            loading_info.missing_keys = set(loading_info.missing_keys) - task_keys

    def _init_weights(self, module):
        if isinstance(module, PalDecoder) and self.config.pal_decoder_init == "zeros":
            # GELU(0) = 0: a zero V^D makes every PAL output 0, so the model starts as the BERT it was loaded from.
            init.zeros_(module.weight)
            init.zeros_(module.bias)
            return
        super()._init_weights(module)
        if isinstance(module, BertEmbeddings):
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).expand((1, -1)))
            init.zeros_(module.token_type_ids)


class BertPalsModel(BertPalsPreTrainedModel):
    """BERT whose every layer holds one PAL per task. With `task=None` or `use_pals=False` it is exactly BERT."""

    def __init__(self, config: BertPalsConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertPalsEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        task: str | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        embedding_output = self.embeddings(
            input_ids=input_ids, position_ids=position_ids, token_type_ids=token_type_ids, inputs_embeds=inputs_embeds
        )
        packing = None
        if self._packs_tokens(attention_mask, kwargs):
            packing = TokenPacking(attention_mask.bool())
        attention_mask = create_bidirectional_mask(
            config=self.config, inputs_embeds=embedding_output, attention_mask=attention_mask
        )
        sequence_output = self.encoder(embedding_output, attention_mask, task=task, packing=packing, **kwargs)
        pooled_output = self.pooler(sequence_output) if self.pooler is not None else None
        return BaseModelOutputWithPooling(last_hidden_state=sequence_output, pooler_output=pooled_output)

    def _packs_tokens(self, attention_mask: torch.Tensor | None, kwargs: dict) -> bool:
        """
        Training on a padded batch on the CPU skips the padding (see `TokenPacking`): the same values for every real
        token, with padding positions of `last_hidden_state` left at zero. Evaluation, and any call that asks for the
        hidden states or attentions of every layer, computes the padded batch as BERT does.
        """
        if not (self.training and self.config.pack_tokens) or attention_mask is None or attention_mask.dim() != 2:
            return False
        # On a GPU, small batches cost kernel launches rather than arithmetic: packing would only add kernels.
        if attention_mask.device.type != "cpu" or self.config._attn_implementation not in ("sdpa", "eager"):
            return False
        for name in ("output_hidden_states", "output_attentions"):
            if kwargs.get(name, getattr(self.config, name, False)):
                return False
        return not bool(attention_mask.all())


class TaskHead(nn.Module):
    """
    A task's head, and what depends on the kind of task: which input it reads (`encoding`), its loss, its predictions
    and the metric the task is judged by.

    `encoding` is "single" (one sentence), "separate" (a pair, each sentence encoded alone: a bi-encoder, as in the
    paper) or "cross" (a pair as one sequence `[CLS] a [SEP] b [SEP]`: a cross-encoder). `forward` maps the sentence
    embedding(s) to the logits (classification) or scores (regression).
    """

    encoding = "single"
    metric = "accuracy"
    is_regression = False

    def __init__(self, spec: dict):
        super().__init__()
        # The options are described, with their defaults, by the config's `HEAD_OPTIONS`.
        option = {key: spec.get(key, HEAD_OPTIONS[key].default(spec["kind"])) for key in HEAD_OPTIONS}
        self.loss_name = option["loss"]
        self.label_smoothing = option["label_smoothing"] or 0.0
        self.rdrop = option["rdrop"]
        self.num_labels = spec.get("num_labels", 1)

    def loss(self, logits, labels, embeddings, embeddings_b=None) -> torch.Tensor:
        return F.cross_entropy(
            logits.float(), labels.long(), ignore_index=IGNORE_INDEX, label_smoothing=self.label_smoothing
        )

    def divergence(self, logits: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
        """R-Drop's term: the symmetric KL divergence of two class distributions, summed over classes, row mean."""
        log_p, log_q = F.log_softmax(logits.float(), -1), F.log_softmax(logits_b.float(), -1)
        kl_pq = (log_p.exp() * (log_p - log_q)).sum(-1)
        kl_qp = (log_q.exp() * (log_q - log_p)).sum(-1)
        return 0.5 * (kl_pq + kl_qp).mean()

    def predictions(self, logits: torch.Tensor) -> torch.Tensor:
        """Class ids, or the scores of a regression task."""
        return logits.argmax(-1)


class SentenceClassificationHead(TaskHead):
    """SST: dropout and a linear layer on the sentence embedding."""

    def __init__(self, config: BertPalsConfig, spec: dict):
        super().__init__(spec)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, spec["num_labels"])

    def forward(self, embeddings: torch.Tensor, embeddings_b: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(self.dropout(embeddings))


class CrossEncoderClassificationHead(SentenceClassificationHead):
    """A pair read as one sequence: dropout and a linear layer on the embedding of the joint sequence."""

    encoding = "cross"


def pair_features(embeddings: torch.Tensor, embeddings_b: torch.Tensor, features: str) -> torch.Tensor:
    """`[u, v]` (the paper's) or `[u, v, |u - v|, u * v]` (Sentence-BERT's) of two sentence embeddings."""
    if features == "sbert":
        return torch.cat([embeddings, embeddings_b, (embeddings - embeddings_b).abs(), embeddings * embeddings_b], -1)
    return torch.cat([embeddings, embeddings_b], dim=-1)


def pair_features_size(config: BertPalsConfig, features: str) -> int:
    return (4 if features == "sbert" else 2) * config.hidden_size


def ranking_loss(embeddings: torch.Tensor, candidates: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    """
    Multiple-negatives ranking: each anchor `embeddings[i]` should be closer (cosine x `scale`) to `candidates[i]`
    than to every other candidate of the batch, as a cross-entropy over the candidates.
    """
    scores = F.cosine_similarity(embeddings.float().unsqueeze(1), candidates.float().unsqueeze(0), dim=-1) * scale
    return F.cross_entropy(scores, torch.arange(len(embeddings), device=scores.device))


class PairClassificationHead(TaskHead):
    """
    Paraphrase: the features of both sentence embeddings (see `pair_features`), dropout, a linear layer to the
    logits. Loss "cross_entropy+ranking" adds `ranking_loss` with the duplicate pairs' first sentences as anchors and
    every second sentence of the batch as candidates.
    """

    encoding = "separate"

    def __init__(self, config: BertPalsConfig, spec: dict):
        super().__init__(spec)
        self.features = spec.get("features", "concat")
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(pair_features_size(config, self.features), spec["num_labels"])

    def forward(self, embeddings: torch.Tensor, embeddings_b: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(pair_features(embeddings, embeddings_b, self.features)))

    def loss(self, logits, labels, embeddings, embeddings_b=None) -> torch.Tensor:
        loss = super().loss(logits, labels, embeddings, embeddings_b)
        if self.loss_name == "cross_entropy+ranking":
            positives = labels == 1
            # Candidates: the positives' own second sentences first (the targets), then every other one.
            candidates = torch.cat([embeddings_b[positives], embeddings_b[~positives]])
            # Without positives the ranking term is 0, with the graph kept (every process runs the same backward).
            anchors = embeddings[positives]
            loss = loss + (ranking_loss(anchors, candidates) if len(anchors) else candidates.sum() * 0.0)
        return loss


class RegressionHead(TaskHead):
    """A score in [0, `max_score`]; loss "mse" (the paper's) or "cosent" (CoSENT: a ranking of the pairs' scores)."""

    metric = "pearson"
    is_regression = True

    def __init__(self, spec: dict):
        super().__init__(spec)
        self.max_score = float(spec.get("max_score", 5.0))

    def similarity(self, logits, embeddings, embeddings_b) -> torch.Tensor:
        """What CoSENT ranks: the score on a [0, 1] scale."""
        return logits / self.max_score

    def loss(self, logits, labels, embeddings, embeddings_b=None) -> torch.Tensor:
        if self.loss_name == "cosent":
            return cosent_loss(self.similarity(logits, embeddings, embeddings_b), labels)
        return F.mse_loss(logits.float(), labels.float())

    def divergence(self, logits: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
        """R-Drop's term for a score: the squared difference of the two scores, row mean (the MSE loss's scale)."""
        return F.mse_loss(logits.float(), logits_b.float())

    def predictions(self, logits: torch.Tensor) -> torch.Tensor:
        return logits


def cosent_loss(similarities: torch.Tensor, labels: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    """
    CoSENT (Su 2022; the STS loss of sentence-transformers): `log(1 + sum over pairs with labels[i] > labels[j] of
    exp(scale * (similarities[j] - similarities[i])))`, which asks only for the order of the labels.
    """
    similarities = similarities.float() * scale
    differences = similarities[None, :] - similarities[:, None]  # [i, j] = s_j - s_i
    wrong_order = labels.float()[:, None] > labels.float()[None, :]
    differences = differences - (~wrong_order).float() * 1e12  # pairs not in that order drop out of the sum
    return torch.logsumexp(torch.cat([differences.new_zeros(1), differences.reshape(-1)]), dim=0)


class PairRegressionHead(RegressionHead):
    """The paper's STS baseline: the pair's features, dropout, linear to one value, sigmoid x max_score."""

    encoding = "separate"

    def __init__(self, config: BertPalsConfig, spec: dict):
        super().__init__(spec)
        self.features = spec.get("features", "concat")
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(pair_features_size(config, self.features), 1)

    def forward(self, embeddings: torch.Tensor, embeddings_b: torch.Tensor) -> torch.Tensor:
        features = pair_features(embeddings, embeddings_b, self.features)
        return torch.sigmoid(self.classifier(self.dropout(features))).squeeze(-1) * self.max_score


class CosineSimilarityHead(RegressionHead):
    """The paper's STS improvement, without parameters: ReLU(cos(u, v)) scaled to [0, max_score]."""

    encoding = "separate"

    def __init__(self, config: BertPalsConfig, spec: dict):
        super().__init__(spec)

    def forward(self, embeddings: torch.Tensor, embeddings_b: torch.Tensor) -> torch.Tensor:
        # clamp(min=0) is the ReLU; the upper bound only removes rounding (a cosine of 1.0000001).
        return F.cosine_similarity(embeddings, embeddings_b, dim=-1).clamp(0.0, 1.0) * self.max_score

    def similarity(self, logits, embeddings, embeddings_b) -> torch.Tensor:
        # The cosine itself: the ReLU would give the ranking loss no gradient below 0.
        return F.cosine_similarity(embeddings, embeddings_b, dim=-1)


class CrossEncoderRegressionHead(RegressionHead):
    """A pair read as one sequence: dropout, linear to one value, sigmoid scaled to [0, max_score]."""

    encoding = "cross"

    def __init__(self, config: BertPalsConfig, spec: dict):
        super().__init__(spec)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, 1)

    def forward(self, embeddings: torch.Tensor, embeddings_b: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self.classifier(self.dropout(embeddings))).squeeze(-1) * self.max_score


# The head of a task entry, by (kind, encoding, STS head): a separately encoded pair-regression task's head is its
# `head` option; every other head is set by its kind and encoding alone (None).
HEAD_CLASSES = {
    ("classification", "single", None): SentenceClassificationHead,
    ("pair_classification", "separate", None): PairClassificationHead,
    ("pair_classification", "cross", None): CrossEncoderClassificationHead,
    ("pair_regression", "separate", "cosine"): CosineSimilarityHead,
    ("pair_regression", "separate", "linear"): PairRegressionHead,
    ("pair_regression", "cross", None): CrossEncoderRegressionHead,
}


def task_head_class(spec: dict, sts_head: str = "cosine") -> type[TaskHead]:
    """
    The head class of a task entry of `BertPalsConfig.tasks`; a separately encoded pair-regression task's entry
    chooses between the two STS heads with its `head`, else the config's `sts_head` does.
    """
    kind = spec["kind"]
    # A single sentence is always "single" (configs written before `HEAD_OPTIONS` may say "separate").
    encoding = "single" if kind == "classification" else spec.get("encoding", HEAD_OPTIONS["encoding"].default(kind))
    head = spec.get("head", sts_head) if (kind, encoding) == ("pair_regression", "separate") else None
    key = (kind, encoding, head)
    return HEAD_CLASSES[key]


class BertPalsForSentenceEmbedding(BertPalsPreTrainedModel):
    """
    One task's sentence encoder on its own: the shared BERT with that task's PALs (a config with that one task) and
    no head, whose `forward` takes what a tokenizer gives. It is what sentence-transformers loads (with a pooling
    module, see `export_sentence_transformer.py`): its `last_hidden_state` is what the task's head pools.
    """

    def __init__(self, config: BertPalsConfig):
        if len(config.tasks) != 1:
            raise ValueError(f"A sentence encoder has one task (whose PALs it runs); got tasks {config.task_names}.")
        super().__init__(config)
        self.bert = BertPalsModel(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        return_dict: bool = True,  # sentence-transformers passes it; the output is always a `ModelOutput`
    ) -> BaseModelOutputWithPooling:
        task = self.config.task_names[0]
        return self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, task=task)


def _describe(tensor) -> str:
    return f"a {tensor.dtype} tensor of shape {list(tensor.shape)}"


def _check_ids(task, max_positions, name, ids, mask, types, suffix=""):
    """One sentence's token ids (`input_ids{suffix}`), with its mask and token types: shapes, dtype and length."""
    if not torch.is_tensor(ids) or ids.dim() != 2 or ids.is_floating_point() or ids.is_complex():
        got = _describe(ids) if torch.is_tensor(ids) else type(ids).__name__
        raise ValueError(f"`{name}` must be an integer tensor of shape [batch_size, length]; got {got}.")
    for other_name, other in ((f"attention_mask{suffix}", mask), (f"token_type_ids{suffix}", types)):
        if other is not None and (not torch.is_tensor(other) or other.shape != ids.shape):
            got = _describe(other) if torch.is_tensor(other) else type(other).__name__
            raise ValueError(f"`{other_name}` must have the shape of `{name}`, {list(ids.shape)}; got {got}.")
    if ids.numel() == 0:
        raise ValueError(
            f"Task {task!r}: `{name}` is an empty batch (shape {list(ids.shape)}); pass at least one example "
            "of at least one token."
        )
    if ids.shape[1] > max_positions:
        raise ValueError(
            f"Task {task!r}: `{name}` has {ids.shape[1]} tokens; the model has {max_positions} position "
            "embeddings (max_position_embeddings): truncate the inputs, e.g. `tokenizer(..., "
            f"truncation=True, max_length={max_positions})`."
        )


def _check_labels(task, head, labels, batch_size):
    """The labels' shape and dtype, and their range (the one device synchronisation of the checks)."""
    valid = (
        torch.is_tensor(labels)
        and labels.shape == (batch_size,)
        and not labels.is_complex()
        and labels.dtype != torch.bool
        and (head.is_regression or not labels.is_floating_point())
    )
    if not valid:
        expected = (
            "a float tensor of scores" if head.is_regression else "an integer (torch.long) tensor of class indices"
        )
        got = _describe(labels) if torch.is_tensor(labels) else type(labels).__name__
        raise ValueError(f"Task {task!r}: `labels` must be {expected} of shape [{batch_size}]; got {got}.")
    low, high = torch.stack(torch.aminmax(labels)).tolist()  # the one synchronisation
    if head.is_regression:
        if not (0.0 <= low and high <= head.max_score):  # also false for a NaN
            bad = low if not low >= 0.0 else high
            raise ValueError(f"Task {task!r}: `labels` must be scores in [0, {head.max_score:g}]; got {bad:g}.")
        return
    num_labels = head.num_labels
    if low < 0 or high >= num_labels:
        # Cross-entropy ignores -100 (its `ignore_index`): only the other labels must be class indices.
        kept = labels[labels != IGNORE_INDEX]
        bad = kept[(kept < 0) | (kept >= num_labels)]
        if len(bad):
            raise ValueError(
                f"Task {task!r}: `labels` must be class indices in [0, {num_labels}) (or {IGNORE_INDEX}, "
                f"ignored); got {bad[0].item()}."
            )


@dataclass
class MultitaskOutput(ModelOutput):
    """
    loss (`torch.Tensor` of shape `()`, returned when `labels` is given):
        The loss of the task's head: cross-entropy for classification (plus a ranking term, if configured), mean
        squared error or CoSENT for regression.
    logits (`torch.Tensor`):
        `(batch_size, num_labels)` for classification tasks, `(batch_size,)` scores for the regression task.
    embeddings (`torch.Tensor` of shape `(batch_size, hidden_size)`):
        Sentence embeddings of the first sentence (of the joint sequence, for a cross-encoded pair).
    embeddings_b (`torch.Tensor` of shape `(batch_size, hidden_size)`, pair tasks encoded separately only):
        Sentence embeddings of the second sentence.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    embeddings: torch.Tensor | None = None
    embeddings_b: torch.Tensor | None = None


class BertPalsForMultitask(BertPalsPreTrainedModel):
    """A shared `bert` (BERT checkpoints load into it by name) with PALs, and one head per task."""

    # The Trainer must keep dividing the loss by the accumulation steps.
    accepts_loss_kwargs = False

    def __init__(self, config: BertPalsConfig):
        super().__init__(config)
        self.bert = BertPalsModel(config)
        self.heads = nn.ModuleDict(
            {task: task_head_class(spec, config.sts_head)(config, spec) for task, spec in config.tasks.items()}
        )
        self.post_init()

    def save_pretrained(self, save_directory, *args, **kwargs):
        """
        `PreTrainedModel.save_pretrained`, with the multitask pipeline registered in the config (`custom_pipelines`):
        `pipeline(model=save_directory, trust_remote_code=True)` then builds it (`push_to_hub` saves this way too). The
        pipeline's code file travels with the model's, as one of its relative imports.
        """
        self.config.custom_pipelines = custom_pipelines_entry()
        return super().save_pretrained(save_directory, *args, **kwargs)

    def embed(self, input_ids, attention_mask=None, token_type_ids=None, task=None) -> torch.Tensor:
        """Sentence embeddings as the config's `pooling` says: BERT's pooler output or the masked mean."""
        outputs = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, task=task)
        if self.config.pooling == "pooler":
            return outputs.pooler_output
        hidden = outputs.last_hidden_state
        if attention_mask is None:
            return hidden.mean(dim=1)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)

    def _embed_pair(
        self, task, input_ids, attention_mask, token_type_ids, input_ids_b, attention_mask_b, token_type_ids_b
    ):
        # The two sentences are encoded separately, as in the paper, but in one batched pass of both.
        length = max(input_ids.shape[1], input_ids_b.shape[1])
        batch = [input_ids, input_ids_b]
        masks = [
            torch.ones_like(input_ids) if attention_mask is None else attention_mask,
            torch.ones_like(input_ids_b) if attention_mask_b is None else attention_mask_b,
        ]
        types = [
            torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids,
            torch.zeros_like(input_ids_b) if token_type_ids_b is None else token_type_ids_b,
        ]
        pad = self.config.pad_token_id or 0

        def stack(tensors, value):
            return torch.cat([F.pad(t, (0, length - t.shape[1]), value=value) for t in tensors])

        embeddings = self.embed(stack(batch, pad), stack(masks, 0), stack(types, 0), task=task)
        return embeddings.split(input_ids.shape[0])

    def forward(
        self,
        task: str,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        input_ids_b: torch.Tensor | None = None,
        attention_mask_b: torch.Tensor | None = None,
        token_type_ids_b: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> MultitaskOutput:
        r"""
        task (`str`):
            Which task's PALs and head to run, one of `config.task_names`.
        input_ids_b, attention_mask_b, token_type_ids_b (*optional*):
            The second sentence of a pair task whose head encodes the two sentences separately (a cross-encoding
            head reads both in `input_ids`).
        labels (`torch.Tensor`, *optional*):
            Class indices for classification tasks (-100: ignored), scores in [0, max_score] for regression tasks.
        """
        if task not in self.heads:
            raise ValueError(f"Unknown task {task!r}; this model has tasks {self.config.task_names}.")
        head = self.heads[task]
        self._check_inputs(
            task,
            head,
            input_ids,
            attention_mask,
            token_type_ids,
            input_ids_b,
            attention_mask_b,
            token_type_ids_b,
            labels,
        )
        inputs = (input_ids, attention_mask, token_type_ids, input_ids_b, attention_mask_b, token_type_ids_b)
        rdrop = self.training and labels is not None and head.rdrop > 0
        if rdrop:  # R-Drop: the batch twice in one pass, so that each copy gets its own dropout masks
            inputs = tuple(None if tensor is None else torch.cat([tensor, tensor]) for tensor in inputs)
        if head.encoding == "separate":
            embeddings, embeddings_b = self._embed_pair(task, *inputs)
        else:
            embeddings, embeddings_b = self.embed(*inputs[:3], task=task), None
        logits = head(embeddings, embeddings_b)
        if rdrop:
            return self._rdrop_output(head, labels, logits, embeddings, embeddings_b)
        loss = head.loss(logits, labels, embeddings, embeddings_b) if labels is not None else None
        return MultitaskOutput(loss=loss, logits=logits, embeddings=embeddings, embeddings_b=embeddings_b)

    @staticmethod
    def _rdrop_output(head, labels, logits, embeddings, embeddings_b) -> MultitaskOutput:
        """
        R-Drop (Liang et al. 2021) on a batch that ran twice: `(loss_1 + loss_2) / 2 + alpha * divergence(out_1,
        out_2)`, with each copy's own loss (so that batch-wise losses, ranking and CoSENT, see each copy alone) and
        `head.divergence` between the two outputs. The outputs returned are the first copy's.
        """
        halves = [
            tensor.chunk(2) if tensor is not None else (None, None) for tensor in (logits, embeddings, embeddings_b)
        ]
        (logits_1, logits_2), (embeddings_1, embeddings_2), (embeddings_b1, embeddings_b2) = halves
        loss = 0.5 * (
            head.loss(logits_1, labels, embeddings_1, embeddings_b1)
            + head.loss(logits_2, labels, embeddings_2, embeddings_b2)
        )
        loss = loss + head.rdrop * head.divergence(logits_1, logits_2)
        return MultitaskOutput(loss=loss, logits=logits_1, embeddings=embeddings_1, embeddings_b=embeddings_b1)

    def _check_inputs(self, task, head, input_ids, attention_mask, token_type_ids, input_ids_b, attention_mask_b,
                      token_type_ids_b, labels):  # fmt: skip
        """
        Shapes and dtypes; of the values only the labels' range, when labels are given (one device synchronisation:
        an out-of-range class index is otherwise a device-side assert on a GPU, and a wrong score trains silently).
        """
        max_positions = self.config.max_position_embeddings
        if input_ids is None:
            raise ValueError("Pass `input_ids` (integer tensor of shape [batch_size, sequence_length]).")
        _check_ids(task, max_positions, "input_ids", input_ids, attention_mask, token_type_ids)
        batch_size = input_ids.shape[0]
        if head.encoding == "separate":
            if input_ids_b is None:
                raise ValueError(f"Task {task!r} is a sentence-pair task: pass `input_ids_b` too.")
            _check_ids(
                task, max_positions, "input_ids_b", input_ids_b, attention_mask_b, token_type_ids_b, suffix="_b"
            )
            if input_ids_b.shape[0] != batch_size:
                raise ValueError(
                    f"`input_ids_b` must hold the second sentence of each of the {batch_size} pairs, shape "
                    f"[{batch_size}, sequence_length]; got {_describe(input_ids_b)}."
                )
        elif head.encoding == "cross" and input_ids_b is not None:
            raise ValueError(
                f"Task {task!r} reads a pair as one sequence (a cross-encoder): pass both sentences in `input_ids` "
                "(`tokenizer(first, second)`), not `input_ids_b`."
            )
        if labels is not None:
            _check_labels(task, head, labels, batch_size)

    @staticmethod
    def head_class(spec: dict, sts_head: str = "cosine") -> type[TaskHead]:
        """The head class a task entry of `config.tasks` gets."""
        return task_head_class(spec, sts_head)

    def parameter_task(self, name: str) -> str | None:
        """The task a parameter belongs to (its PALs or head), or None for the parameters all tasks share."""
        parts = name.split(".")
        for container, task in zip(parts, parts[1:]):
            if container in TASK_CONTAINERS and task in self.config.tasks:
                return task
        return None

    def named_shared_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Parameters every task uses: embeddings, BERT layers, pooler. Gradient surgery acts on these only."""
        return ((name, p) for name, p in self.named_parameters() if self.parameter_task(name) is None)

    def named_task_parameters(self, task: str) -> Iterator[tuple[str, nn.Parameter]]:
        """Parameters only `task` uses: its PALs, its V^E / V^D projections and its head."""
        if task not in self.config.tasks:
            raise ValueError(f"Unknown task {task!r}; this model has tasks {self.config.task_names}.")
        return ((name, p) for name, p in self.named_parameters() if self.parameter_task(name) == task)

    def shared_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_shared_parameters()]

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        return [p for _, p in self.named_task_parameters(task)]


__all__ = [
    "BertPalsForMultitask",
    "BertPalsForSentenceEmbedding",
    "BertPalsModel",
    "BertPalsPreTrainedModel",
    "TaskHead",
]
