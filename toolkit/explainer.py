"""The entry point: explain a stock model's predictions with any registered method, batched."""
from __future__ import annotations

import contextlib
import difflib
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from . import loading
from .adapters import Batch, FamilySource, ModelAdapter, adapter_for
from .core import engine
from .core.propagation import one_hot
from .errors import InputError, UnsupportedModelError, warn
from .explanation import Explanation
from .images import image_items, pixel_token_scores
from .labels import ranked_labels
from .methods import Method, get_method, list_methods
from .text import word_scores
from .multimodal import MultimodalAdapter

Target = int | str | None
# method="auto": the first of its adapter's preferred methods that applies, chosen from the faithfulness measurements
# (README, "Which method to trust"): for classifiers generic_attnlrp won over generic on MiniLM and the scene ViT.
DEFAULT_PREFERENCE = ("generic_attnlrp", "transformer_attribution", "generic")
AUTO = "auto"


class Explainer:
    """Explains a stock transformer through hooks: ``Explainer(model, processor).explain(inputs)``.

    ``family``: a YAML file or dict declaring the model's layout (see the README: "A model the toolkit does not
    know"), for a classifier no built-in family covers.
    """

    def __init__(self, model: nn.Module, processor: Any = None, *, adapter: ModelAdapter | None = None,
                 name: str | None = None, family: FamilySource | None = None):
        """``model`` may also come wrapped (DataParallel, torch.compile, a Hugging Face pipeline, whose tokenizer
        or image processor then serves unless ``processor`` is given): the model inside is explained."""
        model, processor = _unwrapped(model, processor)
        self.model = model  # put in eval mode for each call only: the caller's train/eval modes are restored
        self.adapter = adapter or adapter_for(model, processor, family)
        self.name = name or getattr(getattr(model, "config", None), "_name_or_path", None) or type(model).__name__
        self.adapter.name = self.name

    @classmethod
    def from_pretrained(cls, name: str, source: str = "auto", *, family: FamilySource | None = None,
                        **kwargs: Any) -> "Explainer":
        """Load ``name`` from the Hugging Face Hub or a local folder (``source="hf"``), timm (``"timm"``)
        or open_clip (``"open_clip"``, with ``pretrained=`` a tag, a local checkpoint file or None);
        ``family`` as in the constructor.

        Extra keyword arguments go to the loader (``from_pretrained`` / ``timm.create_model`` /
        ``open_clip.create_model_and_transforms``).
        """
        source = loading.guess_source(name) if source == "auto" else source
        if source in ("hf", "huggingface", "transformers"):
            model, processor = loading.load_huggingface(name, **kwargs)
        elif source == "timm":
            model, processor = loading.load_timm(name, **kwargs)
        elif source == "open_clip":
            model, processor = loading.load_open_clip(name, **kwargs)
        else:
            raise InputError(f"Unknown source {source!r}; use 'hf', 'timm' or 'open_clip' (or 'auto').")
        return cls(model, processor, name=name, family=family)

    @property
    def labels(self) -> dict[int, str]:
        return self.adapter.labels

    def method_refusal(self, method: str) -> str | None:
        """Why ``method`` cannot explain this model (checked before any work), or None when it can."""
        method_cls = get_method(method)
        reason = self._refusal(method_cls)
        if reason is None:
            return None
        applicable = [name for name in list_methods() if self._refusal(get_method(name)) is None]
        return f"{reason.rstrip('.')}. Methods that apply: {', '.join(applicable)}."

    def _refusal(self, method_cls: type[Method]) -> str | None:
        if isinstance(self.adapter, MultimodalAdapter):
            return self.adapter.refusal(method_cls)
        if method_cls.needs_lrp:
            try:
                self.adapter.spec.check_lrp()
            except UnsupportedModelError as error:
                return str(error)
        reason = method_cls.refusal(self.adapter.spec, self.model)
        if reason:
            return f"Method {method_cls.name!r} cannot explain this model: {reason}"
        return None

    def applicable_methods(self) -> list[str]:
        """The registered methods that can explain this model."""
        return [name for name in list_methods() if self.method_refusal(name) is None]

    def predict(self, inputs: Any = None, top_k: int = 5, **multimodal_inputs: Any) -> list[tuple[str, float]]:
        """The ``top_k`` most probable classes of one input as (label, probability), most probable first,
        without explaining it. Image-text models take keywords, where their family has a fixed answer set
        (ViLT: ``image=``, ``question=``)."""
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise InputError(f"top_k must be a positive integer; got {top_k!r}.")
        with _eval_mode(self.model):
            if getattr(self.adapter, "generation", False):
                return self.adapter.predict(inputs, top_k)
            if isinstance(self.adapter, MultimodalAdapter):
                if inputs is not None:
                    raise InputError(f"{self.adapter.family} models take keyword inputs: predict(image=..., "
                                     "question=...).")
                return self.adapter.predict(top_k=top_k, **multimodal_inputs)
            single, items = _as_items(inputs, self.adapter.modality)
            if not single:
                raise InputError("predict() takes one input; call it once per input.")
            if _stacked(inputs, self.adapter.modality):
                items = _stack(items)
            with torch.no_grad():
                probabilities = self.adapter.logits(self.adapter.prepare(items)).float().softmax(-1)[0]
        return ranked_labels(probabilities.tolist(), top_k, self.labels)

    @property
    def default_method(self) -> str:
        """The method ``explain`` uses when none is named (``"auto"``): the first of the adapter's preferred methods
        (DEFAULT_PREFERENCE for classifiers) that applies to this model."""
        applicable = self.applicable_methods()
        preference = getattr(self.adapter, "preferred_methods", DEFAULT_PREFERENCE)
        return next((name for name in preference if name in applicable), applicable[0])

    def explain(self, inputs: Any = None, method: str | None = None, target: Any = None,
                *, text_pair: Any = None, start_layer: int = 0, batch_size: int = 16,
                progress: bool | None = None, **keywords: Any) -> Explanation | list[Explanation]:
        """Explain one input (returns an Explanation) or several (returns a list), ``batch_size`` per pass.

        ``target``: a class index or label name, ``None`` for the predicted class, or one per input.
        ``method`` defaults to ``"auto"``: :attr:`default_method`, the measured best that applies to this model. Keywords that name
        one of the method's options (``keep_identity=True``) go to the method. Image-text models take
        keywords instead of ``inputs``: ``image=``, ``text=`` (CLIP, with ``start_layer_text=``),
        ``question=`` (VQA), ``caption=`` (captioning). Language models take prompts: ``target`` is the next
        token (None: the predicted one), or ``continuation=`` (teacher forcing) or ``max_new_tokens=`` (greedy
        generation) explains every token of a continuation; ``keep_sink=True`` counts the first position as content
        (see :mod:`toolkit.adapters.causal_lm`).

        Gradient methods work under a caller's ``torch.no_grad()`` and ``torch.inference_mode()`` alike.
        """
        with torch.inference_mode(False):  # gradients need autograd, which inference mode turns off
            return self._explain(_outside_inference(inputs), method, _outside_inference(target), text_pair,
                                 start_layer, batch_size, progress,
                                 {key: _outside_inference(value) for key, value in keywords.items()})

    def _explain(self, inputs: Any, method: str | None, target: Any, text_pair: Any, start_layer: int,
                 batch_size: int, progress: bool | None, keywords: dict[str, Any]) -> Explanation | list[Explanation]:
        name = self.default_method if method in (None, AUTO) else method
        method_cls = get_method(name)
        refusal = self.method_refusal(name)
        if refusal is not None:
            raise UnsupportedModelError(refusal)
        if method_cls.uses_gradients() and any(p.is_inference() for p in self.model.parameters()):
            gradient_free = [m for m in self.applicable_methods() if not get_method(m).uses_gradients()]
            raise UnsupportedModelError(
                f"The model's weights were made under torch.inference_mode(), and {name!r} needs gradients, which "
                "autograd cannot take through such tensors: create or load the model outside inference mode "
                f"(torch.no_grad() is fine), or use a method without gradients: {', '.join(gradient_free)}.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer; got {batch_size!r}.")
        options = {key: keywords.pop(key) for key in list(keywords) if key in method_cls.extra_options}
        method_impl = method_cls(start_layer=start_layer, **options)
        _note_scene_model_on_photos(self.model, inputs if inputs is not None else keywords.get("image"))
        with _eval_mode(self.model):
            if isinstance(self.adapter, MultimodalAdapter):
                if inputs is not None:
                    raise InputError(f"{self.adapter.family} models take keyword inputs: "
                                     "explain(image=..., text=... / question=... / caption=...).")
                result = self.adapter.explain_in_batches(method_impl, target, batch_size, progress, **keywords)
            elif getattr(self.adapter, "generation", False):
                unknown = sorted(set(keywords) - set(self.adapter.keywords))
                if unknown:
                    raise InputError(f"Unexpected keywords {unknown}: a language model takes the prompt(s) as the "
                                     f"first argument and {', '.join(self.adapter.keywords)}. Options of {name!r}: "
                                     f"{', '.join(method_cls.option_names()) or 'none'}.")
                result = self.adapter.explain(method_impl, inputs, target, batch_size=batch_size, progress=progress,
                                              **keywords)
            else:
                if keywords:
                    if difflib.get_close_matches(next(iter(keywords)), method_cls.option_names(), n=1):
                        method_cls(start_layer=start_layer, **options, **keywords)  # says which option was meant
                    raise InputError(
                        f"Unexpected keywords {sorted(keywords)}: this is {self.adapter.kind}; "
                        f"pass its inputs as the first argument. Options of {name!r}: "
                        f"{', '.join(method_cls.option_names()) or 'none'}.")
                result = self._explain_classifier(inputs, method_impl, target, text_pair, batch_size, progress)
        for position, explanation in enumerate(result if isinstance(result, list) else [result]):
            _warn_if_uninformative(explanation, position, method_cls.empty_reason)
        return result

    def _explain_classifier(self, inputs: Any, method: Method, target: Any, text_pair: Any, batch_size: int,
                            progress: bool | None) -> Explanation | list[Explanation]:
        """Every input and target that can be checked without the model is checked before the first batch runs,
        so that a mistake at input #900 does not surface after 899 explanations were computed and lost."""
        single, items = _as_items(inputs, self.adapter.modality)
        pairs = None if text_pair is None else ([text_pair] if single else list(text_pair))
        stacked = _stacked(inputs, self.adapter.modality)
        if not stacked:
            self.adapter.check_inputs(items, pairs)
        targets = self._target_indices(target, len(items))
        starts = range(0, len(items), batch_size)
        show = progress if progress is not None else len(starts) > 1
        results: list[Explanation] = []
        for start in tqdm(starts, desc=method.name, unit="batch", disable=not show):
            chunk = items[start:start + batch_size]
            if stacked:
                chunk = _stack(chunk)
            batch = self.adapter.prepare(chunk, text_pair=None if pairs is None else pairs[start:start + batch_size],
                                         first_index=start)
            results.extend(self._explain_batch(batch, method, targets[start:start + batch_size], start))
        return results[0] if single else results

    # --- one batch: one forward, at most one backward ------------------------------------------
    def _explain_batch(self, batch: Batch, method: Method, targets: list[int | None], first_index: int = 0
                       ) -> list[Explanation]:
        spec, chosen = self.adapter.spec, {}
        readout = spec.readout_weights(batch.token_mask, batch.content_mask)

        def forward():
            logits = self.adapter.logits(batch)
            chosen["targets"] = self._resolve_targets(targets, logits, first_index)
            return logits, logits.gather(1, chosen["targets"][:, None])[:, 0]

        def lrp_start(result: engine.Pass) -> dict[str, engine.LRPStart]:
            lowest = method.lowest_lrp_layer(len(spec.layers))
            if spec.token_start is not None:
                last = spec.layers[-1]
                hidden = result.recorder.call(last.block, last.call).output
                hidden = (hidden[0] if isinstance(hidden, tuple) else hidden).detach()
                return {"main": engine.LRPStart(spec.token_start(hidden, batch.token_mask, chosen["targets"]), None,
                                                lowest)}
            spec.check_head(result.recorder, result.outputs)
            start = one_hot(chosen["targets"], spec.head[-1].out_features)
            return {"main": engine.LRPStart(start, readout, lowest)}

        result = engine.run_pass(self.model, engine.sites_of(spec, "main"), forward, method, streams={"main": spec},
                                 tokens={"main": batch.token_mask.shape[1]}, lrp=lrp_start if method.needs_lrp else None,
                                 record=self.adapter.input_modules() if method.needs_input_relevance else (),
                                 inputs={"main": self.adapter.input_modules()},
                                 rerun=lambda times: self.adapter.logits(_repeated(batch, times)))
        result.targets = chosen["targets"]
        if method.needs_input_relevance:
            result.input_relevance["main"] = self.adapter.input_relevance(result.recorder, result.first_layer["main"],
                                                                          batch, method.propagation_rules)
        with torch.no_grad():
            reading = engine.Reading("main", "main", readout, batch.token_mask, batch.content_mask)
            relevance = engine.attribute(method, result, reading).detach().float().cpu().numpy()
            probabilities = result.outputs.detach().float().softmax(-1).cpu().numpy()
        return [self._explanation(batch, i, relevance[i], int(t), float(probabilities[i, t]), method)
                for i, t in enumerate(chosen["targets"].tolist())]

    def _target_indices(self, target: Any, count: int) -> list[int | None]:
        """One class index per input (None: the predicted class), from an index, a label name, None, or one of
        these per input; checked against the number of classes where the labels tell it."""
        labels = self.labels
        known = len(labels) if labels and sorted(labels) == list(range(len(labels))) else None
        indices = []
        for position, item in enumerate(_per_item(target, count)):
            index = self._target_index(item, position)
            if index is not None and known is not None:
                self._check_range(index, position, known)
            indices.append(index)
        return indices

    def _target_index(self, target: Any, position: int) -> int | None:
        if torch.is_tensor(target) or isinstance(target, np.ndarray):
            if target.ndim != 0:
                raise InputError(f"Input #{position}: target is an array of shape {tuple(target.shape)}; give one "
                                 "class index per input.")
            target = target.item()
        if isinstance(target, str):
            text = target.strip()
            is_label = text.lower() in {name.lower() for name in self.labels.values()}
            if re.fullmatch(r"[+-]?\d+", text) and not is_label:
                return int(text)
            try:
                return self.adapter.label_index(target)
            except InputError as error:
                raise InputError(f"Input #{position}: {error}") from None
        if target is not None and (isinstance(target, bool) or not isinstance(target, (int, np.integer))):
            raise InputError(f"Input #{position}: target must be a class index, a label name or None; got "
                             f"{target!r}.")
        return None if target is None else int(target)

    def _check_range(self, target: int, position: int, num_classes: int) -> None:
        if not 0 <= target < num_classes:
            names = ", ".join(f"{k}: {v}" for k, v in sorted(self.labels.items())[:10])
            raise InputError(f"Input #{position}: target {target} is out of range: targets are class indices "
                             f"0..{num_classes - 1} (this model has {num_classes} classes"
                             f"{'; ' + names if names else ''}), or label names.")

    def _resolve_targets(self, targets: list[int | None], logits: torch.Tensor, first_index: int = 0) -> torch.Tensor:
        """The class explained for each input of a batch: the given index, or the predicted class."""
        predicted = logits.argmax(-1).tolist()
        for index, target in enumerate(targets):
            if target is not None:
                self._check_range(target, first_index + index, logits.shape[-1])
        return torch.tensor([predicted[i] if t is None else t for i, t in enumerate(targets)], device=logits.device)

    def _explanation(self, batch: Batch, i: int, relevance: np.ndarray, target: int, probability: float,
                     method: Method) -> Explanation:
        sample = batch.samples[i]
        common = dict(method=method.name, model=self.name, target=target, label=self.labels.get(target, str(target)),
                      probability=probability, options=method.options())
        if self.adapter.modality == "text":
            scores = relevance[batch.token_mask[i].cpu().numpy()]
            words = sample.get("words")
            return Explanation(scores=scores.astype(np.float32), tokens=sample["tokens"], words=words,
                               word_scores=None if words is None else word_scores(scores, sample["word_pieces"]),
                               word_segments=sample.get("word_segments"), unknown_words=sample.get("unknown_words"),
                               special_tokens=np.array(sample["special"], dtype=bool),
                               text=_joined(sample.get("text")), **common)
        grid, prefix = sample["grid"], self.adapter.num_prefix_tokens
        if relevance.ndim == 2:  # per-pixel (full LRP, the LRP rules' methods): per-patch sums serve as token scores
            heatmap, scores = relevance, pixel_token_scores(relevance, grid, prefix)
        else:
            scores, heatmap = relevance, relevance[prefix:].reshape(grid)
        tokens = [f"[prefix{j}]" if j else "[CLS]" for j in range(prefix)]
        tokens += [f"patch({r},{c})" for r in range(grid[0]) for c in range(grid[1])]
        return Explanation(scores=scores.astype(np.float32), tokens=tokens, heatmap=heatmap.astype(np.float32),
                           image=sample["image"], original_image=sample.get("original_image"),
                           crop_box=sample.get("crop_box"), **common)


def _repeated(batch: Batch, times: int) -> Batch:
    """The batch's model inputs repeated ``times`` times along the batch dimension (path methods run many copies)."""
    return Batch({key: value.repeat(times, *[1] * (value.dim() - 1)) for key, value in batch.model_inputs.items()},
                 batch.token_mask.repeat(times, 1), batch.content_mask.repeat(times, 1))


def _joined(text: str | tuple[str, str] | None) -> str | None:
    """A text pair as one line for display."""
    return " | ".join(text) if isinstance(text, tuple) else text


def _as_items(inputs: Any, modality: str) -> tuple[bool, list]:
    """(whether a single input was given, the inputs as a list of per-sample items). A tensor of token ids is
    one text when 1-d; an image array or tensor is one image when 2-d or 3-d (:func:`toolkit.images.image_items`)."""
    if inputs is None:
        raise InputError("Nothing to explain: pass a text, an image, a list of them, or preprocessed tensors.")
    if isinstance(inputs, Mapping):
        if not inputs:
            raise InputError("The input mapping is empty: pass input_ids (text) or pixel_values (images).")
        tensors = {k: torch.as_tensor(v) for k, v in inputs.items()}
        main = tensors.get("input_ids", tensors.get("pixel_values"))
        if main is not None and main.dim() == (1 if "input_ids" in tensors else 3):
            return True, [tensors]
        if any(t.dim() == 0 for t in tensors.values()):
            raise InputError(f"Preprocessed inputs must be tensors with a batch dimension; got shapes "
                             f"{ {k: tuple(t.shape) for k, t in tensors.items()} }.")
        size = next(iter(tensors.values())).shape[0]
        return False, [{k: v[i] for k, v in tensors.items()} for i in range(size)]
    if modality == "image" and (torch.is_tensor(inputs) or isinstance(inputs, np.ndarray)):
        return inputs.ndim in (2, 3), image_items(inputs)
    if torch.is_tensor(inputs):
        if inputs.dim() == 1:
            return True, [inputs]
        return False, list(inputs)
    if isinstance(inputs, list):
        if not inputs:
            raise InputError("The input list is empty: nothing to explain.")
        missing = [index for index, item in enumerate(inputs) if item is None]
        if missing:
            raise InputError(f"Input #{missing[0]} of {len(inputs)} is None"
                             + (f" (and #{', #'.join(map(str, missing[1:]))})" if missing[1:] else "")
                             + ": pass a text or an image at every position.")
        return False, inputs
    return True, [inputs]


def _stacked(inputs: Any, modality: str) -> bool:
    """Whether each batch of ``inputs`` reaches the adapter as one tensor (or mapping of tensors), not a list."""
    return isinstance(inputs, Mapping) or (torch.is_tensor(inputs) and modality != "image")


def _stack(chunk: list) -> Any:
    if isinstance(chunk[0], Mapping):
        return {k: torch.stack([item[k] for item in chunk]) for k in chunk[0]}
    return torch.stack(chunk)


def _per_item(target: Any, count: int) -> list[Target]:
    if (torch.is_tensor(target) or isinstance(target, np.ndarray)) and target.ndim == 1:
        target = list(target)
    if isinstance(target, (list, tuple)):
        if len(target) != count:
            raise InputError(f"{len(target)} targets given for {count} inputs.")
        return list(target)
    return [target] * count


def _outside_inference(value: Any) -> Any:
    """``value`` with every tensor made under ``torch.inference_mode()`` cloned into a normal one, which autograd may
    record (it refuses inference tensors), in lists, tuples and mappings too; anything else as it is."""
    if torch.is_tensor(value):
        return value.clone() if value.is_inference() else value
    if isinstance(value, Mapping) and any(torch.is_tensor(v) and v.is_inference() for v in value.values()):
        return {key: _outside_inference(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)) and any(torch.is_tensor(v) and v.is_inference() for v in value):
        return type(value)(_outside_inference(item) for item in value)
    return value


def _unwrapped(model: Any, processor: Any) -> tuple[nn.Module, Any]:
    """The model inside DataParallel, DistributedDataParallel, torch.compile's wrapper or a Hugging Face pipeline
    (with the pipeline's tokenizer or image processor, unless ``processor`` is given)."""
    if isinstance(model, (str, os.PathLike)):
        raise UnsupportedModelError(f"Explainer takes a model object, not its name {str(model)!r}: use "
                                    f"Explainer.from_pretrained({str(model)!r}) to load it.")
    if not isinstance(model, nn.Module) and isinstance(getattr(model, "model", None), nn.Module):  # a pipeline
        if processor is None:
            processor = _pipeline_processor(model)
        model = model.model
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile(model)
            model = model._orig_mod
        else:
            break
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(f"Explainer takes a PyTorch model (a torch.nn.Module); got a "
                                    f"{type(model).__name__}.")
    return model, processor


def _pipeline_processor(pipeline: Any) -> Any:
    """What preprocesses a pipeline's inputs: its processor, else its tokenizer and image processor (both, for
    image-text models)."""
    from .multimodal.captioning import ImageTextProcessor

    if getattr(pipeline, "processor", None) is not None:
        return pipeline.processor
    tokenizer, image_processor = getattr(pipeline, "tokenizer", None), getattr(pipeline, "image_processor", None)
    if tokenizer is not None and image_processor is not None:
        return ImageTextProcessor(image_processor, tokenizer)
    return tokenizer if tokenizer is not None else image_processor


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) for the call; every submodule's own train/eval mode is restored afterwards."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, training in modes.items():
            module.train(training)


def _warn_if_uninformative(explanation: Explanation, position: int, reason: str) -> None:
    """A map that carries nothing (NaN, all zeros, one constant value) is said to be so, with the reason."""
    if explanation.heatmap is not None and explanation.boxes is None:
        values = np.asarray(explanation.heatmap, dtype=np.float64)
    else:
        values = np.asarray(explanation.scores, dtype=np.float64)
        if explanation.special_tokens is not None and len(explanation.special_tokens) == values.size:
            values = values[~np.asarray(explanation.special_tokens, dtype=bool)]
    if values.size == 0:
        return
    where = f"Input #{position} ({explanation.method}, target {explanation.label!r})"
    if not np.isfinite(values).all():
        warn(f"{where}: the relevance contains NaN or infinite values; the model's outputs or gradients "
             "overflowed. Try float32 inputs or another method.")
    elif not np.abs(values).max() > 0:
        warn(f"{where}: the relevance is zero everywhere: {reason}. Try another method (generic, rollout) or "
             "another target.")
    elif values.size > 1 and values.max() - values.min() <= 1e-6 * np.abs(values).max():
        warn(f"{where}: the relevance is the same ({values.flat[0]:.4g}) everywhere, so it singles nothing out. "
             "Try another method or another target.")


def _note_scene_model_on_photos(model: nn.Module, images: Any) -> None:
    """The built-in scene models saw 64x64 synthetic shapes only: say so when they are shown anything else."""
    from .images import image_size
    from .zoo.common import IMAGE_SIZE, is_scene_model

    if not is_scene_model(model) or images is None:
        return
    for index, image in enumerate(images if isinstance(images, (list, tuple)) else [images]):
        size = image_size(image)
        if size is not None and size != (IMAGE_SIZE, IMAGE_SIZE):
            warn(f"Image #{index} is {size[0]}x{size[1]}: this built-in model was trained on {IMAGE_SIZE}x{IMAGE_SIZE} "
                 "synthetic scenes of coloured shapes, so on a real photo its prediction and explanation say "
                 "little. Use a scene from toolkit.scenes, or load a model trained on photos.")
            return
