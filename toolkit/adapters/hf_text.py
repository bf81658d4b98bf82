"""Text classifiers (Hugging Face sequence classifiers and any model a text family declares): tokenising,
padding, and the relevance of each token."""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch

from ..core.capture import Recorder
from ..core.lrp import PropagationRules
from ..errors import InputError, warn
from ..families.declaration import logits_of
from ..text import encoded_words, group_words, read_texts, special_token_mask, unknown_token_mask
from .base import Batch, DeclaredAdapter


class TextClassifierAdapter(DeclaredAdapter):
    """A text classifier: the tokenizer's ids in, one relevance per token out."""

    modality = "text"

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
                                        (firsts[i], seconds[i] if seconds else None), sample.get("unknown")))
            sample["text"] = read[i]
        return batch

    def max_length(self) -> int:
        """The most tokens the model reads: its position embeddings (less RoBERTa's offset, which starts the
        positions after the padding index), and the tokenizer's own limit where there is a tokenizer."""
        config = getattr(self.model, "config", None)
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
        vocabulary = getattr(getattr(self.model, "config", None), "vocab_size", None) or 10**12
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
                sample["unknown"] = unknown_token_mask(tok, ids)
                sample.update(group_words(tokens, special, tokenizer=tok, unknown=sample["unknown"]))
            samples.append(sample)
            padded = torch.zeros_like(valid)
            padded[valid] = torch.tensor(special, dtype=torch.bool)
            special_rows.append(padded)
        content = token_mask & ~torch.stack(special_rows)
        return Batch(model_inputs, token_mask.to(self.device), content.to(self.device), samples)

    def logits(self, batch: Batch) -> torch.Tensor:
        return logits_of(self.layout.forward(**batch.model_inputs))

    def input_relevance(self, rec: Recorder, first_layer_relevance: torch.Tensor, batch: Batch,
                        rules: PropagationRules) -> torch.Tensor:
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
