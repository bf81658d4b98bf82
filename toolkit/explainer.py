"""The entry point: explain a stock model's predictions with any registered method, batched."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from . import loading
from .adapters import Batch, ModelAdapter, adapter_for
from .core.capture import Recorder
from .core.explicit_attention import explicit_attention
from .core.lrp import working
from .core.propagation import lrp_through_layers
from .core.trace import Trace
from .errors import InputError
from .explanation import Explanation
from .methods import Method, get_method
from .multimodal import MultimodalAdapter

Target = int | str | None


class Explainer:
    """Explains a stock transformer through hooks: ``Explainer(model, processor).explain(inputs)``."""

    def __init__(self, model: nn.Module, processor: Any = None, *, adapter: ModelAdapter | None = None,
                 name: str | None = None):
        self.model = model.eval()
        self.adapter = adapter or adapter_for(model, processor)
        self.name = name or getattr(getattr(model, "config", None), "_name_or_path", None) or type(model).__name__
        self.adapter.name = self.name

    @classmethod
    def from_pretrained(cls, name: str, source: str = "auto", **kwargs: Any) -> "Explainer":
        """Load ``name`` from the Hugging Face Hub or a local folder (``source="hf"``), timm (``"timm"``)
        or open_clip (``"open_clip"``, with ``pretrained=`` a tag, a local checkpoint file or None).

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
        return cls(model, processor, name=name)

    @property
    def labels(self) -> dict[int, str]:
        return self.adapter.labels

    def explain(self, inputs: Any = None, method: str | None = None, target: Any = None,
                *, text_pair: Any = None, start_layer: int = 0, batch_size: int = 16,
                progress: bool | None = None, **multimodal_inputs: Any) -> Explanation | list[Explanation]:
        """Explain one input (returns an Explanation) or several (returns a list), ``batch_size`` per pass.

        ``target``: a class index or label name, ``None`` for the predicted class, or one per input.
        ``method`` defaults to ``transformer_attribution`` for classifiers and ``generic`` for image-text models.
        Image-text models take keywords instead: ``image=``, ``text=`` (CLIP), ``question=`` (VQA),
        ``caption=`` (captioning).
        """
        if isinstance(self.adapter, MultimodalAdapter):
            if inputs is not None:
                raise InputError(f"{self.adapter.family} models take keyword inputs: "
                                 "explain(image=..., text=... / question=... / caption=...).")
            method_impl = get_method(method or "generic")(start_layer=start_layer)
            return self.adapter.explain(method_impl, target, **multimodal_inputs)
        if multimodal_inputs:
            raise InputError(f"Unexpected keywords {sorted(multimodal_inputs)}: this is a "
                             f"{self.adapter.modality} classifier; pass its inputs as the first argument.")
        method_impl = get_method(method or "transformer_attribution")(start_layer=start_layer)
        single, items = _as_items(inputs)
        pairs = None if text_pair is None else ([text_pair] if single else list(text_pair))
        targets = _per_item(target, len(items))
        if batch_size < 1:
            raise InputError("batch_size must be at least 1.")
        starts = range(0, len(items), batch_size)
        show = progress if progress is not None else len(starts) > 1
        results: list[Explanation] = []
        for start in tqdm(starts, desc=f"{method}", unit="batch", disable=not show):
            chunk = items[start:start + batch_size]
            if isinstance(inputs, Mapping) or torch.is_tensor(inputs):
                chunk = _stack(chunk)
            batch = self.adapter.prepare(chunk, text_pair=None if pairs is None else pairs[start:start + batch_size])
            results.extend(self._explain_batch(batch, method_impl, targets[start:start + batch_size]))
        return results[0] if single else results

    # --- one batch: one forward, at most one backward ------------------------------------------
    def _explain_batch(self, batch: Batch, method: Method, targets: list[Target]) -> list[Explanation]:
        spec = self.adapter.spec
        if method.needs_lrp:
            spec.check_lrp()
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
                calls = [rec.attention_call(layer.attention, layer.call) for layer in spec.layers]
                target_ids = self._resolve_targets(targets, logits)
                trace = Trace(probs=[c.probs for c in calls], readout=spec.readout_weights(batch.token_mask),
                              token_mask=batch.token_mask, content_mask=batch.content_mask)
                if method.needs_gradients:
                    objective = logits.gather(1, target_ids[:, None]).sum()
                    trace.grads = list(torch.autograd.grad(objective, [c.live for c in calls]))
            if method.needs_lrp:
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

    def _resolve_targets(self, targets: list[Target], logits: torch.Tensor) -> torch.Tensor:
        num_classes = logits.shape[-1]
        predicted = logits.argmax(-1).tolist()
        resolved = []
        for index, target in enumerate(targets):
            if target is None:
                resolved.append(predicted[index])
                continue
            if isinstance(target, str):
                target = self.adapter.label_index(target)
            if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
                raise InputError(f"target must be a class index, a label name or None; got {target!r}.")
            if not 0 <= int(target) < num_classes:
                names = ", ".join(f"{k}: {v}" for k, v in sorted(self.labels.items())[:10])
                raise InputError(f"target {target} is out of range: this model has {num_classes} classes "
                                 f"(0..{num_classes - 1}{'; ' + names if names else ''}).")
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
            word_scores = (np.array([scores[g].sum() for g in sample["word_pieces"]], dtype=np.float32)
                           if words is not None else None)
            return Explanation(scores=scores.astype(np.float32), tokens=sample["tokens"], words=words,
                               word_scores=word_scores, word_segments=sample.get("word_segments"),
                               special_tokens=np.array(sample["special"], dtype=bool), **common)
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
                           image=sample["image"], **common)


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
        return False, inputs
    return True, [inputs]


def _stack(chunk: list) -> Any:
    if isinstance(chunk[0], Mapping):
        return {k: torch.stack([item[k] for item in chunk]) for k in chunk[0]}
    return torch.stack(chunk)


def _per_item(target: Any, count: int) -> list[Target]:
    if isinstance(target, (list, tuple)):
        if len(target) != count:
            raise InputError(f"{len(target)} targets given for {count} inputs.")
        return list(target)
    return [target] * count
