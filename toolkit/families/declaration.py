"""One family declaration (a YAML entry): its checked keys, whether it matches a model, and its parts resolved
against a model's own modules (a :class:`~toolkit.core.spec.ModelSpec`).

Paths are module or parameter names as ``model.named_modules()`` prints them. ``{base}`` stands for the model's
base model (``model.base_model_prefix`` when the model has it as a child: "bert", "vit"...; nothing for a bare
encoder), ``[3]`` may be written for ``.3``, and a trailing ``?`` marks a part that may be absent (missing or
None). In ``layers``, ``*`` matches a layer's index; a layer part is read from its layer, unless it holds a ``*``:
it is then read from the model's root with the layer's index in its place (XLM keeps each part of a layer in a list
of its own). An empty path names the layer itself.
"""
from __future__ import annotations

import difflib
import fnmatch
import functools
import inspect
import re
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn

from ..core.spec import READOUTS, LayerSpec, ModelSpec
from ..errors import FamilyError
from . import quirks

KEYS = {
    "name": "the family's name (defaults to the entry's key or the file's name)",
    "description": "what the family covers, shown in lists of supported families",
    "match": "which models the entry explains: model_type, class (patterns), config values (a dotted key reads a "
             "sub-config, a list accepts any of its values)",
    "inputs": "text, image, text-generation (a causal language model: every explained token read at the position "
              "before it), or image-text (streams of layers that attend to each other; see task and streams)",
    "task": "image-text families: the task that prepares inputs, runs the model and builds the explanations "
            "(clip, siglip, vilt-vqa, blip-captioning, blip-vqa, git)",
    "streams": "image-text families: {stream name: its layers declared with the keys above (layers, heads, probs, "
               "query..., head, readout), plus cross: {module, output, key} where each layer also attends to "
               "another stream}, in the order the model runs them",
    "cross": "in a stream: where each layer's cross-attention probabilities are captured, {module: path, output: "
             "index, key: the stream it attends to, projections: {query, key, value} (Linear or Conv1D, for the "
             "AttnLRP rules; key and value may name one module whose output is [key | value])}",
    "pool": "in a stream: an attention-pooling head after the layers, {module: path, attention: path of its torch "
            "nn.MultiheadAttention (from the module), fc1: path, fc2: path (its MLP)}, which the AttnLRP and CP-LRP "
            "rules pass (SigLIP's image tower: a learned probe attends to every patch)",
    "source": "hf (default) or timm: how images are preprocessed, how labels are read",
    "forward_kwargs": "keyword arguments every forward call gets (e.g. output_attentions: true)",
    "layers": "pattern of the layer modules, * standing for the layer index",
    "layer_order": "a named quirk that orders layers run several times (albert-shared)",
    "heads": "number of attention heads: an integer or a path (config.num_attention_heads, attn.num_heads)",
    "probs": "where the attention probabilities are captured: {module: path, output: index}",
    "query": "query projection (Linear)", "key": "key projection (Linear)", "value": "value projection (Linear)",
    "qkv": "fused query/key/value projection (Linear)",
    "out_proj": "attention output projection (Linear)",
    "fc1": "first MLP layer (Linear)", "fc2": "second MLP layer (Linear)",
    "attn_branch": "module whose output the attention adds to the residual stream (default: out_proj)",
    "mlp_branch": "module whose output the MLP adds to the residual stream (default: fc2)",
    "activation": "the MLP's activation module, which turns fc1's output into fc2's input (optional: the LRP pass "
                  "then recomputes fc2's input instead of keeping it, where it checks out call by call)",
    "attn_scale": "layer-scale parameter multiplying the attention branch", "mlp_scale": "same for the MLP branch",
    "norm": "pre (LayerNorm before attention and MLP) or post (after each residual addition)",
    "head": "Linear layers from the read-out token to the logits, in order",
    "readout": "token index, mean, mean-content, next-token (language models: the position before each explained "
               "token), or {from: path, values: {value: read-out}}",
    "prefix_tokens": "images: parameters (1, k, dim) placed before the patches (class, distillation, registers)",
    "patch_embedding": "images (and image streams): the Conv2d that turns pixels into patch tokens",
    "lrp_start": "a named quirk giving LRP's start at the last layer's output tokens, for a head without Linear layers "
                 "(label-similarity: toolkit.zero_shot's cosine with label descriptions over mean-pooled tokens)",
    "lrp_blockers": "[{reason: why LRP cannot pass, if_present: [paths], rules: [cvpr2021, attnlrp]}]: refuse the "
                    "LRP-based methods (those of the rule sets listed; all when rules is left out)",
    "gated_mlp": "true when fc2 reads the product of two projections (GLU, SwiGLU: Llama, ModernBERT); AttnLRP splits "
                 "its relevance evenly between them",
}
RULE_SETS = ("cvpr2021", "attnlrp")  # the LRP rules of Chefer et al. (CVPR 2021), and AttnLRP / CP-LRP
LINEAR_PARTS = ("query", "key", "value", "qkv", "out_proj", "fc1", "fc2")
MODULE_PARTS = ("attn_branch", "mlp_branch", "activation")
SCALE_PARTS = ("attn_scale", "mlp_scale")
POOL_PARTS = ("module", "attention", "fc1", "fc2")
MISSING = object()
INPUTS = ("text", "image", "text-generation", "image-text")
STREAM = "stream"  # the inputs of a stream inside an image-text family
STREAM_KEYS = ("cross", "pool")  # keys only a stream declares


def expand(path: str, base: str, index: str | None = None) -> str:
    """``path`` with ``{base}``, ``[k]`` and (when given) ``*`` replaced, and the ``?`` mark removed."""
    path = re.sub(r"\[([^\]]*)\]", r".\1", path.rstrip("?")).replace("{base}", base)
    if index is not None:
        path = path.replace("*", index)
    return ".".join(part for part in path.split(".") if part)


def walk(root: Any, dotted: str) -> Any:
    """The attribute at ``dotted`` below ``root`` (module children, parameters, plain attributes), or MISSING."""
    value = root
    for part in filter(None, dotted.split(".")):
        value = getattr(value, part, MISSING)
        if value is MISSING or value is None:
            return value
    return value


def present(value: Any) -> bool:
    """Whether a blocker's part is there: an nn.Identity (timm's q_norm when there is none) counts as absent."""
    return value is not MISSING and value is not None and not isinstance(value, nn.Identity)


def _output(index: int | None, describe: Callable[[Any], str]) -> Callable[[Any], torch.Tensor]:
    """Reads the probabilities from a module's output: the output itself, or one element of its tuple."""
    def extract(output: Any) -> torch.Tensor:
        probs = output
        if index is not None:
            probs = output[index] if isinstance(output, (tuple, list)) and len(output) > index else None
        if not torch.is_tensor(probs):
            raise FamilyError(describe(output))
        return probs

    return extract


@dataclass(frozen=True)
class Family:
    """A checked declaration. ``origin`` says where it was declared, for messages."""

    name: str
    entry: dict
    origin: str

    @classmethod
    def parse(cls, name: str, entry: Any, origin: str) -> "Family":
        family = cls(str(entry.get("name", name)) if isinstance(entry, dict) else str(name),
                     entry if isinstance(entry, dict) else {}, origin)
        if not isinstance(entry, dict):
            raise family.error(f"an entry must be a mapping of keys ({', '.join(KEYS)}); got {type(entry).__name__}")
        family._check()
        return family

    @property
    def label(self) -> str:
        return f"Family {self.name!r} ({self.origin})"

    def error(self, problem: str) -> FamilyError:
        return FamilyError(f"{self.label}: {problem}" + ("" if problem.endswith((".", "?")) else "."))

    def get(self, key: str, default: Any = None) -> Any:
        return self.entry.get(key, default)

    @property
    def inputs(self) -> str:
        return self.entry["inputs"]

    @property
    def description(self) -> str:
        return self.get("description") or f"declared in {self.origin}"

    # --- checks of the entry alone ------------------------------------------------------------------
    def _check(self) -> None:
        for key in self.entry:
            if key not in KEYS:
                close = difflib.get_close_matches(str(key), KEYS, n=1)
                raise self.error(f"unknown key {key!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                                 + f" Keys: {', '.join(KEYS)}.")
        kind = self.get("inputs")
        needed = (["task", "streams"] if kind == "image-text" else ["inputs", "layers", "heads", "probs"]
                  + (["patch_embedding"] if kind == "image" else []))
        missing = [key for key in needed if key not in self.entry]
        if missing:
            raise self.error(f"missing {', '.join(missing)} ({'; '.join(KEYS[key] for key in missing)})")
        self._one_of("inputs", INPUTS + ((STREAM,) if "." in self.name else ()))
        misplaced = [key for key in ("task", "streams") if key in self.entry and kind != "image-text"]
        misplaced += [key for key in STREAM_KEYS if key in self.entry and kind != STREAM]
        if misplaced:
            raise self.error(f"{', '.join(misplaced)} belong{'s' if len(misplaced) == 1 else ''} to "
                             + ("a stream of an image-text family" if set(misplaced) <= set(STREAM_KEYS) else
                                "an image-text family (inputs: image-text)"))
        if kind == "image-text":
            self._check_streams()
            return
        self._one_of("source", quirks.SOURCES, optional=True)
        self._one_of("norm", ("pre", "post"), optional=True)
        self._one_of("layer_order", quirks.LAYER_ORDERS, optional=True)
        self._one_of("lrp_start", quirks.LRP_STARTS, optional=True)
        for key in ("layers", "patch_embedding", *LINEAR_PARTS, *MODULE_PARTS, *SCALE_PARTS):
            if key in self.entry and not isinstance(self.entry[key], str):
                raise self.error(f"{key} must be a path (a string); got {self.entry[key]!r}")
        if "*" not in self.entry["layers"]:
            raise self.error(f"layers {self.entry['layers']!r} has no * standing for the layer index")
        if self.entry["layers"].count("*") > 1 and any("*" in self.get(key, "") for key in (*LINEAR_PARTS, *MODULE_PARTS)):
            raise self.error("a layer part holds a *, but layers has several: which index it stands for is unclear")
        probs = self.entry["probs"]
        if not (isinstance(probs, dict) and isinstance(probs.get("module"), str) and set(probs) <= {"module", "output"}
                and isinstance(probs.get("output", 0), int)):
            raise self.error(f"probs must be {{module: path, output: index}} (output optional: the module's output "
                             f"itself); got {probs!r}")
        for key in ("head", "prefix_tokens"):
            value = self.get(key, [])
            if not (isinstance(value, list) and all(isinstance(path, str) for path in value)):
                raise self.error(f"{key} must be a list of paths; got {value!r}")
        if self.get("qkv") and any(self.get(key) for key in ("query", "key", "value")) and not self.get("qkv").endswith("?"):
            raise self.error("declare either qkv (fused) or query, key and value, not both (or mark them optional: ?)")
        self._check_readout(self.get("readout", 0))
        self._check_match(self.get("match", {}))
        for blocker in self.get("lrp_blockers", []):
            if not (isinstance(blocker, dict) and isinstance(blocker.get("reason"), str)
                    and set(blocker) <= {"reason", "if_present", "rules"} and isinstance(blocker.get("if_present", []), list)
                    and set(blocker.get("rules", RULE_SETS)) <= set(RULE_SETS)):
                raise self.error(f"each lrp_blockers item is {{reason: text, if_present: [paths], rules: [rule sets of "
                                 f"{', '.join(RULE_SETS)}]}}; got {blocker!r}")
        pool = self.get("pool", {})
        if not (isinstance(pool, dict) and all(isinstance(path, str) for path in pool.values())
                and set(pool) in (set(), set(POOL_PARTS))):
            raise self.error(f"pool is {{{': path, '.join(POOL_PARTS)}: path}}; got {pool!r}")
        if not isinstance(self.get("gated_mlp", False), bool):
            raise self.error(f"gated_mlp is true or false; got {self.get('gated_mlp')!r}")
        if not isinstance(self.get("forward_kwargs", {}), dict):
            raise self.error("forward_kwargs must be a mapping of keyword arguments")

    def _check_streams(self) -> None:
        from ..multimodal import TASKS  # the Python side of each image-text task; imported on use (no cycle)

        self._one_of("task", TASKS)
        streams = self.entry["streams"]
        if not isinstance(streams, dict) or not streams:
            raise self.error("streams must map stream names to layer declarations, e.g. {image: {layers: ...}, "
                             "text: {layers: ...}}")
        for name in streams:
            stream = self.stream(name)
            cross = stream.get("cross")
            if cross is None:
                continue
            projections = cross.get("projections", {}) if isinstance(cross, dict) else None
            if not (isinstance(cross, dict) and isinstance(cross.get("module"), str) and cross.get("key") in streams
                    and set(cross) <= {"module", "output", "key", "projections"} and isinstance(projections, dict)
                    and set(projections) <= {"query", "key", "value"}
                    and all(isinstance(path, str) for path in projections.values())):
                raise stream.error(f"cross must be {{module: path, output: index, key: one of {', '.join(streams)}, "
                                   f"projections: {{query: path, key: path, value: path}}}} (projections optional); "
                                   f"got {cross!r}")

    def stream(self, name: str) -> "Family":
        """One stream of an image-text family, as a family of its own (its keys checked as a classifier's are)."""
        entry = self.entry["streams"][name]
        if not isinstance(entry, dict):
            raise self.error(f"stream {name!r} must be a mapping of keys; got {type(entry).__name__}")
        return Family.parse(f"{self.name}.{name}", {**entry, "inputs": STREAM}, self.origin)

    def _one_of(self, key: str, allowed, optional: bool = False) -> None:
        if optional and key not in self.entry:
            return
        if self.entry.get(key) not in allowed:
            raise self.error(f"{key} is {self.entry.get(key)!r}; use one of {', '.join(map(str, allowed))}")

    def _check_readout(self, readout: Any, table: bool = True) -> None:
        if isinstance(readout, dict) and table:
            if set(readout) != {"from", "values"} or not isinstance(readout["values"], dict):
                raise self.error(f"readout as a table is {{from: path, values: {{value: read-out}}}}; got {readout!r}")
            for value in readout["values"].values():
                self._check_readout(value, table=False)
        elif not (isinstance(readout, int) and not isinstance(readout, bool) or readout in READOUTS[1:]):
            raise self.error(f"readout {readout!r} is none of: a token index, {', '.join(READOUTS[1:])}, or "
                             "{from: path, values: {...}}")

    def _check_match(self, match: Any) -> None:
        if not isinstance(match, dict) or not set(match) <= {"model_type", "class", "config"}:
            raise self.error(f"match takes model_type, class and config; got {match!r}")
        if not isinstance(match.get("config", {}), dict):
            raise self.error("match.config must be a mapping of config values")

    # --- matching ---------------------------------------------------------------------------------------
    def specificity(self, model: nn.Module, layout_only: bool = False) -> int | None:
        """None when the entry does not match ``model``; else how far up the model's class hierarchy its class
        pattern matched (0: the class itself), so that the most specific entry wins. With ``layout_only`` (the
        attention views, which read any model of a type: its bare encoder too), an entry that names a
        model_type does not check the class."""
        match = self.get("match", {})
        config = getattr(model, "config", None)
        model_type = getattr(config, "model_type", None)
        types = _listed(match.get("model_type"))
        if types and model_type not in types:
            return None
        for key, value in match.get("config", {}).items():  # a dotted key reads a sub-config; a list: any of
            if walk(config, key) not in (value if isinstance(value, list) else [value]):
                return None
        patterns = _listed(match.get("class"))
        if not patterns or (layout_only and types):
            return len(type(model).__mro__) if (types or patterns or match.get("config")) else None
        depths = [depth for depth, klass in enumerate(type(model).__mro__)
                  if any(fnmatch.fnmatchcase(klass.__name__, pattern) for pattern in patterns)]
        return min(depths) if depths else None

    def bind(self, model: nn.Module) -> "Layout":
        return Layout(self, model)


def _is_conv1d(module: Any) -> bool:
    """transformers' Conv1D (GPT-2): a linear layer with its weight stored transposed."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def _listed(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


class Layout:
    """A family resolved against one model: its modules, found by their declared paths."""

    def __init__(self, family: Family, model: nn.Module):
        self.family, self.model = family, model
        prefix = getattr(model, "base_model_prefix", "") or ""
        self.base = prefix if isinstance(getattr(model, prefix, None), nn.Module) and prefix else ""
        self._names: list[str] | None = None
        self._layers: list[tuple[str, nn.Module, int]] | None = None

    # --- paths and messages ---------------------------------------------------------------------------
    def names(self) -> list[str]:
        if self._names is None:
            named = [name for name, _ in self.model.named_modules() if name]
            named += [name for name, _ in self.model.named_parameters()]
            named += [name for name, _ in self.model.named_buffers()]
            # a Linear's own weight and bias are never a declared part: leave them out of suggestions
            self._names = [name for name in dict.fromkeys(named) if name.rpartition(".")[2] not in ("weight", "bias")]
        return self._names

    def nearby(self, path: str) -> str:
        """' Paths nearby: ...' : close spellings of ``path`` and the children of its deepest existing parent (its
        siblings when it exists)."""
        names = self.names()
        parent = path.rpartition(".")[0]
        while parent and parent not in names:
            parent = parent.rpartition(".")[0]
        prefix = parent + "." if parent else ""
        children = [name for name in names if name.startswith(prefix) and "." not in name[len(prefix):]]
        close = difflib.get_close_matches(path, names, n=4, cutoff=0.6)
        shown = list(dict.fromkeys(close + children))[:12]
        return f" Paths nearby: {', '.join(shown)}." if shown else ""

    def error(self, problem: str, path: str | None = None) -> FamilyError:
        """An error naming the entry; with ``path``, the module paths that exist near it."""
        return self.family.error(problem if path is None else problem.rstrip(".") + "." + self.nearby(path))

    def full_path(self, path: str, layer_path: str = "", index: str | None = None) -> str:
        if "*" in path:
            return expand(path, self.base, index)
        return ".".join(part for part in (layer_path, expand(path, self.base)) if part)

    def find(self, key: str, path: str, layer_path: str = "", index: str | None = None) -> Any:
        """The object at a declared path (an nn.Identity too: a capture point or a branch may be one), None when an
        optional (``?``) part is missing or None; an error naming the entry and the paths nearby when a required
        one is."""
        full = self.full_path(path, layer_path, index)
        value = walk(self.model, full)
        if value is not MISSING and value is not None:
            return value
        if path.endswith("?"):
            return None
        what = "is None" if value is None else "matches nothing"
        raise self.error(f"{key} {path!r} {what} in {type(self.model).__name__} (looked for {full!r})", full)

    def value(self, key: str, path: Any, layer_path: str = "") -> Any:
        """A declared value: a literal, ``config.<name>`` from the model's config, or a path from the layer."""
        if not isinstance(path, str):
            return path
        if path.startswith("config."):
            value = walk(getattr(self.model, "config", None), path[len("config."):])
            if value is MISSING:
                raise self.error(f"{key} {path!r}: {type(self.model).__name__}'s config has no "
                                 f"{path[len('config.'):]!r}")
            return value
        full = self.full_path(path, layer_path)
        value = walk(self.model, full)
        if value is MISSING:
            raise self.error(f"{key} {path!r} matches nothing (looked for {full!r})", full)
        return value

    # --- layers -----------------------------------------------------------------------------------------
    def layers(self) -> list[tuple[str, nn.Module, int]]:
        """(path, module, call) of each layer in the order the model runs them."""
        if self._layers is None:
            self._layers = self._find_layers()
        return self._layers

    def _find_layers(self) -> list[tuple[str, nn.Module, int]]:
        pattern = expand(self.family.entry["layers"], self.base)
        matcher = re.compile(re.escape(pattern).replace(r"\*", r"(\d+)"))
        found = []
        for name, module in self.model.named_modules():
            hit = matcher.fullmatch(name)
            if hit:
                found.append((tuple(int(group) for group in hit.groups()), name, module))
        if not found:
            declared = self.family.entry["layers"]
            looked = f" (looked for {pattern!r})" if pattern != declared else ""
            raise self.error(f"layers {declared!r} matches no module of {type(self.model).__name__}{looked}",
                             pattern.replace("*", "0"))
        found.sort(key=lambda item: item[0])
        order = self.family.get("layer_order")
        if order:
            return quirks.LAYER_ORDERS[order](self.model, found)
        return [(name, module, 0) for _, name, module in found]

    def attention_modules(self, key: str = "probs") -> list[tuple[nn.Module, Callable[[Any], torch.Tensor], int, str]]:
        """(capture module, probability extractor, call, its path) per layer: what every method records (``key``
        "cross": where a stream's layers attend to another stream)."""
        probs = self.family.entry[key]
        captured = []
        for path, layer, call in self.layers():
            index = path.rsplit(".", 1)[-1]
            full = self.full_path(probs["module"], path, index)
            module = layer if not probs["module"] else self.find(f"{key}.module", probs["module"], path, index)
            if not isinstance(module, nn.Module):
                raise self.error(f"{key}.module {probs['module']!r} is a {type(module).__name__}, not a module", full)
            captured.append((module, _output(probs.get("output"), self._no_probs(full, probs.get("output"))), call, full))
        return captured

    def _no_probs(self, path: str, index: int | None) -> Callable[[Any], str]:
        def describe(output: Any) -> str:
            got = f"a tuple of {len(output)}" if isinstance(output, (tuple, list)) else type(output).__name__
            return (f"{self.family.label}: {path!r} returned {got}, with no attention probabilities at "
                    f"{'its output' if index is None else f'output[{index}]'}. The model may still run a fused attention "
                    "path (load it with attn_implementation='eager'), or its attention returns the probabilities only "
                    "when asked (declare forward_kwargs: {output_attentions: true}).")
        return describe

    def _linear(self, key: str, layer_path: str = "", index: str | None = None, path: str | None = None):
        path = path if path is not None else self.family.get(key)
        if not path:
            return None
        module = self.find(key, path, layer_path, index)
        if module is not None and not isinstance(module, nn.Linear) and not _is_conv1d(module):
            full = self.full_path(path, layer_path, index)
            raise self.error(f"{key} {path!r} is a {type(module).__name__}; the LRP rules need an nn.Linear there", full)
        return module

    def spec(self) -> ModelSpec:
        """Every layer's parts, the head and the read-out, as references to the model's own modules."""
        entry, paths = self.family.entry, {}
        norm, layers, blockers = entry.get("norm"), [], []
        captures = self.attention_modules()
        for (path, block, call), (attention, extract, _, capture_path) in zip(self.layers(), captures):
            index = path.rsplit(".", 1)[-1]
            parts = {key: self._linear(key, path, index) for key in LINEAR_PARTS}
            for key in (*MODULE_PARTS, *SCALE_PARTS):
                parts[key] = self.find(key, entry[key], path, index) if key in entry else None
            for key in (*LINEAR_PARTS, *MODULE_PARTS):
                if parts[key] is not None:
                    paths[id(parts[key])] = self.full_path(entry[key], path, index)
            paths[id(attention)], paths[id(block)] = capture_path, path
            heads = self.value("heads", entry["heads"], path)
            if not isinstance(heads, int) or isinstance(heads, bool):
                raise self.error(f"heads {entry['heads']!r} is {heads!r}, not a number of heads")
            blockers.append(self._absent_parts(parts, norm))
            layers.append(LayerSpec(block=block, attention=attention, extract_probs=extract, num_heads=heads,
                                    norm_first=norm == "pre", call=call, gated_mlp=entry.get("gated_mlp", False),
                                    **parts))
        head = [self._linear("head", path=path) for path in entry.get("head", [])]
        head = [module for module in head if module is not None]
        for path, module in zip(entry.get("head", []), head):
            paths[id(module)] = expand(path, self.base)
        kind, index = self.readout()
        blocker = self._declared_blocker("cvpr2021") or next((b for b in blockers if b), None)
        if blocker is None and not head and kind == "token":
            blocker = "the entry declares no head (the Linear layers from the read-out token to the logits)"
        start = entry.get("lrp_start")
        token_start = None if start is None else functools.partial(quirks.LRP_STARTS[start], self.model)
        return ModelSpec(layers=layers, head=head, readout=kind, readout_index=index, lrp_blocker=blocker,
                         attnlrp_blocker=self._declared_blocker("attnlrp"), token_start=token_start,
                         pool=self._pool(paths), origin=self.family.label, paths=paths, nearby=self.nearby)

    def _pool(self, paths: dict[int, str]) -> LayerSpec | None:
        """The attention-pooling head as a layer whose MultiheadAttention projects inside (the rules apply at it)."""
        pool = self.family.get("pool")
        if not pool:
            return None
        block = self.find("pool.module", pool["module"])
        path = expand(pool["module"], self.base)
        attention = self.find("pool.attention", pool["attention"], path)
        if not isinstance(attention, nn.MultiheadAttention):
            raise self.error(f"pool.attention {pool['attention']!r} is a {type(attention).__name__}; expected the "
                             "torch nn.MultiheadAttention of the pooling head", self.full_path(pool["attention"], path))
        fc1, fc2 = (self._linear(f"pool.{key}", path, path=pool[key]) for key in ("fc1", "fc2"))
        paths.update({id(block): path, **{id(module): self.full_path(pool[key], path)
                                          for key, module in (("attention", attention), ("fc1", fc1), ("fc2", fc2))}})
        return LayerSpec(block=block, attention=attention, extract_probs=_output(1, self._no_probs(path, 1)),
                         num_heads=attention.num_heads, out_proj=attention.out_proj, fc1=fc1, fc2=fc2, norm_first=True)

    def _absent_parts(self, parts: dict, norm: str | None) -> str | None:
        """Why LRP cannot pass a layer whose entry leaves out (or marks absent) a part the rules read."""
        conv1d = [key for key in LINEAR_PARTS if _is_conv1d(parts[key])]
        if conv1d:
            return f"{', '.join(conv1d)} are Conv1D layers (GPT-2), which the CVPR 2021 rules here do not read"
        absent = [key for key in ("out_proj", "fc1", "fc2") if parts[key] is None]
        if parts["qkv"] is None and None in (parts["query"], parts["key"], parts["value"]):
            absent.append("qkv (or query, key and value)")
        if norm is None:
            absent.append("norm")
        if not absent:
            return None
        return f"the entry declares no {', '.join(absent)} (or they are absent from this model), which the LRP rules read"

    def _declared_blocker(self, rule_set: str) -> str | None:
        for blocker in self.family.get("lrp_blockers", []):
            if rule_set not in blocker.get("rules", RULE_SETS):
                continue
            conditions = blocker.get("if_present")
            if not conditions or any(self._anywhere(path) for path in conditions):
                return blocker["reason"]
        return None

    def _anywhere(self, path: str) -> bool:
        """Whether ``path`` is present; in any layer when it holds a * (the layer's index, as in layer parts)."""
        indices = [layer_path.rsplit(".", 1)[-1] for layer_path, _, _ in self.layers()] if "*" in path else [None]
        return any(present(walk(self.model, expand(path, self.base, index))) for index in indices)

    def readout(self) -> tuple[str, int]:
        """("token", index), ("mean", 0) or ("mean-content", 0), read from a table when the entry gives one."""
        readout = self.family.get("readout", 0)
        if isinstance(readout, dict):
            value = self.value("readout.from", readout["from"])
            if value not in readout["values"]:
                raise self.error(f"readout: {readout['from']} is {value!r}, none of the values the entry explains "
                                 f"({', '.join(map(repr, readout['values']))})")
            readout = readout["values"][value]
        return ("token", readout) if isinstance(readout, int) else (readout, 0)

    # --- images ------------------------------------------------------------------------------------------
    def prefix_tokens(self) -> torch.Tensor:
        """The learned tokens before the patches, (1, P, D); (1, 0, D) when there are none."""
        tokens = []
        for path in self.family.get("prefix_tokens", []):
            token = self.find("prefix_tokens", path)
            if token is None:
                continue
            if not (torch.is_tensor(token) and token.dim() == 3 and token.shape[0] == 1):
                shape = tuple(token.shape) if torch.is_tensor(token) else type(token).__name__
                raise self.error(f"prefix token {path!r} is {shape}; expected a parameter shaped (1, count, dim)",
                                 expand(path, self.base))
            tokens.append(token)
        if not tokens:
            conv = self.patch_embedding()
            return conv.weight.new_zeros(1, 0, conv.out_channels)
        return torch.cat(tokens, dim=1)

    def patch_embedding(self) -> nn.Conv2d:
        path = self.family.entry["patch_embedding"]
        conv = self.find("patch_embedding", path)
        if not isinstance(conv, nn.Conv2d):
            raise self.error(f"patch_embedding {path!r} is a {type(conv).__name__}; expected the nn.Conv2d that reads "
                             "the pixels", expand(path, self.base))
        return conv

    def cross_spec(self) -> ModelSpec | None:
        """The cross-attention of a stream's layers as a stack of query / key / value projections (where the AttnLRP
        rules scale the gradient), or None when the stream declares none."""
        projections = (self.family.get("cross") or {}).get("projections")
        if not projections or set(projections) != {"query", "key", "value"}:
            return None
        layers = []
        for (path, block, call), (attention, extract, _, _) in zip(self.layers(), self.attention_modules("cross")):
            index = path.rsplit(".", 1)[-1]
            parts = {role: self._linear(f"cross.projections.{role}", path, index, projections[role])
                     for role in ("query", "key", "value")}
            layers.append(LayerSpec(block=block, attention=attention, extract_probs=extract, num_heads=0, out_proj=None,
                                    fc1=None, fc2=None, norm_first=self.family.get("norm") == "pre", call=call, **parts))
        return ModelSpec(layers=layers, origin=self.family.label, nearby=self.nearby)

    def query_key(self) -> list[tuple[nn.Module, dict[str, nn.Linear]]] | None:
        """Per layer, the attention capture module and its projections ({"fused": qkv} or {"query": ..., "key":
        ...}) for the neuron view; None when the entry declares neither."""
        found = []
        for (path, _, _), (attention, _, _, _) in zip(self.layers(), self.attention_modules()):
            index = path.rsplit(".", 1)[-1]
            qkv = self._linear("qkv", path, index)
            query, key = self._linear("query", path, index), self._linear("key", path, index)
            if qkv is None and (query is None or key is None):
                return None
            found.append((attention, {"fused": qkv} if qkv is not None else {"query": query, "key": key}))
        return found

    def forward(self, *args: Any, **inputs: Any) -> Any:
        """The model's output, with the entry's forward_kwargs."""
        return self.model(*args, **inputs, **dict(self.family.get("forward_kwargs", {})))

    def forward_pixels(self, pixels: torch.Tensor) -> Any:
        """Images through the model: as ``pixel_values=`` when its forward takes that name (Hugging Face), else
        as its first argument (timm, plain modules)."""
        if "pixel_values" in inspect.signature(self.model.forward).parameters:
            return self.forward(pixel_values=pixels)
        return self.forward(pixels)


def logits_of(output: Any) -> torch.Tensor:
    """A classifier's logits: its output's ``logits`` field, or the output itself (timm, plain modules)."""
    return getattr(output, "logits", output)
