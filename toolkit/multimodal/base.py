"""The contract for image-text models: where each attention lives, which modalities it connects,
and how a batch is prepared, run and read out."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar

import numpy as np
import torch
import torch.nn as nn

from tqdm.auto import tqdm

from ..core import engine
from ..core.engine import Site
from ..core.lrp_rules import undeclared_attention
from ..core.propagation import one_hot
from ..core.spec import ModelSpec
from ..errors import InputError, UnsupportedModelError
from ..families import Family
from ..images import image_items, to_rgb
from ..methods import Method


def second_output(output: Any) -> torch.Tensor | None:
    return output[1] if isinstance(output, (tuple, list)) and len(output) > 1 else None


def count_items(value: Any, rank: int) -> int:
    """How many items a keyword gives: a list's length, a batch array's first dimension (an array of ``rank``
    dimensions), else one."""
    if isinstance(value, (list, tuple)):
        return len(value)
    if (torch.is_tensor(value) or isinstance(value, np.ndarray)) and value.ndim == rank:
        return value.shape[0]
    return 1


def _items(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [item for item in value]


def _per_pair(value: Any, pairs: int) -> bool:
    """Whether ``value`` gives one value per pair: a list or tuple of that length, not of token ids."""
    return (isinstance(value, (list, tuple)) and len(value) == pairs and len(value) > 0
            and not isinstance(value[0], (int, np.integer)))


class MultimodalAdapter(ABC):
    """A family of image-text models: its attention sites, the stacks it declares in full (for LRP), the readings
    its task takes, and the task itself (prepare inputs, the forward and its objective, the explanations); the
    shared engine (:mod:`toolkit.core.engine`) captures and the methods attribute.

    ``readings``: (query stream, key stream, linked) of every relevance the task reads, from which the methods that
    apply follow before any work (``linked``: the key's tokens are copied into the query's sequence, as GIT does)."""

    family: ClassVar[str]
    task: ClassVar[str]
    examples: ClassVar[str] = ""
    model_types: ClassVar[tuple[str, ...]] = ()  # Hugging Face config.model_type values loaded by ``load``
    readings: ClassVar[tuple[tuple[str, str, bool], ...]] = ()
    # method="auto": generic was the most faithful by deletion on CLIP and tied on ViLT (README, "Which method to
    # trust"); the bi-modal rules of ICCV 2021 were written for these models.
    preferred_methods: ClassVar[tuple[str, ...]] = ("generic",)
    # How keyword inputs pair up, for explain(..., batch_size=): the keyword whose items are images (a batch of them
    # an array of rank ``image_rank``), the one whose items pair with them (None: one explanation per image), how
    # ("grid": every image with every text, image-major; "zip": one with many, or two lists in order), and the
    # keywords that may give one value per pair (a list), which travel with their pairs.
    image_keyword: ClassVar[str] = "image"
    image_rank: ClassVar[int] = 4
    text_keyword: ClassVar[str | None] = None
    pairing: ClassVar[str] = "grid"
    per_pair: ClassVar[tuple[str, ...]] = ()
    numbered: ClassVar[bool] = False  # explain() takes first_index: explanations and messages number the images
    reruns: ClassVar[bool] = False  # the task runs the model again from other first-layer inputs (path methods)

    def __init__(self, model: nn.Module, processor: Any = None, declaration: Family | None = None):
        """``declaration``: the family's entry in families.yaml (or a user's), whose streams give the sites;
        families whose sites are Python (LXMERT, VisionEncoderDecoder, open_clip) have none."""
        self.model = model
        self.processor = processor
        self.name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
        self.layouts = {} if declaration is None else {
            name: declaration.stream(name).bind(model) for name in declaration.entry["streams"]}
        self._sites = self._specs = None
        if self.layouts:
            self.sites()  # a wrong entry is named before any input is read
            self.pixel_inputs()

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """Whether a family of Python sites explains ``model`` (declared families are matched by their entry)."""
        return False

    @classmethod
    def load(cls, name: str, **kwargs) -> tuple[nn.Module, Any]:
        """The stock model and its processor, from the Hub or a local folder."""
        raise NotImplementedError

    def sites(self) -> list[Site]:
        """Every attention module, in the order the model runs them: per declared stream, each layer's
        self-attention and then its cross-attention."""
        if self._sites is None:
            self._sites = []
            for name, layout in self.layouts.items():
                cross = layout.family.get("cross")
                crossing = layout.attention_modules("cross") if cross else [None] * len(layout.layers())
                for (module, extract, call, _), other in zip(layout.attention_modules(), crossing):
                    self._sites.append(Site(module, extract, name, name, call))
                    if other is not None:
                        self._sites.append(Site(other[0], other[1], name, cross["key"], other[2]))
        return self._sites

    def streams(self) -> dict[str, ModelSpec]:
        """The declared stacks of self-attention layers with the parts the LRP rules read (or why they cannot pass)."""
        if self._specs is None:
            self._specs = {name: layout.spec() for name, layout in self.layouts.items()}
        return self._specs

    @abstractmethod
    def explain(self, method: Method, target: Any, **inputs) -> list:
        """Explanations for the given inputs (one per image-text pair, question, or caption)."""

    def explain_in_batches(self, method: Method, target: Any, batch_size: int, progress: bool | None,
                           **inputs: Any) -> Any:
        """:meth:`explain`, ``batch_size`` pairs per pass: the inputs are cut into runs of whole pairs (whole images
        with all their texts on a grid), in order, with the per-pair values (targets among them) beside them."""
        images, texts = inputs.get(self.image_keyword), inputs.get(self.text_keyword) if self.text_keyword else None
        n_images, n_texts = count_items(images, self.image_rank), count_items(texts, 2)
        if self.text_keyword is None:
            n_texts = 1
        pairs = n_images * n_texts if self.pairing == "grid" else max(n_images, n_texts)
        if pairs <= batch_size:
            return self.explain(method, target, **inputs)
        if self.pairing == "grid" or n_texts == 1:   # runs of whole images
            step = max(1, batch_size // n_texts)
            runs = [(slice(s, s + step), None, slice(s * n_texts, (s + step) * n_texts)) for s in range(0, n_images, step)]
        elif n_images == 1:                          # one image, many texts
            runs = [(None, slice(s, s + batch_size), slice(s, s + batch_size)) for s in range(0, n_texts, batch_size)]
        else:                                        # as many images as texts, in order
            runs = [(slice(s, s + batch_size),) * 3 for s in range(0, pairs, batch_size)]
        results = []
        for image_part, text_part, pair_part in tqdm(runs, desc=method.name, unit="batch",
                                                     disable=not (progress if progress is not None else True)):
            chunk = dict(inputs)
            if image_part is not None:
                for keyword in self.image_side():
                    if count_items(inputs.get(keyword), self.image_rank) == n_images > 1:
                        chunk[keyword] = _items(inputs[keyword])[image_part]
            if text_part is not None:
                chunk[self.text_keyword] = list(texts)[text_part]
            for keyword in self.per_pair:
                if _per_pair(inputs.get(keyword), pairs):
                    chunk[keyword] = list(inputs[keyword])[pair_part]
            per_pair_target = isinstance(target, (list, tuple)) and len(target) == pairs
            chunk_target = list(target)[pair_part] if per_pair_target else target
            if self.numbered:
                chunk["first_index"] = pair_part.start
            explained = self.explain(method, chunk_target, **chunk)
            results.extend(explained if isinstance(explained, list) else [explained])
        return results

    def image_side(self) -> tuple[str, ...]:
        """The keywords that give one value per image (LXMERT's boxes and pictures go with its region features)."""
        return (self.image_keyword,)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def labels(self) -> dict[int, str]:
        return {}

    def predict(self, top_k: int, **inputs: Any) -> list[tuple[str, float]]:
        """The ``top_k`` most probable answers as (answer, probability); families with a fixed answer set override it."""
        raise UnsupportedModelError(f"{self.family} models have no fixed set of answers to rank: explain() gives "
                                    "the similarity, answer or caption with its probability.")

    # --- which methods apply: one declared check, before any work ----------------------------------------------
    def refusal(self, method: type[Method]) -> str | None:
        """Why ``method`` cannot explain this family's readings, or None when it can."""
        sites, streams = self.sites(), self.streams()
        for query, key, linked in self.readings:
            how = engine.route(method.reads, sites, query, key, linked)
            if how is None:
                return (f"Method {method.name!r} cannot explain {self.family} models: "
                        + (f"it propagates relevance within one stream, and the {query} tokens also attend to other "
                           "streams through cross-attention, which it has no rule for"
                           if method.reads == "stream" else f"no attention runs from the {query} to the {key} tokens"))
            if method.reruns_model and not (self.reruns and key in streams):
                return (f"Method {method.name!r} cannot explain {self.family} models yet: it runs the model again from "
                        "a stream's first-layer input, which this task does not offer")
            if method.rules is not None:
                reason = self.rules_refusal(method)
                if reason:
                    return f"Method {method.name!r} cannot explain {self.family} models: {reason}"
            if method.needs_lrp:
                if how != "stream" or query not in streams:
                    return (f"Method {method.name!r} cannot explain {self.family} models: the LRP rules of CVPR 2021 "
                            f"pass through one stream of self-attention layers, and the {query} tokens "
                            + ("also read other streams" if how != "stream" else "have no declared LRP parts"))
                try:
                    streams[query].check_lrp()
                except UnsupportedModelError as error:
                    return f"{error}"
        return None

    def rules_refusal(self, method: type[Method]) -> str | None:
        """Why LRP rules applied to the whole pass cannot explain this model: a stream without declared layers, a
        part of one the rules cannot pass, a cross-attention without declared projections, or a torch
        MultiheadAttention that nothing declares."""
        streams = self.streams()
        sites_streams = {site.query for site in self.sites()}
        if not streams or sites_streams - set(streams):
            return "its attention lives in streams the family does not declare, whose parts the rules need"
        for name, spec in streams.items():
            reason = method.refusal(spec, self.model)
            if reason:
                return f"the {name} stream: {reason}"
        crossing = {site.query for site in self.sites() if not site.is_self}
        missing = sorted(crossing - set(self.cross_stacks()))
        if missing:
            return (f"the cross-attention of the {', '.join(missing)} stream declares no query, key and value "
                    "projections (cross: projections:), where the attention rules apply")
        return undeclared_attention(self.model, *streams.values(), *self.cross_stacks().values())

    def cross_stacks(self) -> dict[str, ModelSpec]:
        """Per stream that attends to another, its cross-attention projections as declared (for the LRP rules)."""
        stacks = {name: layout.cross_spec() for name, layout in self.layouts.items()}
        return {name: stack for name, stack in stacks.items() if stack is not None}

    def check_method(self, method: Method) -> None:
        """The instance's options against the family: a start layer means nothing to the bi-modal rules."""
        sites = self.sites()
        if method.start_layer and any(engine.route(method.reads, sites, query, key, linked) == "network"
                                      for query, key, linked in self.readings):
            raise InputError(f"start_layer is not used by the bi-modal / encoder-decoder rules of {method.name!r} on "
                             f"{self.family} models: they start from the first attention layer of every stream "
                             "(start_layer applies within one stream, as in CLIP's towers or ViLT).")

    def images(self, image: Any) -> list:
        """The RGB images in ``image``: one image, a list, or a 4-d array or tensor (as classifiers read them)."""
        if image is None:
            raise InputError("No image given: pass image=<PIL image, array or path>.")
        return [to_rgb(im, i) for i, im in enumerate(image_items(image))]

    def run(self, method: Method, forward: Callable[[], tuple[Any, torch.Tensor]], tokens: dict[str, int] | None = None,
            lrp: Callable[[engine.Pass], dict[str, engine.LRPStart]] | None = None,
            rerun: Callable[[int], torch.Tensor] | None = None) -> engine.Pass:
        """One forward (and at most one backward, and LRP where the method needs it) through the shared engine;
        ``rerun(R)``: the outputs explained (R*B, C) for the inputs repeated R times (the path methods)."""
        streams = self.streams()
        return engine.run_pass(self.model, self.sites(), forward, method, streams=streams,
                               tokens={name: count for name, count in (tokens or {}).items() if name in streams},
                               lrp=lrp if method.needs_lrp else None, rerun=rerun,
                               cross=list(self.cross_stacks().values()), inputs=self.pixel_inputs())

    def pixel_inputs(self) -> dict[str, list[nn.Module]]:
        """Per image stream, its patch embedding (``patch_embedding`` in the stream's declaration): the LRP rules'
        graph starts at the pixels it reads, so that their input x gradient there is a per-pixel map."""
        return {name: [layout.patch_embedding()] for name, layout in self.layouts.items()
                if "patch_embedding" in layout.family.entry}

    def patch_stride(self) -> tuple[int, int]:
        """(rows, columns) of pixels per patch, from the first image stream's patch embedding."""
        convs = [modules[0] for modules in self.pixel_inputs().values()]
        if not convs:
            raise UnsupportedModelError(f"{self.family} models declare no patch embedding for their images.")
        return tuple(convs[0].stride)

    def relevance(self, method: Method, result: engine.Pass, query: str, key: str, rows: torch.Tensor,
                  tokens: torch.Tensor, content: torch.Tensor, **reading: Any) -> torch.Tensor:
        """Relevance (B, N_key) of ``query``'s tokens at ``rows`` ((B,) positions, or (B, N_query) weights) to
        ``key``'s tokens; ``reading``: the further fields of :class:`toolkit.core.engine.Reading`."""
        readout = rows if rows.dim() == 2 else one_hot(rows, tokens.shape[1])
        return engine.attribute(method, result, engine.Reading(query, key, readout, tokens, content, **reading))


def string_list(value: Any, keyword: str) -> list[str]:
    """``value`` (a string, or a list or tuple of strings) as a list of non-empty strings; ``keyword`` names the
    argument in errors."""
    if value is not None and not isinstance(value, (str, list, tuple)):
        raise InputError(f"{keyword} must be a string or a list of strings; got {value!r} "
                         f"({type(value).__name__}).")
    texts = [value] if isinstance(value, str) else list(value or [])
    if not texts:
        raise InputError(f"No {keyword} given: pass {keyword}='...' or a list of them.")
    for index, item in enumerate(texts):
        if not isinstance(item, str) or not item.strip():
            raise InputError(f"{keyword.capitalize()} #{index} is empty or not a string.")
    return texts


def reject_unknown(family: str, accepted: str, unknown: dict) -> None:
    if unknown:
        raise InputError(f"{family} models take {accepted}; got unexpected {sorted(unknown)}.")


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def image_heatmap(relevance: np.ndarray, prefix: int, grid: tuple[int, int]) -> np.ndarray:
    """One item's image relevance as shown: a per-pixel map (the LRP rules' input x gradient at the pixels, (H, W))
    as it is, else its patch tokens' (after ``prefix`` tokens such as [CLS]) on the patch grid."""
    return relevance if relevance.ndim == 2 else relevance[prefix:].reshape(grid)
