"""Hugging Face sequence classifiers: BERT, RoBERTa, ELECTRA, DistilBERT and ALBERT families."""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from ..core.capture import Recorder
from ..core.spec import LayerSpec, ModelSpec
from ..errors import InputError, UnsupportedModelError, warn
from ..text import encoded_words, group_words, read_texts, special_token_mask
from .base import Batch, ModelAdapter


def _second(output: Any) -> torch.Tensor | None:
    return output[1] if isinstance(output, (tuple, list)) and len(output) > 1 else None


class HFSequenceClassifierAdapter(ModelAdapter):
    """Shared by every AutoModelForSequenceClassification family: tokenising, padding and read-out."""

    modality = "text"
    model_types: tuple[str, ...] = ()

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        config = getattr(model, "config", None)
        return (getattr(config, "model_type", None) in cls.model_types
                and type(model).__name__.endswith("ForSequenceClassification"))

    @property
    def tokenizer(self):
        if self.processor is None:
            raise InputError(
                "This explainer has no tokenizer, so it cannot read raw text: pass one with "
                "Explainer(model, tokenizer), or pass preprocessed inputs (a dict with input_ids)."
            )
        return getattr(self.processor, "tokenizer", self.processor)

    def check_processor(self) -> None:
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        if tokenizer is not None and not (callable(tokenizer) and hasattr(tokenizer, "convert_ids_to_tokens")):
            raise self.wrong_processor("its tokenizer (AutoTokenizer.from_pretrained(name)), or None for "
                                       "preprocessed input_ids,")

    def check_inputs(self, items: list, text_pair: list | None) -> None:
        _split_pairs(items, text_pair)

    def _accepted(self) -> set[str]:
        return set(inspect.signature(self.model.forward).parameters)

    def prepare(self, inputs: Any, text_pair: Any = None, first_index: int = 0) -> Batch:
        """A batch from texts (or sentence pairs) or from preprocessed ``input_ids``. A text longer than the
        model's positions is cut, and words outside the vocabulary read as unknown, each with a warning naming
        the words (:func:`toolkit.text.read_texts`)."""
        if torch.is_tensor(inputs) or isinstance(inputs, Mapping):
            return self._prepare_encoded(inputs)
        firsts, seconds = _split_pairs(inputs, text_pair, first_index)
        tok = self.tokenizer
        limit = self.max_length()
        read = read_texts(tok, firsts, seconds, limit=limit, first_index=first_index)
        fast = getattr(tok, "is_fast", False)
        enc = tok(firsts, seconds, padding=True, truncation=True, max_length=limit, return_tensors="pt",
                  return_offsets_mapping=fast)
        batch = self._prepare_encoded(enc)
        for i, sample in enumerate(batch.samples):
            sample.update(encoded_words(enc, i, sample["length"], sample["special"],
                                        (firsts[i], seconds[i] if seconds else None)))
            sample["text"] = read[i]
        return batch

    def max_length(self) -> int:
        """The most tokens the model reads: its position embeddings (less RoBERTa's offset, which starts the
        positions after the padding index), and the tokenizer's own limit where there is a tokenizer."""
        config = self.model.config
        limit = getattr(config, "max_position_embeddings", None) or 10**9
        if getattr(config, "model_type", None) in ("roberta", "xlm-roberta", "camembert"):
            limit -= (config.pad_token_id or 0) + 1
        return min(limit, self.tokenizer.model_max_length) if self.processor is not None else limit

    def _input_ids(self, encoded: dict) -> torch.Tensor:
        """The (B, N) token ids of preprocessed inputs, refused unless they are integers the model can read: ids
        of its vocabulary, at most :meth:`max_length` of them, every other tensor of the same shape."""
        if "input_ids" not in encoded:
            raise InputError("Preprocessed text inputs need an `input_ids` tensor.")
        input_ids = torch.as_tensor(encoded["input_ids"])
        if input_ids.dim() == 1:
            input_ids = input_ids.unsqueeze(0)
        if input_ids.dim() != 2:
            raise InputError(f"input_ids must be shaped (N,) or (B, N); got {tuple(input_ids.shape)}.")
        if input_ids.numel() == 0:
            raise InputError("The input_ids tensor is empty: there is no text to explain.")
        if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
            raise InputError(f"input_ids are token indices, so integers; got {input_ids.dtype}. Pass the "
                             "tokenizer's output (tokenizer(text, return_tensors='pt')), or .long() them.")
        vocabulary = self.model.config.vocab_size
        if self.processor is not None:
            vocabulary = min(vocabulary, len(self.tokenizer))
        outside = (input_ids < 0) | (input_ids >= vocabulary)
        if bool(outside.any()):
            row, column = (int(i) for i in outside.nonzero()[0])
            raise InputError(f"input_ids[{row}, {column}] is {int(input_ids[row, column])}, outside the vocabulary "
                             f"(ids 0..{vocabulary - 1}): these ids are not from this model's tokenizer.")
        limit = self.max_length()
        if input_ids.shape[1] > limit:
            raise InputError(f"input_ids are {input_ids.shape[1]} tokens long but this model reads at most {limit}: "
                             f"tokenize with truncation=True, max_length={limit}, or pass the text itself (it is "
                             "then cut to the model's length, with a warning naming the words left out).")
        for key, value in encoded.items():
            if key in self._accepted() - {"input_ids"} and torch.as_tensor(value).numel() != input_ids.numel():
                raise InputError(f"{key} has shape {tuple(torch.as_tensor(value).shape)} but input_ids have "
                                 f"{tuple(input_ids.shape)}: pass the tokenizer's outputs together.")
        return input_ids

    def _prepare_encoded(self, encoded: Any) -> Batch:
        encoded = {"input_ids": encoded} if torch.is_tensor(encoded) else dict(encoded)
        input_ids = self._input_ids(encoded)
        if "attention_mask" not in encoded:
            pad = getattr(self.tokenizer, "pad_token_id", None) if self.processor is not None else None
            padded = int((input_ids == pad).sum()) if pad is not None else 0
            warn("input_ids were given without an attention_mask: every position is treated as content, padding "
                 f"included ({padded} padding token(s) found). Pass the tokenizer's attention_mask with the "
                 "input_ids.")
        mask = torch.as_tensor(encoded.get("attention_mask", torch.ones_like(input_ids))).reshape(input_ids.shape)
        accepted = self._accepted()
        model_inputs = {k: torch.as_tensor(v).reshape(input_ids.shape).to(self.device)
                        for k, v in encoded.items() if k in accepted and k != "input_ids"}
        model_inputs["input_ids"] = input_ids.to(self.device)
        model_inputs["attention_mask"] = mask.to(self.device)
        token_mask = mask.bool()
        samples, special_rows = [], []
        tok = self.tokenizer if self.processor is not None else None
        for row, valid in zip(input_ids, token_mask):
            ids = row[valid].tolist()
            tokens = tok.convert_ids_to_tokens(ids) if tok else [str(i) for i in ids]
            special = special_token_mask(tok, ids) if tok else [False] * len(ids)
            sample = {"tokens": tokens, "special": special, "length": len(ids)}
            if tok:
                sample.update(group_words(tokens, special, tokenizer=tok))
            samples.append(sample)
            padded = torch.zeros_like(valid)
            padded[valid] = torch.tensor(special, dtype=torch.bool)
            special_rows.append(padded)
        content = token_mask & ~torch.stack(special_rows)
        return Batch(model_inputs, token_mask.to(self.device), content.to(self.device), samples)

    def logits(self, batch: Batch) -> torch.Tensor:
        return self.model(**batch.model_inputs).logits

    def input_relevance(self, rec: Recorder, first_layer_relevance: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Relevance of each token: the relevance of its embedding vector, summed over features."""
        return first_layer_relevance.sum(dim=-1)


def _split_pairs(inputs: Any, text_pair: Any, first_index: int = 0) -> tuple[list[str], list[str] | None]:
    """Normalise str / list / (a, b) pairs into parallel lists, refusing empty texts."""
    if isinstance(inputs, str) or (isinstance(inputs, tuple) and len(inputs) == 2
                                   and all(isinstance(t, str) for t in inputs)):
        inputs = [inputs]
        if text_pair is not None:
            text_pair = [text_pair]
    items = list(inputs) if inputs is not None else []
    if not items:
        raise InputError("No text given: pass a string, a list of strings, or (text_a, text_b) pairs.")
    if text_pair is not None:
        pairs = list(text_pair)
        if len(pairs) != len(items):
            raise InputError(f"text_pair has {len(pairs)} entries for {len(items)} texts.")
        items = list(zip(items, pairs))
    firsts, seconds = [], []
    for index, item in enumerate(items, start=first_index):
        if isinstance(item, tuple) and len(item) != 2:
            raise InputError(f"Text #{index} is a tuple of {len(item)} items: a tuple is read as a sentence pair "
                             "(text_a, text_b). Pass several texts as a list.")
        first, second = item if isinstance(item, tuple) else (item, None)
        for part in (first, second):
            if part is not None and not isinstance(part, str):
                raise InputError(f"Text #{index} is of type {type(part).__name__}, not a string.")
            if part is not None and not part.strip():
                raise InputError(f"Text #{index} is empty: there is nothing to explain.")
        firsts.append(first)
        seconds.append(second)
    has_pair = [s is not None for s in seconds]
    if any(has_pair) and not all(has_pair):
        raise InputError("Mix of single texts and sentence pairs in one batch: explain them in separate calls.")
    return firsts, (seconds if all(has_pair) else None)


def _post_norm_layer(block, attention, query, key, value, out_proj, fc1, fc2, heads, call=0) -> LayerSpec:
    return LayerSpec(block=block, attention=attention, extract_probs=_second, num_heads=heads,
                     query=query, key=key, value=value, out_proj=out_proj, fc1=fc1, fc2=fc2,
                     norm_first=False, call=call)


def bert_layers(encoder_model: nn.Module) -> list[LayerSpec]:
    """Layers of a BERT-layout encoder: encoder.layer[i].attention.self.{query,key,value}, ..."""
    heads = encoder_model.config.num_attention_heads
    return [
        _post_norm_layer(layer, layer.attention.self, layer.attention.self.query, layer.attention.self.key,
                         layer.attention.self.value, layer.attention.output.dense, layer.intermediate.dense,
                         layer.output.dense, heads)
        for layer in encoder_model.encoder.layer
    ]


class BertFamilyAdapter(HFSequenceClassifierAdapter):
    """BERT layout: encoder.layer[i].attention.self.{query,key,value}, attention.output.dense, ..."""

    family = "bert"
    model_types = ("bert", "roberta", "xlm-roberta", "camembert", "electra")
    examples = "BERT, RoBERTa, XLM-R, CamemBERT, ELECTRA sequence classifiers"

    def build_spec(self) -> ModelSpec:
        base = self.model.base_model
        layers = bert_layers(base)
        classifier = self.model.classifier
        if isinstance(classifier, nn.Linear):  # BERT: pooler (dense + tanh) then a linear classifier
            if getattr(base, "pooler", None) is None:
                raise UnsupportedModelError("This BERT classifier has no pooler; the toolkit expects BERT's head.")
            head = [base.pooler.dense, classifier]
        else:  # RoBERTa / ELECTRA classification heads: dense, activation, out_proj on the first token
            head = [classifier.dense, classifier.out_proj]
        return ModelSpec(layers=layers, head=head)


class DistilBertAdapter(HFSequenceClassifierAdapter):
    family = "distilbert"
    model_types = ("distilbert",)
    examples = "DistilBERT sequence classifiers"

    def build_spec(self) -> ModelSpec:
        heads = self.model.config.n_heads
        layers = [
            _post_norm_layer(layer, layer.attention, layer.attention.q_lin, layer.attention.k_lin,
                             layer.attention.v_lin, layer.attention.out_lin, layer.ffn.lin1, layer.ffn.lin2, heads)
            for layer in self.model.distilbert.transformer.layer
        ]
        return ModelSpec(layers=layers, head=[self.model.pre_classifier, self.model.classifier])


class AlbertAdapter(HFSequenceClassifierAdapter):
    """ALBERT shares layer weights: one module runs at several depths, so each depth reads its own call."""

    family = "albert"
    model_types = ("albert",)
    examples = "ALBERT sequence classifiers"

    def build_spec(self) -> ModelSpec:
        config = self.model.config
        groups = self.model.albert.encoder.albert_layer_groups
        calls: dict[int, int] = {}
        layers = []
        for depth in range(config.num_hidden_layers):
            group = groups[int(depth / (config.num_hidden_layers / config.num_hidden_groups))]
            for layer in group.albert_layers:
                call = calls.get(id(layer), 0)
                calls[id(layer)] = call + 1
                att = layer.attention
                layers.append(_post_norm_layer(layer, att, att.query, att.key, att.value, att.dense, layer.ffn,
                                               layer.ffn_output, config.num_attention_heads, call))
        return ModelSpec(layers=layers, head=[self.model.albert.pooler, self.model.classifier])
