"""Data for faithfulness evaluations, and the measurement of every registered method on the toolkit's models.

:func:`scene_items` gives the built-in scene models' decisions with their ground truth (as the scene benchmark
explains them: :mod:`.benchmark`); :func:`read_data` reads a user's folder of images or file of texts;
:func:`run_suite` measures every method on the real pretrained MiniLM (zero-shot labels on :data:`ZERO_SHOT_TEXTS`,
sentence similarity on :data:`SIMILAR_PAIRS`), every scene model and the scene language model, and prints one table
with each method's cost relative to ``generic`` in the same run.
"""
from __future__ import annotations

import csv
import json
import math
import random
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import InputError
from ..paths import output_folder
from .faithfulness import (DELETION_METRICS, ERASER_METRICS, HIGHER_IS_BETTER, METRICS, RANDOM, Evaluation, Item,
                           evaluate)

SCENE_MODELS = ("vit", "clip", "vilt", "captioner", "lm")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
TOPICS = {"sport": "This text is about sport.", "food": "This text is about food and cooking.",
          "weather": "This text is about the weather.", "money": "This text is about money and prices."}
ZERO_SHOT_TEXTS = (
    "The striker scored twice in the second half.", "Our team lost the final on penalties.",
    "She ran the marathon in under three hours.", "The referee sent off two players.",
    "He won the tennis match in straight sets.", "The coach praised the young goalkeeper.",
    "Fans cheered as the cyclists crossed the line.", "The boxer retired after forty fights.",
    "Add the garlic and fry it until golden.", "This soup needs more salt and pepper.",
    "The bakery sells fresh bread every morning.", "We grilled fish with lemon for dinner.",
    "The pasta was overcooked and bland.", "Whisk the eggs with sugar and butter.",
    "The restaurant serves the best curry in town.", "Chop the onions finely before roasting.",
    "Heavy rain is expected over the weekend.", "A cold wind blew snow across the hills.",
    "It will be sunny and warm tomorrow.", "Thunderstorms flooded several streets last night.",
    "The fog cleared by noon.", "Temperatures will drop below freezing tonight.",
    "A heatwave is coming to the south.", "Light showers will return on Monday.",
    "The bank raised its interest rates again.", "Prices of petrol rose sharply this month.",
    "He saved half his salary for a new house.", "The shares lost ten percent of their value.",
    "Rent in the city has doubled in five years.", "She paid off her loan early.",
    "The shop cut prices for the winter sale.", "Investors sold their bonds in a panic.",
)
SIMILAR_PAIRS = (
    ("A man is playing a guitar.", "Someone plays an instrument on stage."),
    ("The cat sleeps on the sofa.", "A kitten is napping on the couch."),
    ("The train was late this morning.", "My train arrived behind schedule today."),
    ("Children are playing football in the park.", "Kids kick a ball on the grass."),
    ("She is reading a book by the window.", "A woman reads a novel near the window."),
    ("The stock market fell sharply.", "Share prices dropped a lot."),
    ("He cooked pasta for his friends.", "A man made spaghetti for dinner guests."),
    ("It is raining heavily outside.", "There is a strong downpour."),
    ("The doctor examined the patient.", "A physician checked the sick man."),
    ("They are building a new bridge.", "Workers construct a bridge over the river."),
    ("A dog runs along the beach.", "The puppy is running by the sea."),
    ("The museum opens at nine.", "Doors of the gallery open at 9 am."),
    ("I forgot my keys at home.", "My keys are still in the house."),
    ("The plane landed safely.", "The aircraft touched down without problems."),
    ("Students are taking an exam.", "Pupils write a test in the classroom."),
    ("The phone battery is empty.", "My mobile has run out of charge."),
)


# --- data ---------------------------------------------------------------------------------------------------------

def scene_items(name: str, count: int, seed: int | None = None) -> tuple[Any, list[Item]]:
    """The explainer of built-in model ``name`` and ``count`` held-out decisions with their ground truth: the ViT's
    true largest shape (its mask); CLIP's first caption (the captioned objects); ViLT's question drawn with ``seed``
    at its true answer (its mask); the captioner's first caption by teacher forcing (every step, the colour and
    shape words with their object's mask); the scene language model's held-out texts whose answer it predicts (the
    earlier mention's tokens: only then is the lookup known to have happened)."""
    from .. import Explainer, zoo
    from ..zoo.common import BENCHMARK_SEED, caption_objects, caption_word_objects, scenes

    if name not in SCENE_MODELS:
        raise InputError(f"No built-in scene model {name!r}; available: {', '.join(SCENE_MODELS)}.")
    seed = BENCHMARK_SEED if seed is None else seed
    explainer = Explainer(*zoo.load(name), name=f"scene-{name}")
    if name == "lm":
        from ..zoo.scene_lm import held_out_texts, predicted_answers

        texts = held_out_texts(count * 4, seed)
        answers = predicted_answers(explainer.model, explainer.adapter.tokenizer, texts)
        return explainer, [Item(text.prompt, target=text.answer, truth=text.evidence_mask())
                           for text, answer in zip(texts, answers) if answer == text.answer][:count]
    held_out, rng, items = scenes(count, seed), random.Random(seed), []
    for scene in held_out:
        if name == "vit":
            from ..zoo.scene_vit import CLASSES, TASK

            label = scene.labels[TASK]
            items.append(Item(scene.image, target=CLASSES.index(label.value), truth=label.mask))
        elif name == "clip":
            subject, reference = caption_objects(scene, scene.captions[0])
            items.append(Item(keywords={"image": scene.image, "text": scene.captions[0]},
                              truth=subject.mask | reference.mask))
        elif name == "vilt":
            question = rng.choice(scene.questions)
            items.append(Item(keywords={"image": scene.image, "question": question.text}, target=question.answer,
                              truth=question.mask))
        else:
            caption = scene.captions[0]
            items.append(Item(keywords={"image": scene.image, "caption": caption},
                              truth={step: obj.mask for step, obj in caption_word_objects(scene, caption).items()}))
    return explainer, items


def read_data(path: str | Path, keywords: dict[str, str] | None = None) -> list[Item]:
    """Items from a folder of images (with ``keywords`` such as ``{"text": ...}`` or ``{"question": ...}`` added to
    each, for image-text models), a text file (one text or prompt per line) or a CSV file with a ``text`` column
    (and an optional ``target`` or ``label`` column)."""
    path = Path(path).expanduser()
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise InputError(f"The folder {path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
        if keywords is not None:
            return [Item(keywords={"image": str(image), **keywords}) for image in images]
        return [Item(str(image)) for image in images]
    if not path.is_file():
        raise InputError(f"No data at {path}: give a folder of images, a text file or a CSV file, or 'scenes'.")
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        if not rows or "text" not in rows[0]:
            raise InputError(f"{path} needs a header with a 'text' column (and optionally 'target' or 'label').")
        return [Item(row["text"], target=(row.get("target") or row.get("label") or None)) for row in rows
                if row["text"].strip()]
    texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise InputError(f"{path} holds no text: write one text per line.")
    return [Item(text) for text in texts]


# --- the suite ----------------------------------------------------------------------------------------------------

def zero_shot_explainer():
    from .. import Explainer
    from ..zero_shot import ZeroShotTextClassifier, bundled_minilm_path

    model, tokenizer = ZeroShotTextClassifier.from_pretrained(bundled_minilm_path(), TOPICS)
    return Explainer(model, tokenizer, name="minilm-zero-shot")


def similarity_evaluation(methods: Sequence[str], count: int, **options: Any) -> Evaluation:
    """Sentence similarity on both sides of ``count`` pairs of :data:`SIMILAR_PAIRS`: each sentence explained for its
    cosine with the other, held fixed (:mod:`toolkit.zoo.sentence_similarity`); items numbered across the pairs."""
    from .. import Explainer
    from ..zoo.sentence_similarity import NAME, SentenceSimilarity, load_minilm

    encoder, tokenizer = load_minilm()
    parts = []
    for first, second in SIMILAR_PAIRS[:count]:
        for text, other in ((first, second), (second, first)):
            explainer = Explainer(SentenceSimilarity(encoder, tokenizer, other), tokenizer, name=NAME)
            parts.append(evaluate(explainer, [text], methods, progress=False, **options))
    return merged(parts)


def merged(parts: list[Evaluation]) -> Evaluation:
    """One evaluation of the items of several, numbered in order."""
    rows = [{**row, "item": index} for index, part in enumerate(parts) for row in part.rows]
    first = parts[0]
    return Evaluation(rows, first.methods, first.metrics, first.refused)


def run_suite(count: int = 40, methods: Sequence[str] | None = None, out: str | Path = "faithfulness",
              models: Sequence[str] = ("minilm-zero-shot", "minilm-similarity", *SCENE_MODELS),
              batch_size: int = 64, progress: bool = True) -> dict[str, Evaluation]:
    """Every method (default: the random baseline and every registered method; those a model refuses are listed as
    such) on every model, ``count`` decisions each (similarity: ``count / 2`` pairs, both sides); prints the table and
    saves JSON and text in ``out``."""
    from ..methods import list_methods

    methods = list(methods or [RANDOM, *list_methods()])
    folder = output_folder(out, "the evaluation's out folder")
    evaluations = {}
    for model in models:
        if model == "minilm-zero-shot":
            explainer, items = zero_shot_explainer(), list(ZERO_SHOT_TEXTS[:count])
        elif model == "minilm-similarity":
            evaluations[model] = similarity_evaluation(methods, max(1, count // 2), batch_size=batch_size)
            print(f"\n{model}\n{evaluations[model].table()}", flush=True)
            continue
        else:
            explainer, items = scene_items(model, count)
        evaluations[model] = evaluate(explainer, items, methods, batch_size=batch_size, progress=progress)
        print(f"\n{model}\n{evaluations[model].table()}", flush=True)
    text = suite_table(evaluations)
    print("\n" + text)
    (folder / "faithfulness.txt").write_text(text + "\n")
    (folder / "faithfulness.json").write_text(json.dumps(suite_json(evaluations), indent=1, default=_jsonable))
    return evaluations


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(type(value).__name__)


def relative_cost(evaluation: Evaluation, method: str, reference: str = "generic") -> float:
    """Seconds per explanation of ``method`` over those of ``reference`` in the same evaluation (NaN without it)."""
    summary = evaluation.summary()
    if reference not in summary or "seconds" not in summary.get(method, {}):
        return math.nan
    return summary[method]["seconds"][0] / summary[reference]["seconds"][0]


def suite_json(evaluations: dict[str, Evaluation]) -> dict[str, Any]:
    """Per model: the summary, each method's cost relative to generic, the paired comparisons with generic, the
    refusals and the per-decision rows."""
    result = {}
    for model, evaluation in evaluations.items():
        comparisons = [asdict(c) | {"better": c.better} for method in evaluation.methods if method != "generic"
                       and "generic" in evaluation.methods for c in evaluation.compare(method, "generic")]
        result[model] = {"summary": evaluation.summary(),
                         "relative_cost": {m: relative_cost(evaluation, m) for m in evaluation.methods},
                         "comparisons_with_generic": comparisons, "refused": evaluation.refused,
                         "rows": evaluation.rows}
    return result


def suite_table(evaluations: dict[str, Evaluation], metrics: Sequence[str] = METRICS) -> str:
    """One table: a line per (model, method), mean ± 95% CI of each metric that any model has, and the cost."""
    shown = [m for m in metrics if any(m in s for e in evaluations.values() for s in e.summary().values())]
    header = f"{'model':20s}{'method':26s}" + "".join(f"{m:>19s}" for m in shown) + f"{'cost':>8s}{'n':>5s}"
    lines = [header, "-" * len(header)]
    for model, evaluation in evaluations.items():
        summary = evaluation.summary()
        for method in evaluation.methods:
            cells = "".join(f"{summary[method][m][0]:9.3f} ±{summary[method][m][1]:7.3f} " if m in summary[method]
                            else f"{'—':>19s}" for m in shown)
            count = max((v[2] for k, v in summary[method].items() if k != "seconds"), default=0)
            lines.append(f"{model:20s}{method:26s}{cells}{relative_cost(evaluation, method):7.2f}x{count:5d}")
        for method, reason in evaluation.refused.items():
            lines.append(f"{model:20s}{method:26s}  not applicable: {reason.split('.')[0]}")
    direction = ", ".join(f"{m} {'higher' if HIGHER_IS_BETTER[m] else 'lower'}" for m in shown)
    lines.append(f"Better: {direction}. Mean ± 95% CI over decisions; cost: seconds per explanation relative to "
                 "generic in the same run. Deletion: " + ("tokens deleted, " if any(
                     m in shown for m in ERASER_METRICS) else "") + "patches set to the mean; AUC over 0-90% removed. "
                 f"Captioner and LM scores are log-probabilities ({', '.join(DELETION_METRICS)} in nats).")
    return "\n".join(lines)
