"""The entry point: explain a stock model's predictions with any registered method, batched."""
from __future__ import annotations

import contextlib
import difflib
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from . import loading
from .adapters import Batch, FamilySource, ModelAdapter, adapter_for
from .core.capture import Recorder
from .core.explicit_attention import explicit_attention
from .core.lrp import working
from .core.propagation import lrp_through_layers
from .core.trace import Trace
from .errors import InputError, UnsupportedModelError
from .explanation import Explanation
from .labels import ranked_labels
from .methods import Method, get_method, list_methods
from .text import word_scores
from .multimodal import MultimodalAdapter

Target = int | str | None
DEFAULT_PREFERENCE = ("transformer_attribution", "generic")  # the first that applies is a model's default


class Explainer:
    """Explains a stock transformer through hooks: ``Explainer(model, processor).explain(inputs)``.

    ``family``: a YAML file or dict declaring the model's layout (see the README: "A model the toolkit does not
    know"), for a classifier no built-in family covers.
    """

    def __init__(self, model: nn.Module, processor: Any = None, *, adapter: ModelAdapter | None = None,
                 name: str | None = None, family: FamilySource | None = None):
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
        if isinstance(self.adapter, MultimodalAdapter):
            supported = self.adapter.supported_methods
            if method_cls.name not in supported:
                return (f"Method {method_cls.name!r} is not available for {self.adapter.family} models; "
                        f"use one of {', '.join(supported)}.")
            return None
        if method_cls.needs_lrp:
            try:
                self.adapter.spec.check_lrp()
            except UnsupportedModelError as error:
                applicable = [m for m in list_methods() if not get_method(m).needs_lrp]
                return f"{error} Methods that apply: {', '.join(applicable)}."
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
            single, items = _as_items(inputs)
            if not single:
                raise InputError("predict() takes one input; call it once per input.")
            if isinstance(inputs, Mapping) or torch.is_tensor(inputs):
                items = _stack(items)
            with torch.no_grad():
                probabilities = self.adapter.logits(self.adapter.prepare(items)).float().softmax(-1)[0]
        return ranked_labels(probabilities.tolist(), top_k, self.labels)

    @property
    def default_method(self) -> str:
        """The method ``explain`` uses when none is named: the first of DEFAULT_PREFERENCE that applies."""
        applicable = self.applicable_methods()
        return next((name for name in DEFAULT_PREFERENCE if name in applicable), applicable[0])

    def explain(self, inputs: Any = None, method: str | None = None, target: Any = None,
                *, text_pair: Any = None, start_layer: int = 0, batch_size: int = 16,
                progress: bool | None = None, **keywords: Any) -> Explanation | list[Explanation]:
        """Explain one input (returns an Explanation) or several (returns a list), ``batch_size`` per pass.

        ``target``: a class index or label name, ``None`` for the predicted class, or one per input.
        ``method`` defaults to :attr:`default_method`, one that applies to this model. Keywords that name
        one of the method's options (``keep_identity=True``) go to the method. Image-text models take
        keywords instead of ``inputs``: ``image=``, ``text=`` (CLIP, with ``start_layer_text=``),
        ``question=`` (VQA), ``caption=`` (captioning). Language models take prompts: ``target`` is the next
        token (None: the predicted one), or ``continuation=`` (teacher forcing) or ``max_new_tokens=`` (greedy
        generation) explains every token of a continuation; ``keep_sink=True`` counts the first position as content
        (see :mod:`toolkit.adapters.causal_lm`).
        """
        name = method or self.default_method
        method_cls = get_method(name)
        refusal = self.method_refusal(name)
        if refusal is not None:
            raise UnsupportedModelError(refusal)
        options = {key: keywords.pop(key) for key in list(keywords) if key in method_cls.extra_options}
        method_impl = method_cls(start_layer=start_layer, **options)
        _note_scene_model_on_photos(self.model, inputs if inputs is not None else keywords.get("image"))
        with _eval_mode(self.model):
            if isinstance(self.adapter, MultimodalAdapter):
                if inputs is not None:
                    raise InputError(f"{self.adapter.family} models take keyword inputs: "
                                     "explain(image=..., text=... / question=... / caption=...).")
                result = self.adapter.explain(method_impl, target, **keywords)
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
                        f"Unexpected keywords {sorted(keywords)}: this is a {self.adapter.modality} classifier; "
                        f"pass its inputs as the first argument. Options of {name!r}: "
                        f"{', '.join(method_cls.option_names()) or 'none'}.")
                result = self._explain_classifier(inputs, method_impl, target, text_pair, batch_size, progress)
        for position, explanation in enumerate(result if isinstance(result, list) else [result]):
            _warn_if_uninformative(explanation, position, method_cls.empty_reason)
        return result

    def _explain_classifier(self, inputs: Any, method: Method, target: Any, text_pair: Any, batch_size: int,
                            progress: bool | None) -> Explanation | list[Explanation]:
        single, items = _as_items(inputs)
        pairs = None if text_pair is None else ([text_pair] if single else list(text_pair))
        targets = _per_item(target, len(items))
        if batch_size < 1:
            raise InputError("batch_size must be at least 1.")
        starts = range(0, len(items), batch_size)
        show = progress if progress is not None else len(starts) > 1
        results: list[Explanation] = []
        for start in tqdm(starts, desc=method.name, unit="batch", disable=not show):
            chunk = items[start:start + batch_size]
            if isinstance(inputs, Mapping) or torch.is_tensor(inputs):
                chunk = _stack(chunk)
            batch = self.adapter.prepare(chunk, text_pair=None if pairs is None else pairs[start:start + batch_size],
                                         first_index=start)
            results.extend(self._explain_batch(batch, method, targets[start:start + batch_size], start))
        return results[0] if single else results

    # --- one batch: one forward, at most one backward ------------------------------------------
    def _explain_batch(self, batch: Batch, method: Method, targets: list[Target], first_index: int = 0
                       ) -> list[Explanation]:
        spec = self.adapter.spec
        with explicit_attention(self.model), Recorder(keep_gradients=method.needs_gradients) as rec:
            for layer in spec.layers:
                rec.record_attention(layer.attention, layer.extract_probs)
                if method.needs_lrp:
                    for module in layer.recorded_modules():
                        rec.record(module)
            if method.needs_lrp:
                for module in spec.head:
                    rec.record(module)
            if method.needs_input_relevance:
                for module in self.adapter.input_modules():
                    rec.record(module)
            if method.needs_gradients:
                rec.start_graph_at(spec.layers[0].block)
            with torch.set_grad_enabled(method.needs_gradients):  # also under a caller's no_grad()
                logits = self.adapter.logits(batch)
                calls = spec.attention_calls(rec, batch.token_mask.shape[1])
                target_ids = self._resolve_targets(targets, logits, first_index)
                trace = Trace(probs=[c.probs for c in calls],
                              readout=spec.readout_weights(batch.token_mask, batch.content_mask),
                              token_mask=batch.token_mask, content_mask=batch.content_mask)
                if method.needs_gradients:
                    objective = logits.gather(1, target_ids[:, None]).sum()
                    trace.grads = list(torch.autograd.grad(objective, [c.live for c in calls]))
            if method.needs_lrp:
                spec.check_head(rec, logits)
                lowest = method.lowest_lrp_layer(len(spec.layers))
                first, trace.attention_relevance = lrp_through_layers(
                    spec, rec, [working(p) for p in trace.probs], target_ids, batch.token_mask.shape[1], lowest)
                if method.needs_input_relevance:
                    trace.input_relevance = self.adapter.input_relevance(rec, first, batch)
        with torch.no_grad():
            relevance = method.attribute(trace).detach().float().cpu().numpy()
            probabilities = logits.detach().float().softmax(-1).cpu().numpy()
        return [self._explanation(batch, i, relevance[i], int(t), float(probabilities[i, t]), method)
                for i, t in enumerate(target_ids.tolist())]

    def _resolve_targets(self, targets: list[Target], logits: torch.Tensor, first_index: int = 0) -> torch.Tensor:
        num_classes = logits.shape[-1]
        predicted = logits.argmax(-1).tolist()
        resolved = []
        for index, target in enumerate(targets):
            if torch.is_tensor(target) or isinstance(target, np.ndarray):
                if target.ndim != 0:
                    raise InputError(f"Input #{first_index + index}: target is an array of shape "
                                     f"{tuple(target.shape)}; give one class index per input.")
                target = target.item()
            if target is None:
                resolved.append(predicted[index])
                continue
            if isinstance(target, str):
                digits = target.strip()
                is_label = digits.lower() in {name.lower() for name in self.labels.values()}
                target = int(digits) if digits.isdigit() and not is_label else self.adapter.label_index(target)
            if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
                raise InputError(f"Input #{first_index + index}: target must be a class index, a label name or "
                                 f"None; got {target!r}.")
            if not 0 <= int(target) < num_classes:
                names = ", ".join(f"{k}: {v}" for k, v in sorted(self.labels.items())[:10])
                raise InputError(f"Input #{first_index + index}: target {target} is out of range: this model has "
                                 f"{num_classes} classes (0..{num_classes - 1}{'; ' + names if names else ''}).")
            resolved.append(int(target))
        return torch.tensor(resolved, device=logits.device)

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
                               word_segments=sample.get("word_segments"),
                               special_tokens=np.array(sample["special"], dtype=bool),
                               text=_joined(sample.get("text")), **common)
        grid, prefix = sample["grid"], self.adapter.num_prefix_tokens
        if relevance.ndim == 2:  # per-pixel (full LRP): per-patch sums serve as token scores
            heatmap = relevance
            height, width = heatmap.shape
            per_patch = heatmap.reshape(grid[0], height // grid[0], grid[1], width // grid[1]).sum(axis=(1, 3))
            scores = np.concatenate([np.zeros(prefix, dtype=np.float32), per_patch.ravel()])
        else:
            scores, heatmap = relevance, relevance[prefix:].reshape(grid)
        tokens = [f"[prefix{j}]" if j else "[CLS]" for j in range(prefix)]
        tokens += [f"patch({r},{c})" for r in range(grid[0]) for c in range(grid[1])]
        return Explanation(scores=scores.astype(np.float32), tokens=tokens, heatmap=heatmap.astype(np.float32),
                           image=sample["image"], original_image=sample.get("original_image"),
                           crop_box=sample.get("crop_box"), **common)


def _joined(text: str | tuple[str, str] | None) -> str | None:
    """A text pair as one line for display."""
    return " | ".join(text) if isinstance(text, tuple) else text


def _as_items(inputs: Any) -> tuple[bool, list]:
    """(whether a single input was given, the inputs as a list of per-sample items)."""
    if inputs is None:
        raise InputError("Nothing to explain: pass a text, an image, a list of them, or preprocessed tensors.")
    if isinstance(inputs, Mapping):
        tensors = {k: torch.as_tensor(v) for k, v in inputs.items()}
        if "input_ids" in tensors and tensors["input_ids"].dim() == 1:
            return True, [{k: v for k, v in tensors.items()}]
        size = next(iter(tensors.values())).shape[0]
        return False, [{k: v[i] for k, v in tensors.items()} for i in range(size)]
    if torch.is_tensor(inputs):
        if inputs.dim() in (1, 3):
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
        warnings.warn(f"{where}: the relevance contains NaN or infinite values; the model's outputs or "
                      "gradients overflowed. Try float32 inputs or another method.", stacklevel=3)
    elif not np.abs(values).max() > 0:
        warnings.warn(f"{where}: the relevance is zero everywhere: {reason}. Try another method "
                      "(generic, rollout) or another target.", stacklevel=3)
    elif values.size > 1 and values.max() - values.min() <= 1e-6 * np.abs(values).max():
        warnings.warn(f"{where}: the relevance is the same ({values.flat[0]:.4g}) everywhere, so it singles "
                      "nothing out. Try another method or another target.", stacklevel=3)


def _note_scene_model_on_photos(model: nn.Module, images: Any) -> None:
    """The built-in scene models saw 64x64 synthetic shapes only: say so when they are shown anything else."""
    from .images import image_size
    from .zoo.common import IMAGE_SIZE, is_scene_model

    if not is_scene_model(model) or images is None:
        return
    for index, image in enumerate(images if isinstance(images, (list, tuple)) else [images]):
        size = image_size(image)
        if size is not None and size != (IMAGE_SIZE, IMAGE_SIZE):
            warnings.warn(f"Image #{index} is {size[0]}x{size[1]}: this built-in model was trained on "
                          f"{IMAGE_SIZE}x{IMAGE_SIZE} synthetic scenes of coloured shapes, so on a real photo its "
                          "prediction and explanation say little. Use a scene from toolkit.scenes, or load a "
                          "model trained on photos.", stacklevel=4)
            return
