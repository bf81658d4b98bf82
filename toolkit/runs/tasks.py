"""What a run explains per task family, the score each explanation is about, and how it is evaluated.

Every task explains a batch of items with one method and reports, per item, the prediction, the target and the
explained score: the class probability (classification), the cosine similarity (CLIP), the answer's probability
(VQA), the caption's per-token probability (captioning, the geometric mean over its tokens).

The deletion test (Chefer et al. 2021, MoRF) removes the most relevant patches of the model's view (set to the
view's mean colour) or the most relevant words of a text, in the shares of ``evaluation.steps``, and tracks
that score, re-read through the public Explainer with a gradient-free method (its scores do not depend on the
method); the AUC is lower when the explanation found what the score rests on. On scenes the ground-truth metrics
compare the map with the mask of what the decision depends on: the label's object (classification), the two
captioned objects and their colour and shape words (CLIP), the question's objects and grounding words (VQA), and
for captioning each colour or shape word's object, averaged over the caption's such words.
"""
from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from ..errors import InputError
from ..evaluation.benchmark import ground_truth_metrics
from ..evaluation.metrics import PerturbationCurve, perturbation_curve
from ..explainer import Explainer
from ..explanation import Explanation
from ..methods import get_method
from ..zoo.common import caption_objects, caption_word_objects
from .config import MethodConfig, RunConfig
from .sources import Loaded

PLACEHOLDER_TEXT = "."  # what a text whose every word was removed is read as: punctuation, no content


@dataclass
class Outcome:
    """One item explained by one method."""

    explanation: Explanation
    prediction: str | None
    target: str | None
    score: float
    probability: float | None = None  # of the explained class or answer (None for a similarity)
    curve: PerturbationCurve | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def _single(result: Explanation | list[Explanation]) -> Explanation:
    return result[0] if isinstance(result, list) else result


class Task(ABC):
    """A task family over one explainer."""

    def __init__(self, explainer: Explainer, config: RunConfig):
        self.explainer, self.config = explainer, config
        applicable = explainer.applicable_methods()
        free = [m for m in ("raw_attention", *applicable) if m in applicable and not get_method(m).needs_gradients]
        self.probe = free[0] if free else explainer.default_method  # re-reads scores of perturbed inputs

    def run(self, batch: list[Loaded], method: MethodConfig) -> list[Outcome]:
        """Every item of ``batch`` explained and evaluated (an error fails the whole batch: the caller retries
        its items one by one to find the one at fault)."""
        outcomes = []
        for loaded, exp in zip(batch, self.explain(batch, method)):
            outcome = Outcome(exp, *self.describe(loaded, exp), score=self.score(exp),
                              probability=self.probability(exp))
            if self.config.evaluation.perturbation:
                outcome.curve = self.deletion(loaded, exp)
                outcome.metrics["morf_auc"] = outcome.curve.auc
                if self.config.evaluation.least_relevant_first:
                    outcome.metrics["lerf_auc"] = self.deletion(loaded, exp, order="negative").auc
            if self.config.evaluation.ground_truth and loaded.scene is not None:
                outcome.metrics.update(self.truth(loaded, exp))
            outcomes.append(outcome)
        return outcomes

    def _explain(self, method: MethodConfig, inputs: Any = None, **keywords: Any) -> Any:
        return self.explainer.explain(inputs, method=method.name, batch_size=self.config.batch_size, progress=False,
                                      **method.options, **keywords)

    def _probe(self, inputs: Any = None, **keywords: Any) -> list[Explanation]:
        with warnings.catch_warnings():  # perturbed inputs give odd maps; only their scores are read
            warnings.simplefilter("ignore")
            result = self.explainer.explain(inputs, method=self.probe, batch_size=self.config.batch_size,
                                            progress=False, **keywords)
        return result if isinstance(result, list) else [result]

    @abstractmethod
    def explain(self, batch: list[Loaded], method: MethodConfig) -> list[Explanation]: ...

    def describe(self, loaded: Loaded, exp: Explanation) -> tuple[str | None, str | None]:
        """(prediction, target) as shown in the table."""
        return exp.label, None if loaded.target is None else str(loaded.target)

    def score(self, exp: Explanation) -> float:
        return float(exp.probability)

    def probability(self, exp: Explanation) -> float | None:
        return float(exp.probability)

    @abstractmethod
    def rescore(self, loaded: Loaded, exp: Explanation, variants: list) -> np.ndarray: ...

    def deletion(self, loaded: Loaded, exp: Explanation, order: str = "positive") -> PerturbationCurve:
        """Patches of the model's view removed most relevant first (``order="negative"``: least relevant first), the
        score re-read after each share."""
        if exp.image is None or exp.heatmap is None or np.ndim(exp.heatmap) != 2:
            raise InputError("the deletion test needs a map over the image's patches or pixels; this explanation has "
                             "none (set evaluation.perturbation: false)")
        view, heatmap = np.asarray(exp.image), np.asarray(exp.heatmap, dtype=np.float64)
        if view.shape[0] % heatmap.shape[0] or view.shape[1] % heatmap.shape[1]:
            heatmap = cv2.resize(heatmap, (view.shape[1], view.shape[0]), interpolation=cv2.INTER_NEAREST)
        pixels = torch.from_numpy(view.astype(np.float32)).permute(2, 0, 1)

        def predict(batch: torch.Tensor) -> np.ndarray:
            images = [Image.fromarray(x.permute(1, 2, 0).round().clamp(0, 255).byte().numpy()) for x in batch]
            return self.rescore(loaded, exp, images)

        return perturbation_curve(predict, pixels, heatmap, order=order, steps=self.config.evaluation.steps,
                                  baseline="mean")

    def truth(self, loaded: Loaded, exp: Explanation) -> dict[str, float]:
        return {}


def _token_truth(exp: Explanation, words) -> tuple[np.ndarray, np.ndarray]:
    """Token scores and their ground truth over the text's content tokens (special tokens left out)."""
    special = (np.asarray(exp.special_tokens, dtype=bool) if exp.special_tokens is not None
               else np.array([t.startswith("[") and t.endswith("]") for t in exp.tokens]))
    tokens = np.asarray(exp.tokens)[~special]
    return np.asarray(exp.scores)[~special], np.isin(tokens, list(words))


class ImageClassification(Task):
    def explain(self, batch, method):
        return self._explain(method, [item.image for item in batch], target=[item.target for item in batch])

    def rescore(self, loaded, exp, variants):
        return np.array([e.probability for e in self._probe(variants, target=exp.target)])

    def truth(self, loaded, exp):
        label = next((label for label in loaded.scene.labels.values() if label.value == exp.label), None)
        return ground_truth_metrics(exp.heatmap, label.mask) if label is not None else {}


class TextClassification(Task):
    def explain(self, batch, method):
        pairs = [item.text_pair for item in batch]
        return self._explain(method, [item.text for item in batch], target=[item.target for item in batch],
                             text_pair=pairs if any(p is not None for p in pairs) else None)

    def deletion(self, loaded, exp, order="positive"):
        """Words removed most relevant first, or least (a text left without words is read as '.')."""
        words = list(exp.words or exp.tokens)
        scores = np.asarray(exp.word_scores if exp.words else exp.scores, dtype=np.float64)

        def predict(batch: torch.Tensor) -> np.ndarray:
            texts = [" ".join(words[i] for i in row.tolist() if i >= 0) or PLACEHOLDER_TEXT for row in batch]
            return self.rescore(loaded, exp, texts)

        return perturbation_curve(predict, torch.arange(len(words)), scores, order=order,
                                  steps=self.config.evaluation.steps, baseline=-1)

    def rescore(self, loaded, exp, variants):
        pairs = None if loaded.text_pair is None else [loaded.text_pair] * len(variants)
        return np.array([e.probability for e in self._probe(variants, target=exp.target, text_pair=pairs)])


class ImageTextSimilarity(Task):
    def explain(self, batch, method):
        return [_single(self._explain(method, image=item.image, text=item.caption)) for item in batch]

    def describe(self, loaded, exp):
        return f"{exp.similarity:.4f}", None

    def score(self, exp):
        return float(exp.similarity)

    def probability(self, exp):
        return None

    def rescore(self, loaded, exp, variants):
        return np.array([e.similarity for e in self._probe(image=variants, text=loaded.caption)])

    def truth(self, loaded, exp):
        objects = caption_objects(loaded.scene, loaded.caption)
        if objects is None:
            return {}
        words = {word for obj in objects for word in (obj.colour, obj.shape)}
        return ground_truth_metrics(exp.heatmap, objects[0].mask | objects[1].mask, *_token_truth(exp, words))


class VisualQuestionAnswering(Task):
    def explain(self, batch, method):
        return [_single(self._explain(method, image=item.image, question=item.question, target=item.target))
                for item in batch]

    def describe(self, loaded, exp):
        return exp.answer, None if loaded.target is None else str(loaded.target)

    def rescore(self, loaded, exp, variants):
        return np.array([e.probability for e in self._probe(image=variants, question=loaded.question,
                                                            target=exp.answer)])

    def truth(self, loaded, exp):
        question = loaded.scene_question
        return ground_truth_metrics(exp.heatmap, question.mask, *_token_truth(exp, question.grounding_words))


def _mean_of_finite(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _token_probability(exp: Explanation) -> float:
    """A caption's probability per token: the geometric mean over its tokens, comparable across lengths."""
    return math.exp(float(np.mean([step.log_prob for step in exp.steps]))) if exp.steps else float("nan")


class Captioning(Task):
    """The item's caption by teacher forcing when it has one, else the caption the model generates."""

    def explain(self, batch, method):
        return [_single(self._explain(method, image=item.image, **({"caption": item.caption} if item.caption else {})))
                for item in batch]

    def describe(self, loaded, exp):
        return exp.caption, loaded.caption

    def score(self, exp):
        return _token_probability(exp)

    def rescore(self, loaded, exp, variants):
        return np.array([_token_probability(e) for e in self._probe(image=variants, caption=exp.caption)])

    def truth(self, loaded, exp):
        per_word = [ground_truth_metrics(exp.steps[position].heatmap, obj.mask)
                    for position, obj in caption_word_objects(loaded.scene, exp.caption).items()
                    if position < len(exp.steps) and exp.steps[position].token == exp.caption.split()[position]]
        return {name: _mean_of_finite([m[name] for m in per_word]) for name in per_word[0]} if per_word else {}


TASKS = {"image-classification": ImageClassification, "text-classification": TextClassification,
         "image-text-similarity": ImageTextSimilarity, "vqa": VisualQuestionAnswering, "captioning": Captioning}


def make_task(explainer: Explainer, config: RunConfig) -> Task:
    return TASKS[config.task](explainer, config)
