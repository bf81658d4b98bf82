"""Each model of a demo loaded once, cached, and used by one request at a time.

A model is shared by every request that selects it, but an explanation cannot share it: the library's
Recorder places its hooks on the model's own modules for the duration of a call, so a second call running at
the same moment would add its captures to the first one's (and ``explicit_attention`` switches the model's
attention implementation for the call). Each loaded model therefore carries a lock: requests on one model
queue for it, requests on different models run side by side.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch.nn as nn

from ..devices import default_device, describe
from ..errors import ConfigError
from ..explainer import Explainer
from .config import TAB_TITLES, DemoConfig, ModelEntry

# What each tab explains, as the adapters declare it (classifier modality, or image-text task).
TAB_KINDS = {"text": "text", "image": "image", "image_text": "image-text similarity",
             "vqa": "visual question answering", "captioning": "image captioning"}


@dataclass
class LoadedModel:
    """A loaded model of one tab. The zero-shot MiniLM keeps its encoder as ``model`` and builds a classifier for
    the labels of each request (its label embeddings are fixed at construction); every other model keeps its
    Explainer. ``model`` is the stock transformer the attention views read; hold ``lock`` while using it."""

    entry: ModelEntry
    tab: str
    model: nn.Module
    processor: Any
    explainer: Explainer | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _zero_shot: tuple[tuple, Explainer] | None = field(default=None, repr=False)  # (labels, their Explainer)

    @property
    def name(self) -> str:
        return self.entry.display

    @contextlib.contextmanager
    def session(self, labels: dict[str, str] | None = None) -> Iterator[Explainer]:
        """The model's Explainer, held for this request alone until the block ends."""
        with self.lock:
            if self.explainer is not None:
                yield self.explainer
                return
            from ..zero_shot import DEFAULT_LABELS, ZeroShotTextClassifier

            labels = labels or self.entry.labels or DEFAULT_LABELS
            key = tuple(labels.items())
            if self._zero_shot is None or self._zero_shot[0] != key:  # encode the labels only when they change
                classifier = ZeroShotTextClassifier(self.model, self.processor, labels)
                self._zero_shot = key, Explainer(classifier, self.processor, name=self.entry.model)
            yield self._zero_shot[1]


def load_entry(tab: str, entry: ModelEntry) -> LoadedModel:
    """Load ``entry`` for ``tab`` onto the default device (CUDA when present) and check that it is a model that tab
    explains."""
    device = default_device()
    if entry.is_zero_shot:
        from ..zoo.sentence_similarity import load_minilm

        encoder, tokenizer = load_minilm()
        _placed(encoder, entry, device)
        return LoadedModel(entry, tab, encoder, tokenizer)
    if entry.is_builtin:
        from .. import zoo

        model, processor = zoo.load(entry.model)
        explainer = Explainer(model, processor, name=f"scene-{entry.model}")
    else:
        kwargs = {"pretrained": entry.pretrained} if entry.pretrained is not None else {}
        explainer = Explainer.from_pretrained(entry.model, source=entry.source, **kwargs)
    _placed(explainer.model, entry, device)
    adapter = explainer.adapter
    kind = getattr(adapter, "task", None) or adapter.modality
    if kind != TAB_KINDS[tab]:
        home = next((TAB_TITLES[t] for t, k in TAB_KINDS.items() if k == kind), None)
        where = f"list it under the {home} tab" if home else "no tab of this demo explains it"
        raise ConfigError(f"{entry.model!r} is a {adapter.family} model ({kind}), not one the {TAB_TITLES[tab]} tab "
                          f"explains: {where}.")
    if adapter.family == "lxmert-vqa":
        raise ConfigError(f"{entry.model!r} is LXMERT, which reads region features from an object detector; the demo "
                          "takes images only. Explain it from Python with visual_feats= and visual_pos=.")
    return LoadedModel(entry, tab, explainer.model, explainer.adapter.processor, explainer)


def _placed(model: nn.Module, entry: ModelEntry, device) -> None:
    model.to(device)
    logging.getLogger(__name__).info("%s runs on the %s", entry.model, describe(device))


class ModelCache:
    """Loads each model on first use (or all at once with :meth:`preload`) and keeps it. Two requests that
    need the same model for the first time load it once: the second waits for the first."""

    def __init__(self, config: DemoConfig, loader: Callable[[str, ModelEntry], LoadedModel] = load_entry):
        self.config = config
        self._loader = loader
        self._models: dict[tuple, LoadedModel] = {}
        self._loading: dict[tuple, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, tab: str, display: str) -> LoadedModel:
        """The loaded model shown as ``display`` in ``tab``'s selector."""
        entry = self.config.entry(tab, display)
        key = (tab, entry.key)
        with self._guard:
            if key in self._models:
                return self._models[key]
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._guard:
                if key in self._models:
                    return self._models[key]
            loaded = self._loader(tab, entry)
            with self._guard:
                self._models[key] = loaded
                self._loading.pop(key, None)
            return loaded

    def preload(self) -> None:
        for tab in TAB_KINDS:
            for entry in self.config.models(tab):
                self.get(tab, entry.display)
