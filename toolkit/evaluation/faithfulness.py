"""How faithful explanations are, on any data and any family: ``evaluate(explainer, inputs, methods=[...])``.

Every explained decision becomes a :class:`Probe`: its units (the tokens of a text or of a prompt, the patches of an
image; for CLIP and VQA the image side, the text fixed; for captions and language models one probe per explained
token, with the same earlier tokens), their relevance, and the score the model gives a perturbed copy:

- text and image classifiers (zero-shot labels): the explained class's probability; a one-logit model (sentence
  similarity) its logit (the cosine);
- CLIP / SigLIP: the cosine similarity of the pair; ViLT: the answer's probability (its head's sigmoid);
- captioners and language models: the log-probability of the explained token after the same earlier tokens.

Metrics (``HIGHER_IS_BETTER`` says which way is better):

- ``morf_auc`` / ``lerf_auc``: the area under the score over 0, 10, ..., 90% of the units removed (0% included),
  most / least relevant first (Chefer et al., CVPR 2021, sec. 4; :func:`toolkit.evaluation.metrics.perturbation_curve`
  is the one-example form, and the same curve); ``lerf_minus_morf`` the area between the two curves. Tokens are
  deleted from the sequence (``removal="drop"``, as ERASER does) or replaced by the mask token (``"mask"``); patches
  are set to 0, the normalisation mean. Special tokens, and a language model's first and read-out (last) positions,
  are never removed.
- ``comprehensiveness`` / ``sufficiency`` (ERASER: DeYoung et al., ACL 2020), tokens only: the probability of the
  explained class or token less that after deleting the top k% tokens (comprehensiveness, higher is better) or after
  deleting all but them (sufficiency, lower is better), averaged over the bins k of ``ERASER_BINS`` (AOPC). A bin
  removes at least one token.
- ``mass_accuracy``, ``rank_accuracy``, ``pointing_game`` where an item carries a ground-truth mask (``truth``): a
  2-d mask scores the image map, a 1-d one the token scores, special tokens left out (:mod:`.metrics`).

The pseudo-method ``"random"`` (:data:`RANDOM`) scores relevance drawn uniformly at random for every decision
(seeded): the baseline an explanation must beat.

Every perturbed copy of every probe of a method goes through the model in batches of ``batch_size`` under
``torch.no_grad()``, with the model's fused attention (:func:`fused_attention`; the explanations themselves run as
the explainer runs them). :func:`compare` gives the paired difference of two methods on the same decisions.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..core.explicit_attention import _hf_configs
from ..errors import InputError, UnsupportedModelError
from ..explanation import Explanation
from ..images import patch_relevance
from .metrics import (DEFAULT_STEPS, PerturbationCurve, mean_confidence_interval, pointing_game, ranked_units,
                      relevance_mass_accuracy, relevance_rank_accuracy, removal_masks, token_pointing_game,
                      token_relevance_mass_accuracy, token_relevance_rank_accuracy)

DELETION_METRICS = ("morf_auc", "lerf_auc", "lerf_minus_morf")
ERASER_METRICS = ("comprehensiveness", "sufficiency")
TRUTH_METRICS = ("mass_accuracy", "rank_accuracy", "pointing_game")
METRICS = DELETION_METRICS + ERASER_METRICS + TRUTH_METRICS
HIGHER_IS_BETTER = {"morf_auc": False, "lerf_auc": True, "lerf_minus_morf": True, "comprehensiveness": True,
                    "sufficiency": False, "mass_accuracy": True, "rank_accuracy": True, "pointing_game": True,
                    "seconds": False}
ERASER_BINS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.2, 0.5)
REMOVALS = ("drop", "mask")


# --- attention ---------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def fused_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` with fused attention inside the block (Hugging Face "sdpa" where the model supports it, timm's
    ``fused_attn``): scoring needs no attention probabilities. Every setting is put back on exit."""
    configs = _hf_configs(model)
    previous = [(config, config._attn_implementation) for config in configs]
    timm = [(module, module.fused_attn) for module in model.modules() if isinstance(getattr(module, "fused_attn", None), bool)]
    pretrained = [module for module in model.modules() if hasattr(module, "_supports_sdpa") and hasattr(module, "config")]
    try:
        for module, _ in timm:
            module.fused_attn = True
        if pretrained and all(_supports_sdpa(module) for module in pretrained):
            for config in configs:
                if config._attn_implementation == "eager":
                    config._attn_implementation = "sdpa"
        yield model
    finally:
        for module, fused in timm:
            module.fused_attn = fused
        for config, implementation in previous:
            config._attn_implementation = implementation


def _supports_sdpa(module: nn.Module) -> bool:
    supported = getattr(module, "_supports_sdpa", False)
    return bool(supported() if callable(supported) else supported)


# --- what is perturbed and scored --------------------------------------------------------------------------------

@dataclass
class Row:
    """One (perturbed) input: 1-d tensors (token sequences, padded when stacked) or fixed-shape ones (pixels), and
    the explained class or token."""

    tensors: dict[str, torch.Tensor]
    target: int


def _padded(rows: list[Row], key: str, value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows' ``key`` sequences right-padded with ``value``, and the attention mask."""
    length = max(row.tensors[key].shape[0] for row in rows)
    ids = torch.full((len(rows), length), value, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for index, row in enumerate(rows):
        sequence = row.tensors[key]
        ids[index, :sequence.shape[0]] = sequence
        mask[index, :sequence.shape[0]] = 1
    return ids, mask


class Scorer:
    """Scores a list of rows of one model in one forward; ``log_scores``: the scores are log-probabilities."""

    log_scores = False

    def __init__(self, adapter: Any):
        self.adapter = adapter

    @property
    def device(self) -> torch.device:
        return self.adapter.device

    def __call__(self, rows: list[Row]) -> np.ndarray:
        targets = torch.tensor([row.target for row in rows], device=self.device)
        scores = self.scores(rows, targets)
        return scores.detach().float().cpu().numpy()

    def scores(self, rows: list[Row], targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def stacked(self, rows: list[Row], key: str) -> torch.Tensor:
        dtype = next(self.adapter.model.parameters()).dtype
        return torch.stack([row.tensors[key] for row in rows]).to(self.device, dtype)

    def tokens(self, rows: list[Row], key: str = "input_ids") -> dict[str, torch.Tensor]:
        """Padded token sequences: ``key``, the attention mask, and every other 1-d sequence of the rows (token
        type ids) padded with 0."""
        ids, mask = _padded(rows, key, self.pad_id)
        inputs = {key: ids.to(self.device), "attention_mask": mask.to(self.device)}
        for other, tensor in rows[0].tensors.items():
            if other != key and tensor.dim() == 1 and tensor.dtype == torch.long and other != "pixel_mask":
                inputs[other] = _padded(rows, other, 0)[0].to(self.device)
        return inputs

    @property
    def pad_id(self) -> int:
        tokenizer = getattr(self.adapter.processor, "tokenizer", self.adapter.processor)
        pad = getattr(tokenizer, "pad_token_id", None)
        return 0 if pad is None else int(pad)


class ClassifierScorer(Scorer):
    """The explained class's probability (text and image classifiers); for a model with one logit, whose
    probability is always 1, the logit itself (sentence similarity: the cosine)."""

    def scores(self, rows, targets):
        from ..adapters import Batch

        inputs = self.tokens(rows) if "input_ids" in rows[0].tensors else {"pixel_values": self.stacked(rows, "pixel_values")}
        empty = torch.zeros(len(rows), 0, dtype=torch.bool)
        logits = self.adapter.logits(Batch(inputs, empty, empty)).float()
        return (logits if logits.shape[-1] == 1 else logits.softmax(-1)).gather(1, targets[:, None])[:, 0]


class SimilarityScorer(Scorer):
    """The cosine similarity of each image-text pair (CLIP, SigLIP: their projected embeddings, normalised)."""

    def scores(self, rows, targets):
        text = self.tokens(rows)
        out = self.adapter.model(input_ids=text["input_ids"], attention_mask=text["attention_mask"],
                                 pixel_values=self.stacked(rows, "pixel_values"))
        image, words = (torch.nn.functional.normalize(e.float(), dim=-1) for e in (out.image_embeds, out.text_embeds))
        return (image * words).sum(-1)


class AnswerScorer(Scorer):
    """The answer's probability: the sigmoid of its logit, as ViLT's multi-label VQA head is trained and
    ``explain`` reports it."""

    def scores(self, rows, targets):
        logits = self.adapter.model(**self.tokens(rows), pixel_values=self.stacked(rows, "pixel_values"),
                                    pixel_mask=torch.stack([row.tensors["pixel_mask"] for row in rows]).to(self.device)
                                    ).logits
        return logits.float().gather(1, targets[:, None])[:, 0].sigmoid()


class NextTokenScorer(Scorer):
    """log p(explained token | the earlier tokens), read at each row's last position (captioners with the image,
    language models)."""

    log_scores = True

    def scores(self, rows, targets):
        text = self.tokens(rows)
        if "pixel_values" in rows[0].tensors:
            logits = self.adapter.text_logits(self.stacked(rows, "pixel_values"), text["input_ids"],
                                              text["attention_mask"])
        else:
            logits = self.adapter.layout.forward(**text).logits
        last = text["attention_mask"].sum(1) - 1
        log_probs = logits[torch.arange(len(rows), device=self.device), last].float().log_softmax(-1)
        return log_probs.gather(1, targets[:, None])[:, 0]

    @property
    def pad_id(self) -> int:
        return int(self.adapter.pad_id)


@dataclass
class Probe:
    """One explained decision, made perturbable: the relevance of its units (1-d tokens, 2-d patch grid), the units
    never removed, the unperturbed input, and how a removal becomes a row. ``truth``: a ground-truth mask (2-d over
    the image's pixels, or 1-d over the tokens), if any."""

    item: int
    step: int | None
    relevance: np.ndarray
    protected: np.ndarray | None
    row: Row
    perturb: Callable[[Row, np.ndarray], Row]
    truth: np.ndarray | None = None

    @property
    def tokens(self) -> bool:
        return self.relevance.ndim == 1

    def removed(self, flat_removed: np.ndarray) -> Row:
        return self.perturb(self.row, flat_removed)


def drop_tokens(mask_id: int | None) -> Callable[[Row, np.ndarray], Row]:
    """Tokens removed: deleted from every 1-d sequence of the row (``mask_id`` None), or their ids replaced."""
    def perturb(row: Row, removed: np.ndarray) -> Row:
        removed_t = torch.from_numpy(removed)
        if mask_id is None:
            kept = {key: (value[~removed_t] if value.dim() == 1 and value.shape[0] == removed.size else value)
                    for key, value in row.tensors.items()}
        else:
            kept = dict(row.tensors, input_ids=row.tensors["input_ids"].masked_fill(removed_t, mask_id))
        return Row(kept, row.target)
    return perturb


def blank_patches(grid: tuple[int, int]) -> Callable[[Row, np.ndarray], Row]:
    """Patches removed: their pixels set to 0 (the normalisation mean of normalised pixels)."""
    def perturb(row: Row, removed: np.ndarray) -> Row:
        pixels = row.tensors["pixel_values"]
        height, width = pixels.shape[-2:]
        if height % grid[0] or width % grid[1]:
            raise InputError(f"the image ({height}x{width}) does not split into the relevance grid {grid}")
        cells = torch.from_numpy(removed.reshape(grid))
        pixel_mask = cells.repeat_interleave(height // grid[0], 0).repeat_interleave(width // grid[1], 1)
        return Row(dict(row.tensors, pixel_values=pixels.masked_fill(pixel_mask, 0.0)), row.target)
    return perturb


# --- items and families ------------------------------------------------------------------------------------------

@dataclass
class Item:
    """One input to explain: ``inputs`` for a classifier or a language model's prompt, ``keywords`` for image-text
    models (image=, text= / question= / caption=), a ``target`` (None: the predicted one), and a ground-truth mask
    ``truth`` (for captions, a mapping from step to mask)."""

    inputs: Any = None
    keywords: dict[str, Any] = field(default_factory=dict)
    target: Any = None
    truth: Any = None

    def step_truth(self, step: int) -> Any:
        """The ground truth of one explained token of a caption or continuation."""
        return self.truth.get(step) if isinstance(self.truth, Mapping) else self.truth


def as_items(inputs: Any, image_text: bool) -> list[Item]:
    """Items from a list of inputs; a mapping is read as the keywords of an item (with ``inputs``, ``target`` and
    ``truth`` taken out), anything else as a classifier's input or a prompt."""
    if isinstance(inputs, Item) or isinstance(inputs, (str, Mapping)) or not isinstance(inputs, Sequence):
        inputs = [inputs]
    if not inputs:
        raise InputError("Nothing to evaluate: pass a list of inputs (texts, images, or mappings of keywords).")
    items = []
    for index, value in enumerate(inputs):
        if isinstance(value, Item):
            items.append(value)
        elif isinstance(value, Mapping):
            keywords = dict(value)
            items.append(Item(keywords.pop("inputs", None), keywords, keywords.pop("target", None),
                              keywords.pop("truth", None)))
        elif image_text:
            raise InputError(f"Input #{index}: an image-text model takes a mapping of keywords per item, e.g. "
                             "{'image': ..., 'text': ...} (CLIP), {'image': ..., 'question': ...} (VQA), "
                             "{'image': ...} (captioning).")
        else:
            items.append(Item(value))
    return items


class Family:
    """How one kind of model's items are explained and turned into probes."""

    scorer_class: type[Scorer] = ClassifierScorer

    def __init__(self, explainer: Any, removal: str):
        self.explainer, self.adapter, self.removal = explainer, explainer.adapter, removal
        self.scorer = self.scorer_class(self.adapter)

    def explain(self, items: list[Item], method: str, batch_size: int) -> list[Explanation]:
        return [self._single(self.explainer.explain(method=method, target=item.target, **item.keywords))
                for item in items]

    @staticmethod
    def _single(result: Explanation | list[Explanation]) -> Explanation:
        return result[0] if isinstance(result, list) else result

    def probes(self, index: int, item: Item, explanation: Explanation) -> list[Probe]:
        raise NotImplementedError

    def patch_grid(self, heatmap: np.ndarray, explanation: Explanation) -> tuple[int, int]:
        """The patch grid an image-text heatmap is scored on: its own shape, or, for a per-pixel map (the LRP rules'
        methods: the size of the image the model saw), that size over the patch size."""
        if tuple(heatmap.shape) != tuple(explanation.image.shape[:2]):
            return tuple(heatmap.shape)
        rows, cols = self.adapter.patch_stride()
        return heatmap.shape[0] // rows, heatmap.shape[1] // cols

    def token_perturbation(self) -> Callable[[Row, np.ndarray], Row]:
        if self.removal == "drop":
            return drop_tokens(None)
        tokenizer = getattr(self.adapter.processor, "tokenizer", self.adapter.processor)
        mask = next((i for i in (getattr(tokenizer, "mask_token_id", None), getattr(tokenizer, "unk_token_id", None))
                     if i is not None), None)
        if mask is None:
            raise InputError('removal="mask" needs a tokenizer with a mask or unknown token; use removal="drop".')
        return drop_tokens(int(mask))


class ClassifierFamily(Family):
    """Classifiers explain all items in batches of the explainer's own."""

    def explain(self, items, method, batch_size):
        return self.explainer.explain([item.inputs for item in items], method=method,
                                      target=[item.target for item in items], batch_size=batch_size, progress=False)


class TextClassifierFamily(ClassifierFamily):
    def probes(self, index, item, explanation):
        batch = self.adapter.prepare([item.inputs])
        valid = batch.token_mask[0].cpu()
        tensors = {key: value[0].cpu()[valid] for key, value in batch.model_inputs.items() if key != "attention_mask"}
        return [Probe(index, None, np.asarray(explanation.scores, np.float64), explanation.special_tokens,
                      Row(tensors, explanation.target), self.token_perturbation(), item.truth)]


class ImageClassifierFamily(ClassifierFamily):
    def probes(self, index, item, explanation):
        batch = self.adapter.prepare([item.inputs])
        grid = batch.samples[0]["grid"]
        return [Probe(index, None, patch_relevance(explanation.heatmap, grid), None,
                      Row({"pixel_values": batch.model_inputs["pixel_values"][0].cpu()}, explanation.target),
                      blank_patches(grid), item.truth)]


class SimilarityFamily(Family):
    scorer_class = SimilarityScorer

    def probes(self, index, item, explanation):
        image_processor, tokenizer = self.adapter.processor.image_processor, self.adapter.processor.tokenizer
        pixels = image_processor(images=self.adapter.images(item.keywords["image"]), return_tensors="pt")["pixel_values"]
        limit = self.adapter.model.config.text_config.max_position_embeddings
        ids = tokenizer([item.keywords["text"]], truncation=True, max_length=limit, return_tensors="pt")["input_ids"]
        grid = self.patch_grid(explanation.heatmap, explanation)
        return [Probe(index, None, patch_relevance(explanation.heatmap, grid), None,
                      Row({"pixel_values": pixels[0], "input_ids": ids[0]}, 0), blank_patches(grid), item.truth)]


class AnswerFamily(Family):
    scorer_class = AnswerScorer

    def probes(self, index, item, explanation):
        image_processor, tokenizer = self.adapter.processor.image_processor, self.adapter.processor.tokenizer
        visual = image_processor(images=self.adapter.images(item.keywords["image"]), return_tensors="pt")
        enc = tokenizer([item.keywords["question"]], truncation=True,
                        max_length=self.adapter.model.config.max_position_embeddings, return_tensors="pt")
        tensors = {key: value[0] for key, value in enc.items() if key != "attention_mask"}
        tensors.update(pixel_values=visual["pixel_values"][0], pixel_mask=visual["pixel_mask"][0])
        grid = self.patch_grid(explanation.heatmap, explanation)
        return [Probe(index, None, patch_relevance(explanation.heatmap, grid), None, Row(tensors, explanation.target),
                      blank_patches(grid), item.truth)]


class CaptionFamily(Family):
    """One probe per caption token: its image map, the image perturbed, the earlier tokens kept."""

    scorer_class = NextTokenScorer

    def probes(self, index, item, explanation):
        pixels = self.adapter.pixel_values(self.adapter.images(item.keywords["image"]))[0].cpu()
        prompt, probes = self.adapter.prompt_ids(), []
        for position, step in enumerate(explanation.steps):
            earlier = prompt + [s.token_id for s in explanation.steps[:position]]
            grid = self.patch_grid(step.heatmap, explanation)
            probes.append(Probe(index, position, patch_relevance(step.heatmap, grid), None,
                                Row({"pixel_values": pixels, "input_ids": torch.tensor(earlier)}, step.token_id),
                                blank_patches(grid), item.step_truth(position)))
        return probes


class LanguageModelFamily(Family):
    """One probe per explained token: the relevance of the tokens before it, which are perturbed. Kept: the first
    position (the attention sink), special tokens, and the last position, where the token is read out (as a
    classifier's [CLS] is: deleting it moves the read-out, and the identity term of rollout-style methods lands
    there)."""

    scorer_class = NextTokenScorer

    def explain(self, items, method, batch_size):
        if any(item.keywords for item in items):
            return [self._single(self.explainer.explain(item.inputs, method=method, target=item.target,
                                                        **item.keywords)) for item in items]
        return self.explainer.explain([item.inputs for item in items], method=method,
                                      target=[item.target for item in items], batch_size=batch_size, progress=False)

    def probes(self, index, item, explanation):
        prompt = self.adapter.prompt_ids([item.inputs])[0]
        probes = []
        for position, step in enumerate(explanation.steps):
            earlier = prompt + [s.token_id for s in explanation.steps[:position]]
            special = np.zeros(len(earlier), dtype=bool)
            special[:len(prompt)] = explanation.special_tokens
            special[-1] = True
            probes.append(Probe(index, position, np.asarray(step.text_scores, np.float64), special,
                                Row({"input_ids": torch.tensor(earlier)}, step.token_id), self.token_perturbation(),
                                item.step_truth(position)))
        return probes


def family_of(explainer: Any, removal: str = "drop") -> Family:
    """The :class:`Family` that evaluates ``explainer``'s model."""
    from ..adapters import CausalLMAdapter
    from ..adapters.hf_text import TextClassifierAdapter
    from ..adapters.vision import ImageClassifierAdapter
    from ..multimodal.captioning import CaptioningAdapter
    from ..multimodal.clip import HFCLIPAdapter
    from ..multimodal.vilt import ViltVQAAdapter

    if removal not in REMOVALS:
        raise InputError(f"removal must be one of {REMOVALS}; got {removal!r}.")
    for adapter_class, family in ((CausalLMAdapter, LanguageModelFamily), (TextClassifierAdapter, TextClassifierFamily),
                                  (ImageClassifierAdapter, ImageClassifierFamily), (HFCLIPAdapter, SimilarityFamily),
                                  (ViltVQAAdapter, AnswerFamily), (CaptioningAdapter, CaptionFamily)):
        if isinstance(explainer.adapter, adapter_class):
            return family(explainer, removal)
    raise UnsupportedModelError(
        f"Faithfulness evaluation does not know how to perturb and score {type(explainer.model).__name__} "
        f"({getattr(explainer.adapter, 'family', '?')}); it covers text and image classifiers, language models, "
        "Hugging Face CLIP and SigLIP, ViLT question answering and captioners.")


# --- the metrics of one probe ------------------------------------------------------------------------------------

@dataclass
class ProbeResult:
    """The curves and metric values of one probe under one method."""

    item: int
    step: int | None
    curves: dict[str, PerturbationCurve]
    values: dict[str, float]


def eraser_bins_removed(relevance: np.ndarray, protected: np.ndarray | None, bins: Sequence[float]
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(rows removing the top k% tokens, rows removing all but them), one per bin: k% of the removable tokens
    rounded half up, at least one."""
    ranked = ranked_units(relevance, "positive", protected)
    removable = np.zeros(relevance.size, dtype=bool)
    removable[ranked] = True
    top = np.zeros((len(bins), relevance.size), dtype=bool)
    for row, share in enumerate(bins):
        top[row, ranked[:max(1, math.floor(share * ranked.size + 0.5))]] = True
    return top, removable[None] & ~top


class Plan:
    """Every perturbed row of a set of probes, deduplicated, scored in batches, and read back per probe."""

    def __init__(self, scorer: Scorer, steps: Sequence[float], bins: Sequence[float], metrics: Sequence[str]):
        self.scorer, self.steps, self.bins, self.metrics = scorer, tuple(steps), tuple(bins), tuple(metrics)
        self.rows: list[Row] = []
        self.index: dict[tuple[int, bytes], int] = {}

    def _add(self, key: int, probe: Probe, removed: np.ndarray) -> list[int]:
        positions = []
        for mask in removed:
            slot = (key, mask.tobytes())
            if slot not in self.index:
                self.index[slot] = len(self.rows)
                self.rows.append(probe.removed(mask))
            positions.append(self.index[slot])
        return positions

    def requests(self, key: int, probe: Probe) -> dict[str, Any]:
        """The rows ``probe`` needs, by what they are for."""
        wanted = {}
        if any(metric in self.metrics for metric in DELETION_METRICS):
            for order in ("positive", "negative"):
                fractions, removed = removal_masks(probe.relevance, order, self.steps, probe.protected)
                wanted[order] = (fractions, self._add(key, probe, removed))
        if probe.tokens and any(metric in self.metrics for metric in ERASER_METRICS):
            top, rest = eraser_bins_removed(probe.relevance, probe.protected, self.bins)
            wanted["full"] = self._add(key, probe, np.zeros((1, probe.relevance.size), dtype=bool))
            wanted["comprehensiveness"], wanted["sufficiency"] = self._add(key, probe, top), self._add(key, probe, rest)
        return wanted

    def score(self, batch_size: int, progress: bool) -> np.ndarray:
        chunks = range(0, len(self.rows), batch_size)
        scores = [self.scorer(self.rows[start:start + batch_size])
                  for start in tqdm(chunks, desc="perturbations", unit="batch", disable=not progress, leave=False)]
        return np.concatenate(scores) if scores else np.zeros(0)


def _truth_values(probe: Probe) -> dict[str, float]:
    if probe.truth is None:
        return {}
    truth = np.asarray(probe.truth, dtype=bool)
    if truth.ndim == 2:
        heatmap = probe.relevance
        return {"mass_accuracy": relevance_mass_accuracy(heatmap, truth),
                "rank_accuracy": relevance_rank_accuracy(heatmap, truth), "pointing_game": pointing_game(heatmap, truth)}
    if truth.shape != probe.relevance.shape:
        raise InputError(f"Item #{probe.item}: the token ground truth has {truth.size} entries for "
                         f"{probe.relevance.size} tokens.")
    content = np.ones(truth.size, dtype=bool) if probe.protected is None else ~np.asarray(probe.protected, dtype=bool)
    scores, mask = probe.relevance[content], truth[content]
    if not mask.any():
        return {}
    return {"mass_accuracy": token_relevance_mass_accuracy(scores, mask),
            "rank_accuracy": token_relevance_rank_accuracy(scores, mask), "pointing_game": token_pointing_game(scores, mask)}


def probe_results(probes: list[Probe], scorer: Scorer, metrics: Sequence[str] = METRICS,
                  steps: Sequence[float] = DEFAULT_STEPS, bins: Sequence[float] = ERASER_BINS, batch_size: int = 64,
                  progress: bool = False) -> list[ProbeResult]:
    """The metrics of every probe, all perturbed rows scored together in batches under no-grad and fused attention."""
    plan = Plan(scorer, steps, bins, metrics)
    wanted = [plan.requests(key, probe) for key, probe in enumerate(probes)]
    model = scorer.adapter.model
    with fused_attention(model), torch.no_grad():
        scores = plan.score(batch_size, progress)
    results = []
    for probe, needs in zip(probes, wanted):
        curves = {order: PerturbationCurve(order, needs[order][0], scores[needs[order][1]])
                  for order in ("positive", "negative") if order in needs}
        values: dict[str, float] = {}
        if curves:
            values.update(morf_auc=curves["positive"].auc, lerf_auc=curves["negative"].auc)
            values["lerf_minus_morf"] = values["lerf_auc"] - values["morf_auc"]
        if "full" in needs:
            probability = np.exp if scorer.log_scores else (lambda x: x)
            full = probability(scores[needs["full"][0]])
            values["comprehensiveness"] = float(np.mean(full - probability(scores[needs["comprehensiveness"]])))
            values["sufficiency"] = float(np.mean(full - probability(scores[needs["sufficiency"]])))
        values.update(_truth_values(probe))
        results.append(ProbeResult(probe.item, probe.step, curves,
                                   {name: value for name, value in values.items() if name in metrics}))
    return results


# --- the entry points --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Comparison:
    """``method_a`` against ``method_b`` on ``metric`` over the same decisions: the mean of a - b with its 95% CI
    half-width; ``better`` names the method the interval favours (None when it includes 0)."""

    method_a: str
    method_b: str
    metric: str
    difference: float
    ci95: float
    count: int

    @property
    def better(self) -> str | None:
        if not self.ci95 < abs(self.difference):
            return None
        a_higher = self.difference > 0
        return self.method_a if a_higher == HIGHER_IS_BETTER.get(self.metric, True) else self.method_b


@dataclass
class Evaluation:
    """Per-decision rows (item, step, method, metric values, seconds per explanation) and their summary."""

    rows: list[dict[str, Any]]
    methods: list[str]
    metrics: list[str]
    refused: dict[str, str] = field(default_factory=dict)

    def values(self, method: str, metric: str) -> dict[tuple[int, int | None], float]:
        return {(row["item"], row["step"]): row[metric] for row in self.rows
                if row["method"] == method and metric in row}

    def summary(self) -> dict[str, dict[str, tuple[float, float, int]]]:
        """method -> metric -> (mean, 95% CI half-width, count) over the decisions with a finite value; ``seconds``
        is the explanation time per explained item."""
        table = {}
        for method in self.methods:
            table[method] = {}
            for metric in [*self.metrics, "seconds"]:
                values = np.asarray(list(self.values(method, metric).values()), dtype=np.float64)
                values = values[np.isfinite(values)]
                if values.size:
                    table[method][metric] = (*mean_confidence_interval(values), int(values.size))
        return table

    def compare(self, method_a: str, method_b: str, metrics: Sequence[str] | None = None) -> list[Comparison]:
        """:func:`compare` on every metric (default: the evaluation's) both methods have finite values of."""
        return [compare(self, method_a, method_b, metric) for metric in (metrics or self.metrics)
                if self.paired(method_a, method_b, metric).size]

    def paired(self, method_a: str, method_b: str, metric: str) -> np.ndarray:
        """The differences a - b of ``metric`` on the decisions where both are finite."""
        a, b = self.values(method_a, metric), self.values(method_b, metric)
        return np.array([a[key] - b[key] for key in a if key in b and np.isfinite(a[key]) and np.isfinite(b[key])])

    def table(self, reference: str | None = None) -> str:
        """The summary as text, one line per method, with each method's paired difference from ``reference``."""
        summary = self.summary()
        shown = [metric for metric in self.metrics if any(metric in summary[m] for m in self.methods)]
        header = f"{'method':26s}" + "".join(f"{metric:>22s}" for metric in shown) + f"{'s/explanation':>16s}"
        lines = [header, "-" * len(header)]
        for method in self.methods:
            cells = [f"{summary[method][m][0]:9.4f} ± {summary[method][m][1]:<8.4f}   " if m in summary[method]
                     else f"{'—':>22s}" for m in shown]
            seconds = summary[method].get("seconds", (math.nan,))[0]
            lines.append(f"{method:26s}" + "".join(cells) + f"{seconds:16.4f}")
        if reference is not None:
            for method in self.methods:
                if method != reference:
                    for comparison in self.compare(method, reference, shown):
                        lines.append(f"  {method} - {reference} {comparison.metric}: {comparison.difference:+.4f} ± "
                                     f"{comparison.ci95:.4f} (n={comparison.count}; better: {comparison.better or '—'})")
        for method, reason in self.refused.items():
            lines.append(f"{method}: not applicable ({reason})")
        return "\n".join(lines)


def compare(evaluation: Evaluation, method_a: str, method_b: str, metric: str) -> Comparison:
    """The paired difference a - b of ``metric`` over the decisions both methods were scored on, mean ± 95% CI."""
    differences = evaluation.paired(method_a, method_b, metric)
    if not differences.size:
        raise InputError(f"{method_a!r} and {method_b!r} share no decision with a finite {metric!r}.")
    return Comparison(method_a, method_b, metric, *mean_confidence_interval(differences), differences.size)


RANDOM = "random"
RANDOM_SEED = 0


def _random_probes(family: Family, items: list[Item], explainer: Any, batch_size: int) -> list[Probe]:
    """The decisions of the cheapest applicable method (their inputs and targets), each unit's relevance drawn
    uniformly at random instead."""
    method = min(explainer.applicable_methods(), key=lambda name: name != "raw_attention")
    explanations = family.explain(items, method, batch_size)
    rng = np.random.default_rng(RANDOM_SEED)
    return [replace(probe, relevance=rng.random(probe.relevance.shape))
            for index, (item, explanation) in enumerate(zip(items, explanations))
            for probe in family.probes(index, item, explanation)]


def evaluate(explainer: Any, inputs: Any, methods: Sequence[str] | None = None, metrics: Sequence[str] = METRICS,
             batch_size: int = 64, progress: bool | None = None, steps: Sequence[float] = DEFAULT_STEPS,
             bins: Sequence[float] = ERASER_BINS, removal: str = "drop", explain_batch_size: int = 16) -> Evaluation:
    """Explain every input with every method and score the explanations (see the module docstring).

    ``inputs``: texts, images or prompts (or a list of :class:`Item` / mappings with ``inputs``, ``target``,
    ``truth``; image-text models take mappings of their keywords: ``{"image": ..., "text": ...}``). ``methods``:
    default every method that applies; one that does not apply is reported in ``refused``; ``"random"`` adds the
    random baseline. The time of each method's explanations is measured per item (``seconds``)."""
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise InputError(f"Unknown metrics {unknown}; available: {', '.join(METRICS)}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer; got {batch_size!r}.")
    from ..multimodal import MultimodalAdapter

    family = family_of(explainer, removal)
    items = as_items(inputs, isinstance(explainer.adapter, MultimodalAdapter))
    methods = list(methods or explainer.applicable_methods())
    refused = {method: reason for method in methods
               if method != RANDOM and (reason := explainer.method_refusal(method)) is not None}
    rows = []
    show = progress if progress is not None else len(items) * len(methods) > 20
    for method in tqdm([m for m in methods if m not in refused], desc="methods", disable=not show):
        if method == RANDOM:
            probes, seconds = _random_probes(family, items, explainer, explain_batch_size), 0.0
        else:
            family.explain(items[:1], method, explain_batch_size)  # first calls set things up: not timed
            start = time.perf_counter()
            explanations = family.explain(items, method, explain_batch_size)
            seconds = (time.perf_counter() - start) / len(items)
            probes = [probe for index, (item, explanation) in enumerate(zip(items, explanations))
                      for probe in family.probes(index, item, explanation)]
        for result in probe_results(probes, family.scorer, metrics, steps, bins, batch_size, bool(show)):
            rows.append({"item": result.item, "step": result.step, "method": method, "seconds": seconds,
                         **result.values})
    return Evaluation(rows, [m for m in methods if m not in refused], list(metrics), refused)


def faithfulness_of(explanation: Explanation, explainer: Any, inputs: Any, *, steps: Sequence[float] = DEFAULT_STEPS,
                    removal: str = "drop", batch_size: int = 64) -> list[ProbeResult]:
    """The MoRF and LeRF curves (and their AUCs, and ERASER for tokens) of one explanation already computed, e.g.
    for a demo's readout; one result per explained decision (a caption or continuation gives one per token).
    ``inputs`` is what was explained: the input (classifiers, prompts) or a mapping of the keywords."""
    from ..multimodal import MultimodalAdapter

    family = family_of(explainer, removal)
    item = as_items([inputs], isinstance(explainer.adapter, MultimodalAdapter))[0]
    probes = family.probes(0, item, explanation)
    return probe_results(probes, family.scorer, DELETION_METRICS + (ERASER_METRICS if probes[0].tokens else ()),
                         steps, ERASER_BINS, batch_size)
