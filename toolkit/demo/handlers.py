"""What each tab does with a request: load the model from the cache, hold it for the request, explain with one
or two methods, and turn the explanations into what the page shows. Gradio-free except for the values it
returns (dicts for labels, PIL images, HTML, file paths), so each step can be tested directly."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from PIL import Image

from ..errors import InputError
from ..evaluation.faithfulness import faithfulness_of
from ..explainer import Explainer
from ..explanation import Explanation
from ..images import to_rgb
from ..methods import get_method
from ..multimodal import MultimodalAdapter
from ..zero_shot import DEFAULT_LABELS, checked_labels
from . import display
from .config import DemoConfig
from .models import LoadedModel, ModelCache
from .scenes import (SceneBook, caption_step_truths, caption_truth, foil_caption, largest_object_truth,
                     question_truth)

NO_COMPARISON = "(none)"
PREDICTED = "(predicted)"
MAX_CAPTIONS = 8
VIEW_KINDS = {"text": ("head", "model", "neuron"), "image": ("image",)}


def request_text(value: str | None, what: str, limit: int) -> str:
    """A request's text, stripped: refused when empty or longer than the demo serves (``limit`` characters)."""
    text = (value or "").strip()
    if not text:
        raise InputError(f"Enter {what} first.")
    if len(text) > limit:
        raise InputError(f"The {what.split(' ', 1)[-1]} is {len(text):,} characters long; this demo takes up to "
                         f"{limit:,}. Shorten it (the model reads its first few hundred tokens anyway).")
    return text


def parse_labels(spec: str | None) -> dict[str, str]:
    """Zero-shot labels, one per line (or separated by ';'): ``name: description`` or just ``name``, checked by
    :func:`toolkit.zero_shot.checked_labels`."""
    lines = [line for line in (spec or "").replace(";", "\n").splitlines() if line.strip()]
    pairs = [line.partition(":" if ":" in line else "=")[::2] for line in lines]
    return checked_labels(pairs, "The label list", ":",
                          "at least one label, one per line: `name: a sentence describing it`")


def parse_target(value: Any) -> str | None:
    """A target class or answer from a selector (a name, or an index as digits: the library tells them apart);
    blank or "(predicted)" for the model's own choice."""
    text = "" if value is None else str(value).strip()
    return None if text in ("", PREDICTED) else text


def chosen_methods(method: str | None, compare: str | None) -> list[str]:
    if not method:
        raise InputError("Choose a method.")
    return [method] + ([compare] if compare and compare not in (NO_COMPARISON, method) else [])


def start_layer_for(method: str, start_layer: Any) -> int:
    """The start_layer option for methods that take it (0 for the others)."""
    return int(start_layer or 0) if get_method(method).takes_start_layer else 0


def layer_count(explainer: Explainer) -> int:
    """How many layers start_layer can choose from (the shallower tower of a two-tower model)."""
    adapter = explainer.adapter
    if not isinstance(adapter, MultimodalAdapter):
        return len(adapter.spec.layers)
    per_stream: dict[str, int] = {}
    for site in adapter.sites():
        if site.is_self:
            per_stream[site.query] = per_stream.get(site.query, 0) + 1
    return min(per_stream.values())


def pair(values: list, count: int = 2) -> list:
    """The values of method A and B (None where there is no comparison)."""
    return list(values) + [None] * (count - len(values))


@dataclass
class ImageResult:
    """One explanation as shown: the overlay (a PNG file), the ground-truth line and the downloads."""

    picture: str
    report: str
    files: list[str]


class Handlers:
    """The demo's requests, over one model cache and one scene book."""

    def __init__(self, config: DemoConfig, cache: ModelCache | None = None, book: SceneBook | None = None,
                 outputs: display.OutputFolders | None = None):
        self.config = config
        self.cache = cache or ModelCache(config)
        self.book = book or SceneBook()
        self.outputs = outputs or display.OutputFolders()

    # --- shared ----------------------------------------------------------------------------------------
    @staticmethod
    def image(path: Any) -> Image.Image:
        """The request's image, read by the library (which downscales huge ones, with a warning). Its size in
        pixels was checked on upload (ImageInput)."""
        if path is None or (isinstance(path, str) and not path.strip()):
            raise InputError("Add an image first: upload or paste one, click an example, or draw a New scene.")
        return to_rgb(path)

    def scene_of(self, loaded: LoadedModel, image: Image.Image):
        """The built-in scene the image is, for the built-in models (whose view of it is the scene itself)."""
        return self.book.find(image) if loaded.entry.is_builtin else None

    def shown(self, exp: Explanation, truth, stem: str, downloads: bool = True, scale=None) -> ImageResult:
        folder = self.outputs.fresh()
        picture = display.png_file(display.overlay_image(exp, truth, scale), f"{display.slug(stem)}-{exp.method}",
                                   folder)
        files = display.download_files(exp, stem, folder, picture) if downloads else []
        return ImageResult(picture, display.map_report(exp, truth), files)

    def model_settings(self, tab: str, model: str) -> dict[str, Any]:
        """What the tab's option widgets offer for this model: methods, layers, targets, built-in or not."""
        loaded = self.cache.get(tab, model)
        with loaded.session() as explainer:
            settings = {"methods": explainer.applicable_methods(), "method": explainer.default_method,
                        "labels": [explainer.labels[k] for k in sorted(explainer.labels)],
                        "layers": layer_count(explainer)}
        settings.update(builtin=loaded.entry.is_builtin, zero_shot=loaded.entry.is_zero_shot)
        if loaded.entry.is_zero_shot:
            labels = loaded.entry.labels or DEFAULT_LABELS
            settings["label_spec"] = "\n".join(f"{name}: {text}" for name, text in labels.items())
        return settings

    # --- text classification ---------------------------------------------------------------------------
    def explain_text(self, model: str, text: str, label_spec: str, method: str, compare: str, start_layer: Any,
                     target: Any) -> tuple:
        loaded = self.cache.get("text", model)
        text = request_text(text, "a text to classify", self.config.serving.max_text_chars)
        labels = parse_labels(label_spec) if loaded.entry.is_zero_shot else None
        methods = chosen_methods(method, compare)
        with loaded.session(labels) as explainer:
            prediction = dict(explainer.predict(text, top_k=5))
            exps = [explainer.explain(text, method=m, target=parse_target(target),
                                      start_layer=start_layer_for(m, start_layer)) for m in methods]
        pages = [display.text_html(e) for e in exps]
        files = [path for e in exps for path in display.download_files(e, text[:40], self.outputs.fresh())]
        return (prediction, *pair(pages), display.score_table(exps), files)

    # --- image classification --------------------------------------------------------------------------
    def explain_image(self, model: str, path: Any, method: str, compare: str, start_layer: Any, target: Any) -> tuple:
        loaded = self.cache.get("image", model)
        image = self.image(path)
        methods = chosen_methods(method, compare)
        scene = self.scene_of(loaded, image)
        truth = largest_object_truth(scene) if scene is not None else None
        with loaded.session() as explainer:
            prediction = dict(explainer.predict(image, top_k=5))
            exps = [explainer.explain(image, method=m, target=parse_target(target),
                                      start_layer=start_layer_for(m, start_layer)) for m in methods]
            deletions = [faithfulness_of(e, explainer, image)[0] for e in exps]
        results = [self.shown(e, truth, e.label) for e in exps]
        header = f"Ground truth: {truth.what}, outlined." if truth else ""
        report = "\n\n".join(filter(None, [header] + [f"{r.report} {display.deletion_report(d)}"
                                                      for r, d in zip(results, deletions)]))
        raw = display.png_file(display.raw_map_image(exps[0]), f"raw-map-{exps[0].method}", self.outputs.fresh())
        return (prediction, *pair([r.picture for r in results]), raw, report, [f for r in results for f in r.files])

    # --- image-text similarity ---------------------------------------------------------------------------
    def explain_image_text(self, model: str, path: Any, captions_text: str, method: str, compare: str,
                           start_layer: Any) -> tuple:
        loaded = self.cache.get("image_text", model)
        image = self.image(path)
        captions = [line.strip() for line in (captions_text or "").splitlines() if line.strip()]
        if not captions:
            raise InputError("Enter at least one caption (one per line) to match with the image.")
        if len(captions) > MAX_CAPTIONS:
            raise InputError(f"{len(captions)} captions given; this demo compares up to {MAX_CAPTIONS} at once.")
        methods = chosen_methods(method, compare)
        scene = self.scene_of(loaded, image)
        with loaded.session() as explainer:
            runs = [explainer.explain(image=image, text=captions, method=m, start_layer=start_layer_for(m, start_layer),
                                      start_layer_text=start_layer_for(m, start_layer))  # one start for both towers
                    for m in methods]
        truths = [caption_truth(scene, c) if scene is not None else None for c in captions]
        prediction = {exp.text: exp.probability for exp in runs[0]}
        rows = ["| caption | cosine | p | mass on its objects | peak |", "| --- | ---: | ---: | ---: | :---: |"]
        for exp, truth in zip(runs[0], truths):
            mass, hit = truth.scores(exp.heatmap) if truth is not None else (None, None)
            rows.append(f"| {exp.text} | {exp.similarity:.3f} | {exp.probability:.1%} | "
                        f"{'—' if mass is None else f'{mass:.0%} (uniform: {truth.chance:.0%})'} | "
                        f"{'—' if hit is None else 'hit' if hit == 1 else 'miss' if hit == 0 else f'{hit:.0%}'} |")
        galleries, pages, files = [], [], []
        for exps in runs:
            results = [self.shown(e, t, e.text) for e, t in zip(exps, truths)]
            galleries.append([(r.picture, f"{e.method}: {e.text}") for r, e in zip(results, exps)])
            pages.append("".join(display.text_html(e) for e in exps))
            files += [f for r in results for f in r.files]
        return (prediction, "\n".join(rows), *pair(galleries), *pair(pages), files)

    # --- visual question answering -------------------------------------------------------------------------
    def explain_vqa(self, model: str, path: Any, question: str, method: str, compare: str, start_layer: Any,
                    target: Any) -> tuple:
        loaded = self.cache.get("vqa", model)
        image = self.image(path)
        question = request_text(question, "a question about the image", self.config.serving.max_text_chars)
        methods = chosen_methods(method, compare)
        scene = self.scene_of(loaded, image)
        truth = question_truth(scene, question) if scene is not None else None
        with loaded.session() as explainer:
            exps = [explainer.explain(image=image, question=question, method=m, target=parse_target(target),
                                      start_layer=start_layer_for(m, start_layer)) for m in methods]
            top = explainer.predict(image=image, question=question, top_k=5) if explainer.labels else []
        prediction = dict(top) or {exps[0].answer: exps[0].probability}
        results = [self.shown(e, truth, f"{question}-{e.answer}") for e in exps]
        pages = [display.text_html(e) for e in exps]
        header = f"Ground truth: {truth.what}, outlined." if truth else ""
        report = "\n\n".join(filter(None, [header] + [r.report for r in results]))
        return (prediction, *pair([r.picture for r in results]), *pair(pages), report,
                [f for r in results for f in r.files])

    # --- captioning ------------------------------------------------------------------------------------------
    def explain_caption(self, model: str, path: Any, given: bool, caption: str, method: str, compare: str) -> tuple:
        """The caption with each token's probability, a gallery of per-token maps per method, and the steps
        (per-token overlays, earlier-token relevance, ground truth) for the step viewer."""
        loaded = self.cache.get("captioning", model)
        image = self.image(path)
        caption = request_text(caption, "a caption to explain", self.config.serving.max_text_chars) if given else None
        methods = chosen_methods(method, compare)
        scene = self.scene_of(loaded, image)
        with loaded.session() as explainer:
            exps = [explainer.explain(image=image, caption=caption, method=m) for m in methods]
        first = exps[0]
        if not first.steps:
            raise InputError("The model ended the caption at once: there is no token to explain. Give a caption.")
        tokens = [step.token for step in first.steps]
        truths = caption_step_truths(scene, first.caption, tokens) if scene is not None else {}
        # One colour scale per method over all of its steps: a token that hardly rests on the image looks so.
        steps = [[self.shown(e.caption_step(i), truths.get(i), f"{i}-{token}", downloads=False, scale=scale)
                  for i, token in enumerate(tokens)] for e, scale in ((e, e.caption_scale()) for e in exps)]
        galleries = [[(r.picture, f"{i} · {tokens[i]}") for i, r in enumerate(run)] for run in steps]
        words = " ".join(f"{t} <sub>{math.exp(step.log_prob):.2f}</sub>" for t, step in zip(tokens, first.steps))
        header = (f"### “{first.caption}”\n{'Given' if given else 'Generated'} caption, probability "
                  f"{first.probability:.3g}. Per token: {words}")
        state = {"tokens": tokens, "steps": steps, "exps": exps, "truths": truths}
        files = [f for e in exps for f in display.download_files(e, first.caption, self.outputs.fresh())]
        return (header, *pair(galleries), len(tokens) - 1, *self.caption_step_view(state, 0), files, state)

    def caption_step_view(self, state: dict | None, index: Any) -> tuple:
        """Step ``index`` of the last caption: its map per method, its relevance over the earlier tokens, the
        ground truth of its word."""
        if not state:
            raise InputError("Explain a caption first.")
        index = int(index or 0)
        if not 0 <= index < len(state["tokens"]):
            raise InputError(f"Choose a token between 0 and {len(state['tokens']) - 1}.")
        pictures = [run[index].picture for run in state["steps"]]
        pages = [display.text_html(e.caption_step(index), f"{e.method} · “{state['tokens'][index]}” rests on "
                                                            "these earlier tokens") for e in state["exps"]]
        truth = state["truths"].get(index)
        reports = [run[index].report for run in state["steps"]]
        header = f"Ground truth: {truth.what}, outlined." if truth else ""
        return (*pair(pictures), *pair(pages), "\n\n".join(filter(None, [header, *reports])))

    # --- attention views -------------------------------------------------------------------------------------
    def attention_models(self) -> dict[str, tuple[str, str]]:
        """Selector name -> (tab, model): the text tab's models get text views, the image tab's the image view."""
        choices = {}
        for tab, kind in (("text", "text"), ("image", "image")):
            for entry in self.config.models(tab):
                choices[f"{entry.display} — {kind}"] = (tab, entry.display)
        return choices

    def attention_view(self, choice: str, view: str, text_a: str, text_b: str, path: Any) -> str:
        from .. import views

        models = self.attention_models()
        if choice not in models:
            raise InputError(f"No model {choice!r} here; choose one of {', '.join(map(repr, models))}.")
        tab, model = models[choice]
        loaded = self.cache.get(tab, model)
        kinds = VIEW_KINDS[tab]
        if view not in kinds:
            raise InputError(f"The {view!r} view does not apply to {model}; choose {' or '.join(kinds)}.")
        if tab == "image":
            image = self.image(path)
            with loaded.lock:
                page = views.image_attention_view(loaded.model, image, loaded.processor)
        else:
            limit = self.config.serving.max_text_chars
            first = request_text(text_a, "a text", limit)
            second = (text_b or "").strip() or None
            if second is not None:
                second = request_text(second, "a second sentence", limit)
            tokenizer = getattr(loaded.processor, "tokenizer", loaded.processor)
            view_of = {"head": views.head_view, "model": views.model_view, "neuron": views.neuron_view}[view]
            with loaded.lock:
                page = view_of(loaded.model, tokenizer, first, second)
        return page.iframe_html()

    # --- new scenes -------------------------------------------------------------------------------------------
    def new_scene(self, tab: str) -> tuple:
        """A fresh scene for ``tab``, with what that tab asks about it."""
        scene = self.book.draw()
        rng = random.Random(str(scene.seed))
        if tab == "image_text":
            captions = list(scene.captions[:2]) + [foil_caption(scene, rng)]
            rng.shuffle(captions)
            return scene.image, "\n".join(captions)
        if tab == "vqa":
            questions = [q.text for q in scene.questions]
            return scene.image, rng.choice(questions), questions
        if tab == "captioning":
            return scene.image, scene.captions[0]
        return (scene.image,)
