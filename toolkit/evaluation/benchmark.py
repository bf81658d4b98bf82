"""Ground-truth benchmark: every applicable method on every built-in model over N held-out scenes.

Each explained decision has a known cause in the scene, so its explanation is scored against that cause's
mask (relevance mass and rank accuracy, pointing game; over the question or caption tokens too where the
words that name the cause are known) and by the perturbation tests of Chefer et al. (CVPR 2021): patches
are removed most relevant first (MoRF; lower AUC is better) or least relevant first (LeRF; higher is
better), replaced by the normalisation mean, while the explained score is tracked. What is explained, per
built-in model (:mod:`toolkit.zoo`):

- ``vit``: the true shape of the largest object; ground truth its mask; score: the class probability.
- ``clip``: the similarity of each scene with its first caption; ground truth the two captioned objects'
  masks and the caption's colour and shape words (special tokens are left out of the token metrics);
  score: the cosine similarity.
- ``vilt``: one question per scene (drawn with the benchmark's seed), its true answer; ground truth the
  question's mask and ``grounding_words``; score: the answer's probability.
- ``captioner``: the scene's first caption by teacher forcing; every step whose token is a colour or a
  shape word is one decision, grounded in the object the word belongs to ("red" and "circle" of "a red
  circle left of a blue square" in the circle); score: that token's probability. Steps of other tokens
  ("a", "left", "of") have no single object behind them and are left out.

Each table cell is the mean over decisions ± the half-width of its 95% confidence interval; the model's
accuracy on the same scenes is reported beside it. :func:`compare_methods` gives paired differences between
methods on the same decisions, which is how the perturbation claims of the literature are checked. The
intervals treat decisions as independent; the captioner's four words of a scene are not, so its intervals
are somewhat too narrow. Pixel-level maps (``lrp``) are perturbed pixel by pixel, patch maps patch by patch.
"""
from __future__ import annotations

import csv
import json
import random
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import ConfigError, warn
from ..explainer import Explainer
from ..methods import list_methods
from ..paths import output_folder
from ..zoo import MODULES, load, scene_captioner, scene_clip, scene_vilt, scene_vit
from ..zoo.common import BENCHMARK_SEED, caption_objects, caption_word_objects, scene_pixels
from ..zoo.common import scenes as held_out_scenes
from .metrics import (mean_confidence_interval, perturbation_auc, pointing_game, relevance_mass_accuracy,
                      relevance_rank_accuracy, token_pointing_game, token_relevance_mass_accuracy,
                      token_relevance_rank_accuracy)

METRICS = ("mass_accuracy", "rank_accuracy", "pointing_game", "token_mass_accuracy", "token_rank_accuracy",
           "token_pointing_game", "morf_auc", "lerf_auc")
IMAGE_METHODS = ("raw_attention", "rollout", "attention_gradcam", "generic", "transformer_attribution",
                 "partial_lrp", "lrp")
MODELS = tuple(name for name in MODULES if name != "lm")  # the models that see scenes
# Chefer et al. expect these to beat the attention baselines on the perturbation tests.
PROPOSED, BASELINES = ("transformer_attribution", "generic"), ("raw_attention", "rollout", "attention_gradcam")


@dataclass
class Case:
    """One explained decision: image relevance and its ground-truth mask, optionally token relevance and its
    token mask, and ``score``: the explained score of a batch of (perturbed) ``pixels``."""

    heatmap: np.ndarray
    mask: np.ndarray
    pixels: torch.Tensor
    score: Callable[[torch.Tensor], np.ndarray]
    token_scores: np.ndarray | None = None
    token_mask: np.ndarray | None = None

    def metrics(self) -> dict[str, float]:
        """Every metric of :data:`METRICS`; NaN where it does not apply (no token truth, no positive relevance)."""
        return {**ground_truth_metrics(self.heatmap, self.mask, self.token_scores, self.token_mask),
                "morf_auc": perturbation_auc(self.score, self.pixels, self.heatmap, order="positive"),
                "lerf_auc": perturbation_auc(self.score, self.pixels, self.heatmap, order="negative")}


def ground_truth_metrics(heatmap: np.ndarray, mask: np.ndarray, token_scores: np.ndarray | None = None,
                         token_mask: np.ndarray | None = None) -> dict[str, float]:
    """Relevance mass, rank accuracy and pointing game of an image map against its mask, and of token scores
    against their token mask (NaN without token truth or without positive relevance)."""
    values = {"mass_accuracy": relevance_mass_accuracy(heatmap, mask),
              "rank_accuracy": relevance_rank_accuracy(heatmap, mask),
              "pointing_game": pointing_game(heatmap, mask)}
    has_tokens = token_mask is not None and token_mask.any()
    for name, metric in (("token_mass_accuracy", token_relevance_mass_accuracy),
                         ("token_rank_accuracy", token_relevance_rank_accuracy),
                         ("token_pointing_game", token_pointing_game)):
        values[name] = metric(token_scores, token_mask) if has_tokens else float("nan")
    return values


@dataclass
class BenchmarkRow:
    """One method on one model: the table's row, and the per-decision values behind it."""

    model: str
    method: str
    scenes: int
    cases: int
    model_accuracy: float
    values: dict[str, tuple[float, float]]  # metric -> (mean, 95% CI half-width); NaN where it does not apply
    per_case: dict[str, list[float]] = field(default_factory=dict, repr=False)
    empty_maps: int = 0  # image maps without positive relevance: left out of the ground-truth means


def summarise(model: str, method: str, scenes: int, accuracy: float, cases: list[Case]) -> BenchmarkRow:
    per_case = {metric: [] for metric in METRICS}
    for case in cases:
        for metric, value in case.metrics().items():
            per_case[metric].append(value)
    values = {}
    for metric, raw in per_case.items():
        finite = np.asarray(raw, dtype=np.float64)
        finite = finite[np.isfinite(finite)]
        values[metric] = mean_confidence_interval(finite) if finite.size else (float("nan"), float("nan"))
    empty = sum(not (np.asarray(case.heatmap) > 0).any() for case in cases)
    return BenchmarkRow(model, method, scenes, len(cases), accuracy, values, per_case, empty)


# --- what is explained, per kind of model --------------------------------------------------------------

class BenchmarkTask(ABC):
    """A model, what its decisions are on a scene, and their ground truth."""

    def __init__(self, explainer: Explainer):
        self.explainer = explainer

    @property
    def model(self):
        return self.explainer.model

    def applicable(self, methods: tuple[str, ...]) -> tuple[str, ...]:
        """The methods this model can be explained with, in the order asked."""
        applicable = set(self.explainer.applicable_methods())
        return tuple(m for m in methods if m in applicable)

    @abstractmethod
    def accuracy(self, scenes: list) -> float: ...

    @abstractmethod
    def cases(self, method: str, scenes: list) -> list[Case]: ...


def _each_scene(scenes: list, method: str):
    """(scene, its model input pixels) for every scene, with a progress bar."""
    return tqdm(zip(scenes, scene_pixels(scenes)), total=len(scenes), desc=method, leave=False)


def _token_truth(explanation, tokenizer, words) -> tuple[np.ndarray, np.ndarray]:
    """Token relevance and ground truth over the text's own tokens: special tokens ([CLS], [SEP]) are left out,
    as the read-out token's relevance to itself says nothing about the text."""
    content = ~np.isin(explanation.tokens, tokenizer.all_special_tokens)
    return explanation.scores[content], np.isin(np.asarray(explanation.tokens)[content], list(words))


class ImageClassifierTask(BenchmarkTask):
    """An image classifier explained at each scene's true ``label``; ground truth: the label's mask."""

    def __init__(self, explainer: Explainer, label: str, classes: tuple[str, ...], batch_size: int = 32):
        super().__init__(explainer)
        self.label, self.classes, self.batch_size = label, classes, batch_size

    def _targets(self, scenes: list) -> list[int]:
        return [self.classes.index(scene.labels[self.label].value) for scene in scenes]

    def _pixels(self, scenes: list) -> torch.Tensor:
        return self.explainer.adapter.preprocess([scene.image for scene in scenes]).to(self.explainer.adapter.device)

    def accuracy(self, scenes: list) -> float:
        pixels = self._pixels(scenes)
        with torch.no_grad():
            predictions = torch.cat([self.model(chunk).argmax(-1) for chunk in pixels.split(self.batch_size)])
        return float((predictions.cpu() == torch.tensor(self._targets(scenes))).float().mean())

    def cases(self, method: str, scenes: list) -> list[Case]:
        targets = self._targets(scenes)
        explanations = self.explainer.explain([scene.image for scene in scenes], method=method, target=targets,
                                              batch_size=self.batch_size)

        def probability(target: int) -> Callable[[torch.Tensor], np.ndarray]:
            def score(batch: torch.Tensor) -> np.ndarray:
                with torch.no_grad():
                    return self.model(batch).softmax(-1)[:, target].numpy()
            return score

        return [Case(exp.heatmap, scene.labels[self.label].mask, x, probability(target))
                for exp, scene, x, target in zip(explanations, scenes, self._pixels(scenes), targets)]


class CLIPTask(BenchmarkTask):
    """Image-text similarity of each scene with its first caption."""

    def accuracy(self, scenes: list) -> float:
        return scene_clip.accuracy(self.model, self.explainer.adapter.processor.tokenizer, scenes)

    def cases(self, method: str, scenes: list) -> list[Case]:
        tokenizer = self.explainer.adapter.processor.tokenizer
        cases = []
        for scene, pixels in _each_scene(scenes, method):
            caption = scene.captions[0]
            exp = self.explainer.explain(image=scene.image, text=caption, method=method)
            subject, reference = caption_objects(scene, caption)
            words = (subject.colour, subject.shape, reference.colour, reference.shape)
            enc = tokenizer([caption], return_tensors="pt")

            def score(batch: torch.Tensor, enc=enc) -> np.ndarray:
                with torch.no_grad():
                    out = self.model(**enc, pixel_values=batch)
                    return (out.logits_per_image[:, 0] / self.model.logit_scale.exp()).numpy()

            cases.append(Case(exp.heatmap, subject.mask | reference.mask, pixels, score,
                              *_token_truth(exp, tokenizer, words)))
        return cases


class CaptionerTask(BenchmarkTask):
    """Every colour and shape word of each scene's first caption, explained by teacher forcing."""

    def accuracy(self, scenes: list) -> float:
        return scene_captioner.accuracy(self.model, self.explainer.adapter.processor.tokenizer, scenes)

    def cases(self, method: str, scenes: list) -> list[Case]:
        adapter = self.explainer.adapter
        start = adapter.prompt_ids()
        cases = []
        for scene, pixels in _each_scene(scenes, method):
            caption = scene.captions[0]
            exp = self.explainer.explain(image=scene.image, caption=caption, method=method)
            if [step.token for step in exp.steps] != caption.split():
                raise ConfigError(f"the captioner's tokenizer splits {caption!r} into {[s.token for s in exp.steps]}: "
                                  "the benchmark needs one token per word to ground its steps")
            for position, obj in caption_word_objects(scene, caption).items():
                step = exp.steps[position]
                prefix = torch.tensor([start + [s.token_id for s in exp.steps[:position]]])

                def score(batch: torch.Tensor, prefix=prefix, token=step.token_id) -> np.ndarray:
                    with torch.no_grad():
                        logits = self.model(pixel_values=batch, decoder_input_ids=prefix.expand(len(batch), -1)).logits
                        return logits[:, -1].softmax(-1)[:, token].numpy()

                cases.append(Case(step.heatmap, obj.mask, pixels, score))
        return cases


class VQATask(BenchmarkTask):
    """One question per scene, drawn with ``seed``, explained at its true answer."""

    def __init__(self, explainer: Explainer, seed: int):
        super().__init__(explainer)
        self.seed = seed

    def accuracy(self, scenes: list) -> float:
        return scene_vilt.accuracy(self.model, self.explainer.adapter.processor.tokenizer, scenes)

    def cases(self, method: str, scenes: list) -> list[Case]:
        tokenizer = self.explainer.adapter.processor.tokenizer
        rng = random.Random(self.seed)
        cases = []
        for scene, pixels in _each_scene(scenes, method):
            question = rng.choice(scene.questions)
            exp = self.explainer.explain(image=scene.image, question=question.text, target=question.answer,
                                         method=method)
            enc = tokenizer([question.text], return_tensors="pt")

            def score(batch: torch.Tensor, enc=enc, target=exp.target) -> np.ndarray:
                """The answer's probability: the sigmoid of its logit, as ViLT's multi-label VQA head is trained."""
                with torch.no_grad():
                    inputs = {k: v.expand(len(batch), -1) for k, v in enc.items()}
                    return self.model(**inputs, pixel_values=batch).logits[:, target].sigmoid().numpy()

            cases.append(Case(exp.heatmap, question.mask, pixels, score,
                              *_token_truth(exp, tokenizer, question.grounding_words)))
        return cases


def default_task(name: str, seed: int) -> BenchmarkTask:
    """The benchmark task of a built-in model of :mod:`toolkit.zoo`, loaded from the shipped weights."""
    model, processor = load(name)
    explainer = Explainer(model, processor, name=f"scene-{name}")
    if name == "vit":
        return ImageClassifierTask(explainer, scene_vit.TASK, scene_vit.CLASSES)
    if name == "clip":
        return CLIPTask(explainer)
    if name == "vilt":
        return VQATask(explainer, seed)
    return CaptionerTask(explainer)


# --- running -------------------------------------------------------------------------------------------

def check_methods(methods: tuple[str, ...]) -> None:
    unknown = sorted(set(methods) - set(list_methods()))
    if unknown:
        raise ConfigError(f"Unknown methods {unknown}; available: {list_methods()}")


def _nothing_applies(tasks: list[BenchmarkTask], methods: tuple[str, ...]) -> str:
    """Which models none of ``methods`` applies to, and the methods that do apply to each."""
    supported = "; ".join(f"{task.explainer.name} supports {', '.join(task.applicable(tuple(list_methods())))}"
                          for task in tasks)
    return (f"none of the methods {list(methods)} applies to {' or '.join(t.explainer.name for t in tasks)} "
            f"({supported}): choose methods among those")


def run_task(task: BenchmarkTask, scenes: list, methods: tuple[str, ...]) -> list[BenchmarkRow]:
    """Rows for every applicable method (in the order asked) over ``scenes``; a ConfigError when none applies."""
    check_methods(methods)
    applicable = task.applicable(methods)
    if not applicable:
        raise ConfigError(f"Nothing to compute: {_nothing_applies([task], methods)}.")
    accuracy = task.accuracy(scenes)
    rows = []
    for method in tqdm(applicable, desc=task.explainer.name):
        rows.append(summarise(task.explainer.name, method, len(scenes), accuracy, task.cases(method, scenes)))
    return rows


def benchmark_image_classifier(explainer: Explainer, scenes: list, task: str, classes: tuple[str, ...],
                               methods: tuple[str, ...] = IMAGE_METHODS, batch_size: int = 32) -> list[BenchmarkRow]:
    """Explain each scene's true ``task`` label with every method and score it against the label's mask."""
    return run_task(ImageClassifierTask(explainer, task, classes, batch_size), scenes, methods)


@dataclass(frozen=True)
class Comparison:
    """How much better ``method`` is than ``baseline`` on ``metric``, paired over the same decisions."""

    model: str
    method: str
    baseline: str
    metric: str
    gain: float  # positive: ``method`` is better (lower MoRF AUC, higher LeRF AUC)
    ci95: float
    cases: int


def compare_methods(rows: list[BenchmarkRow], methods: tuple[str, ...] = PROPOSED,
                    baselines: tuple[str, ...] = BASELINES,
                    metrics: tuple[str, ...] = ("morf_auc", "lerf_auc")) -> list[Comparison]:
    """Paired differences per model: each decision's metric under ``method`` minus under ``baseline``, signed
    so that a positive gain means ``method`` did better; mean ± 95% CI over the decisions."""
    by_key = {(row.model, row.method): row for row in rows}
    comparisons = []
    for (model, method), row in by_key.items():
        if method not in methods:
            continue
        for baseline in baselines:
            other = by_key.get((model, baseline))
            if other is None:
                continue
            for metric in metrics:
                sign = -1.0 if metric == "morf_auc" else 1.0
                gain = sign * (np.asarray(row.per_case[metric]) - np.asarray(other.per_case[metric]))
                gain = gain[np.isfinite(gain)]
                if gain.size:
                    comparisons.append(Comparison(model, method, baseline, metric,
                                                  *mean_confidence_interval(gain), gain.size))
    return comparisons


# --- output --------------------------------------------------------------------------------------------

def _cell(mean: float, ci: float) -> str:
    return f"{'—':>17s}" if np.isnan(mean) else f"{mean:8.3f} ± {ci:6.3f}"


def format_table(rows: list[BenchmarkRow]) -> str:
    header = f"{'model':16s} {'method':24s} {'empty':>5s} " + " ".join(f"{m:>17s}" for m in METRICS)
    lines = [header, "-" * len(header)]
    lines += [f"{row.model:16s} {row.method:24s} {row.empty_maps:5d} "
              + " ".join(_cell(*row.values[m]) for m in METRICS) for row in rows]
    models = {(row.model, row.model_accuracy, row.scenes, row.cases) for row in rows}
    lines += [f"{name}: accuracy {acc:.3f} on {n} scenes ({cases} explained decisions per method)"
              for name, acc, n, cases in sorted(models)]
    lines.append("mass/rank/pointing (image and token): higher is better; morf_auc: lower is better; "
                 "lerf_auc: higher is better (mean ± 95% CI; — where it does not apply). empty: maps without "
                 "positive relevance, left out of the ground-truth means (the perturbation tests keep them: "
                 "a constant map removes patches in raster order)")
    return "\n".join(lines)


def format_comparisons(comparisons: list[Comparison]) -> str:
    lines = ["Paired gain of the proposed methods over the attention baselines (positive: proposed is better; "
             "mean ± 95% CI; * where the interval excludes 0)"]
    for c in comparisons:
        flag = "*" if abs(c.gain) > c.ci95 else " "
        lines.append(f"{c.model:16s} {c.method:24s} vs {c.baseline:18s} {c.metric:9s} "
                     f"{c.gain:+8.4f} ± {c.ci95:.4f} {flag} (n={c.cases})")
    return "\n".join(lines)


def save_rows(rows: list[BenchmarkRow], folder: Path) -> None:
    """benchmark.csv (the table), benchmark.json (rows with per-decision values), benchmark.txt (the table
    and the paired comparisons) and comparisons.csv."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "benchmark.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model", "method", "scenes", "cases", "empty_maps", "model_accuracy"]
                        + [f"{m}_{part}" for m in METRICS for part in ("mean", "ci95")])
        for row in rows:
            writer.writerow([row.model, row.method, row.scenes, row.cases, row.empty_maps, f"{row.model_accuracy:.4f}"]
                            + [f"{x:.5f}" for m in METRICS for x in row.values[m]])
    (folder / "benchmark.json").write_text(json.dumps([asdict(row) for row in rows], indent=1))
    comparisons = compare_methods(rows)
    with open(folder / "comparisons.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([f.name for f in fields(Comparison)])
        writer.writerows([f"{v:.5f}" if isinstance(v, float) else v for v in asdict(c).values()] for c in comparisons)
    (folder / "benchmark.txt").write_text(format_report(rows, comparisons) + "\n")


def format_report(rows: list[BenchmarkRow], comparisons: list[Comparison]) -> str:
    """The table, then the paired comparisons when there are any (no baseline was run: none)."""
    return format_table(rows) + ("\n\n" + format_comparisons(comparisons) if comparisons else "")


# --- batch runs ----------------------------------------------------------------------------------------

def _names(value: Any, key: str) -> tuple[str, ...]:
    """A list of names, from a YAML list or a comma-separated string."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{key} must be a non-empty list of names (or a comma-separated string), got {value!r}")
    return tuple(value)


@dataclass
class BenchmarkSettings:
    """What a benchmark run does; the keys of a YAML config are exactly these fields.

    ``scenes`` is the number of held-out scenes per model, or a mapping from model to number (slower models
    on fewer scenes); ``seed`` picks the scenes (and ViLT's questions), never one a zoo model was trained on.
    """

    scenes: int | dict[str, int] = 100
    out: str = "benchmark"
    models: tuple[str, ...] = MODELS
    methods: tuple[str, ...] = IMAGE_METHODS
    seed: int = BENCHMARK_SEED

    def __post_init__(self) -> None:
        self.models, self.methods = _names(self.models, "models"), _names(self.methods, "methods")
        unknown = sorted(set(self.models) - set(MODELS))
        if unknown:
            raise ConfigError(f"Unknown models {unknown}; available: {list(MODELS)}")
        check_methods(self.methods)
        counts = self.scenes if isinstance(self.scenes, dict) else {model: self.scenes for model in self.models}
        missing = sorted(set(self.models) - set(counts))
        if missing:
            raise ConfigError(f"scenes gives no number for {missing}")
        for model, count in counts.items():
            if model not in MODELS or isinstance(count, bool) or not isinstance(count, int) or count < 2:
                raise ConfigError(f"scenes must be an int >= 2 (a confidence interval needs two values) or a "
                                  f"mapping from {list(MODELS)} to such ints; got {model}: {count!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a whole number >= 0, got {self.seed!r}")

    def scenes_for(self, model: str) -> int:
        return self.scenes[model] if isinstance(self.scenes, dict) else self.scenes

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> "BenchmarkSettings":
        """Settings from a YAML mapping; ``overrides`` (e.g. command-line flags) win over the file."""
        import yaml

        try:
            config = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"cannot read the benchmark config {path}: {error}") from error
        valid = [f.name for f in fields(cls)]
        if config is None or config == {}:
            raise ConfigError(f"the benchmark config {path} is empty: give some of the keys {valid} (for example "
                              "'models: [vit]'), or leave out --config to run with the defaults")
        if not isinstance(config, dict):
            raise ConfigError(f"the benchmark config {path} must be a mapping of keys to values (for example "
                              f"'models: [vit]'), not a {type(config).__name__}; valid keys: {valid}")
        unknown = sorted(set(config) - set(valid))
        if unknown:
            raise ConfigError(f"unknown keys {unknown} in {path}; valid keys: {valid}")
        return cls(**{**config, **overrides})


def run_benchmark(settings: BenchmarkSettings) -> list[BenchmarkRow]:
    """Every applicable method on every chosen zoo model over its held-out scenes; prints and saves the table.

    A model that none of the methods applies to is left out with a warning; a ConfigError when that leaves
    nothing to compute, and an InputError when ``settings.out`` cannot be written, both before anything is
    computed."""
    tasks = {model: default_task(model, settings.seed) for model in settings.models}
    idle = {model: task for model, task in tasks.items() if not task.applicable(settings.methods)}
    if len(idle) == len(tasks):
        raise ConfigError(f"Nothing to compute: {_nothing_applies(list(idle.values()), settings.methods)}.")
    folder = output_folder(settings.out, "the benchmark's out folder")  # before the work, not after it
    if idle:
        warn(f"Left out: {_nothing_applies(list(idle.values()), settings.methods)}.")
    rows = []
    for model, task in tasks.items():
        if model not in idle:
            rows += run_task(task, held_out_scenes(settings.scenes_for(model), settings.seed), settings.methods)
    print(format_report(rows, compare_methods(rows)))
    save_rows(rows, folder)
    return rows
