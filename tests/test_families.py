"""New models by configuration alone: a classifier written only in this test, and stock architectures that no Python
adapter knows (MPNet, XLM, ModernBERT, BEiT, timm EVA), explained through YAML entries, every applicable method
equal to the per-sample references of tests/references.py; wrong entries refused with messages that name the entry,
what it expected and the paths that exist nearby.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

import references
import toolkit
from conftest import TEXTS, Case, attention_settings, global_hook_counts, hook_counts, in_dtype, make_pixels, randomised
from references import (DTYPE, REFERENCES, Layer, Structure, _in_dtype, _lin, assert_scores, other_target,
                        ref_partial_lrp, ref_transformer_attribution, reference_lrp)
from toolkit import ConfigError, Explainer, UnsupportedModelError
from toolkit.errors import FamilyError

ATTENTION_METHODS = ["raw_attention", "rollout", "attention_gradcam", "generic"]
LRP_METHODS = ["lrp", "partial_lrp", "transformer_attribution"]


# --- a classifier of its own: other names, a fused qkv, two prefix tokens -----------------------------------------------
class Mixer(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(dim, 3 * dim)
        self.weights_tap = nn.Identity()  # sees the attention probabilities
        self.dropout = nn.Dropout(0.0)    # never called: the forward uses none
        self.merge = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.to_qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        weights = self.weights_tap((q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(dim=-1))
        return self.merge((weights @ v).transpose(1, 2).reshape(b, n, d))


class Stage(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.pre_mix, self.mixer, self.pre_ff = nn.LayerNorm(dim), Mixer(dim, heads), nn.LayerNorm(dim)
        self.ff_in, self.ff_out = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.pre_mix(x))
        return x + self.ff_out(F.gelu(self.ff_in(self.pre_ff(x))))


class PatchClassifier(nn.Module):
    """Patches from a convolution, a summary token and a memory token before them, pre-norm stages, and a two-layer
    head read from the summary token. Its forward takes ``images``, not ``pixel_values``, and returns the logits."""

    def __init__(self, dim: int = 32, heads: int = 4, depth: int = 2, classes: int = 4, patch: int = 8, image: int = 32):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, patch, stride=patch)
        self.summary_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.memory_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.positions = nn.Parameter(torch.zeros(1, 2 + (image // patch) ** 2, dim))
        self.trunk = nn.ModuleList(Stage(dim, heads) for _ in range(depth))
        self.out_norm = nn.LayerNorm(dim)
        self.neck, self.logit_layer = nn.Linear(dim, dim), nn.Linear(dim, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stem(images).flatten(2).transpose(1, 2)
        prefix = torch.cat([self.summary_token, self.memory_token], dim=1).expand(len(x), -1, -1)
        x = torch.cat([prefix, x], dim=1) + self.positions
        for stage in self.trunk:
            x = stage(x)
        return self.logit_layer(torch.tanh(self.neck(self.out_norm(x)[:, 0])))


PATCH_CLASSIFIER = {
    "patch-classifier": {
        "description": "PatchClassifier, defined in tests/test_families.py",
        "match": {"class": "PatchClassifier"},
        "inputs": "image",
        "layers": "trunk.*",
        "heads": "mixer.heads",
        "probs": {"module": "mixer.weights_tap"},
        "qkv": "mixer.to_qkv",
        "out_proj": "mixer.merge",
        "fc1": "ff_in",
        "fc2": "ff_out",
        "norm": "pre",
        "prefix_tokens": ["summary_token", "memory_token"],
        "patch_embedding": "stem",
        "head": ["neck", "logit_layer"],
        "readout": 0,
    }
}


def make_patch_classifier() -> nn.Module:
    torch.manual_seed(20)
    return randomised(PatchClassifier(), 20)


def _patch_classifier_structure(model: nn.Module) -> Structure:
    layers = []
    for stage in model.trunk:
        d = stage.mixer.merge.in_features
        qkv = stage.mixer.to_qkv
        layers.append(Layer(_lin(qkv, slice(0, d)), _lin(qkv, slice(d, 2 * d)), _lin(qkv, slice(2 * d, 3 * d)),
                            _lin(stage.mixer.merge), _lin(stage.ff_in), _lin(stage.ff_out), F.gelu,
                            _in_dtype(stage.pre_mix), _in_dtype(stage.pre_ff), stage.mixer.heads, True))
    return Structure(layers, _in_dtype(model.out_norm), [(_lin(model.neck), torch.tanh), (_lin(model.logit_layer),
                                                                                         nn.Identity())])


references.STRUCTURES["patch-classifier"] = _patch_classifier_structure
references.EMBEDDINGS["patch-classifier"] = lambda model: (
    model.stem, torch.cat([model.summary_token, model.memory_token], dim=1)[0], model.positions[0])


def _patch_classifier_hooks(model: nn.Module):
    return list(model.trunk), [stage.mixer.weights_tap for stage in model.trunk]


# --- stock architectures that only a YAML entry describes ---------------------------------------------------------------
def _text_kwargs(tokenizer) -> dict:
    return dict(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=48, initializer_range=0.3, num_labels=3, max_position_embeddings=64, pad_token_id=0)


def make_mpnet(tokenizer) -> nn.Module:
    from transformers import MPNetConfig, MPNetForSequenceClassification

    torch.manual_seed(21)
    return MPNetForSequenceClassification(MPNetConfig(**_text_kwargs(tokenizer))).eval()


def make_xlm(tokenizer) -> nn.Module:
    from transformers import XLMConfig, XLMForSequenceClassification

    torch.manual_seed(22)
    config = XLMConfig(vocab_size=tokenizer.vocab_size, emb_dim=32, n_layers=2, n_heads=4, num_labels=3, init_std=0.3,
                       max_position_embeddings=64, pad_index=0)
    return XLMForSequenceClassification(config).eval()


def make_modernbert(tokenizer) -> nn.Module:
    from transformers import ModernBertConfig, ModernBertForSequenceClassification

    torch.manual_seed(23)
    config = ModernBertConfig(**_text_kwargs(tokenizer), bos_token_id=tokenizer.cls_token_id,
                              eos_token_id=tokenizer.sep_token_id, cls_token_id=tokenizer.cls_token_id,
                              sep_token_id=tokenizer.sep_token_id, classifier_pooling="mean")
    return ModernBertForSequenceClassification(config).eval()


def make_beit(mean_pooling: bool) -> nn.Module:
    """Relative position bias and layer scale, both random so that they matter; a random class token (a zero one,
    with no position embeddings, gives zero keys, where the z-rule on Q K^T loses the relevance the bias carried)."""
    from transformers import BeitConfig, BeitForImageClassification

    torch.manual_seed(24)
    config = BeitConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, initializer_range=0.3, num_labels=4, use_mean_pooling=mean_pooling,
                        use_relative_position_bias=True, layer_scale_init_value=0.5)
    model = BeitForImageClassification(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lambda" in name or "relative_position_bias_table" in name or "cls_token" in name:
                param.copy_(0.5 + 0.3 * torch.randn(param.shape))
    return model.eval()


def make_eva(rotary: bool = False) -> nn.Module:
    """timm EVA: fused qkv without bias, layer scale (gamma parameters); with ``rotary``, EVA-02's rotary embeddings."""
    from timm.models.eva import Eva

    torch.manual_seed(25)
    model = Eva(img_size=32, patch_size=8, num_classes=5, global_pool="token", embed_dim=32, depth=2, num_heads=4,
                mlp_ratio=1.5, qkv_bias=False, init_values=0.5, use_rot_pos_emb=rotary, ref_feat_shape=(4, 4))
    return randomised(model, 25)


def _eva_hooks(model: nn.Module):
    return list(model.blocks), [block.attn.attn_drop for block in model.blocks]


def _image_processor():
    from transformers import ViTImageProcessor

    return ViTImageProcessor(size={"height": 32, "width": 32})


# case name -> reason the LRP-based methods are refused (None: every method applies)
CASES = {"patch_classifier": None, "mpnet": None, "xlm": None, "beit": None, "eva": None,
         "modernbert": "rotary position embeddings", "beit_mean": "mean pooling", "eva_rotary": "rotary"}
LRP_CASES = [name for name, refusal in CASES.items() if refusal is None]


def build(tokenizer, family_file, dtype: torch.dtype) -> dict[str, Case]:
    pixels = make_pixels(3, seed=26)
    cases = {
        "patch_classifier": Case("patch_classifier", "patch-classifier", make_patch_classifier, None, pixels, "image",
                                 prefix=2, hooks=_patch_classifier_hooks, family_file=family_file),
        "mpnet": Case("mpnet", "mpnet", lambda: make_mpnet(tokenizer), tokenizer, TEXTS[:3], "text"),
        "xlm": Case("xlm", "xlm", lambda: make_xlm(tokenizer), tokenizer, TEXTS[:3], "text"),
        "modernbert": Case("modernbert", "modernbert", lambda: make_modernbert(tokenizer), tokenizer, TEXTS[:3], "text",
                           readout="mean"),
        "beit": Case("beit", "hf-beit", lambda: make_beit(False), _image_processor(), pixels, "image"),
        "beit_mean": Case("beit_mean", "hf-beit", lambda: make_beit(True), _image_processor(), pixels, "image",
                          readout="mean-content"),
        "eva": Case("eva", "timm-eva", make_eva, None, pixels, "image", hooks=_eva_hooks),
        "eva_rotary": Case("eva_rotary", "timm-eva", lambda: make_eva(rotary=True), None, pixels, "image",
                           hooks=_eva_hooks),
    }
    return in_dtype(cases, dtype)


@pytest.fixture(scope="module")
def family_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("families") / "patch_classifier.yaml"
    path.write_text(yaml.safe_dump(PATCH_CLASSIFIER))
    return path


@pytest.fixture(scope="module")
def new_cases(wordpiece, family_file) -> dict[str, Case]:
    return build(wordpiece, family_file, torch.float32)


@pytest.fixture(scope="module")
def new_cases_float64(wordpiece, family_file) -> dict[str, Case]:
    """float64 copies for the LRP-based methods (see references.DTYPE)."""
    return build(wordpiece, family_file, torch.float64)


def assert_no_hooks(model: nn.Module) -> None:
    assert not {name: counts for name, counts in hook_counts(model).items() if any(counts)}
    assert global_hook_counts() == (0, 0, 0, 0)


def explain_all(case: Case, method: str, targets) -> list:
    inputs = case.inputs if case.modality == "image" else list(case.inputs)
    with warnings.catch_warnings():  # zero maps for a target are part of what is compared
        warnings.simplefilter("ignore")
        return case.explainer().explain(inputs, method=method, target=targets)


def mixed_targets(case: Case) -> list:
    """The predicted class for even inputs, another one for odd inputs."""
    return [None if i % 2 == 0 else other_target(case.run(i)) for i in range(len(case))]


# --- every applicable method against the references ---------------------------------------------------------------------
@pytest.mark.parametrize("method", ATTENTION_METHODS)
@pytest.mark.parametrize("name", list(CASES))
def test_attention_methods_match_references(new_cases, name, method):
    case = new_cases[name]
    targets = mixed_targets(case)
    settings = attention_settings(case.model)  # SDPA for BEiT and ModernBERT, fused for EVA: switched, then restored
    explanations = explain_all(case, method, targets)
    assert attention_settings(case.model) == settings
    assert_no_hooks(case.model)
    for i, exp in enumerate(explanations):
        p = case.run(i)
        assert exp.target == p.target(targets[i])
        assert exp.probability == pytest.approx(float(p.logits.detach().softmax(-1)[exp.target]), rel=1e-4)
        expected = REFERENCES[method](p, targets[i], 0)
        assert_scores(exp.scores, expected, f"{name}[{i}] {method}")
        if case.modality == "image":
            assert_scores(exp.heatmap.ravel(), expected[case.prefix:], f"{name}[{i}] {method} heatmap")


@pytest.mark.parametrize("name", LRP_CASES)
def test_lrp_methods_match_references(new_cases_float64, name):
    """lrp (tokens or pixels), partial_lrp and transformer_attribution against the rule-by-rule reference, which
    first checks that it reproduces the stock model's hidden states, attention maps and logits."""
    case = new_cases_float64[name]
    targets = mixed_targets(case)
    for i, exp in enumerate(explain_all(case, "lrp", targets)):
        ref = reference_lrp(case, i, targets[i])
        assert exp.target == ref.target
        assert float(ref.first.sum()) == pytest.approx(1.0, abs=1e-5), "the reference conserves relevance"
        if case.modality == "text":
            assert_scores(exp.scores, ref.first.sum(dim=-1), f"{name}[{i}] lrp tokens", rtol=1e-6, atol_rel=1e-6)
        else:
            assert_scores(exp.heatmap, ref.pixels, f"{name}[{i}] lrp pixels", rtol=1e-6, atol_rel=1e-6)
            per_patch = ref.pixels.reshape(4, 8, 4, 8).sum(dim=(1, 3)).reshape(-1)
            assert_scores(exp.scores, torch.cat([torch.zeros(case.prefix, dtype=DTYPE), per_patch]),
                          f"{name}[{i}] lrp per-patch scores", rtol=1e-6, atol_rel=1e-6)
    for i, exp in enumerate(explain_all(case, "partial_lrp", targets)):
        assert_scores(exp.scores, ref_partial_lrp(case, i, targets[i]), f"{name}[{i}] partial_lrp",
                      rtol=1e-6, atol_rel=1e-6)
    for i, exp in enumerate(explain_all(case, "transformer_attribution", targets)):
        assert_scores(exp.scores, ref_transformer_attribution(case, i, targets[i], 0),
                      f"{name}[{i}] transformer_attribution", rtol=1e-6, atol_rel=1e-6)


@pytest.mark.parametrize("name", [name for name, refusal in CASES.items() if refusal])
def test_only_lrp_methods_are_refused_where_the_rules_cannot_pass(new_cases, name):
    case = new_cases[name]
    explainer = case.explainer()
    input_methods = ["attnlrp", "attnlrp_routed", "cp_lrp", "generic_attnlrp", "gradient_x_input",
                     "integrated_gradients"]  # no CVPR 2021 rule needed
    assert sorted(explainer.applicable_methods()) == sorted(ATTENTION_METHODS + input_methods)
    for method in LRP_METHODS:
        with pytest.raises(UnsupportedModelError, match=f"{CASES[name]}.*Methods that apply: "):
            explainer.explain(case.item(0), method=method)
    assert explainer.default_method == "generic_attnlrp"  # where the AttnLRP rules pass


def test_the_patch_classifier_reads_pictures_through_its_processor(new_cases, family_file):
    """A picture goes through the processor given; the explanation names the two prefix tokens and maps the patches."""
    import numpy as np
    from PIL import Image

    case = new_cases["patch_classifier"]
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 40, 3), dtype=np.uint8))
    exp = Explainer(case.model, _image_processor(), family=family_file).explain(picture, method="generic")
    assert exp.tokens[:3] == ["[CLS]", "[prefix1]", "patch(0,0)"] and exp.heatmap.shape == (4, 4)
    assert exp.image.shape == (32, 32, 3)


# --- a family as a file, a dict, a registration, a folder --------------------------------------------------------------
def test_a_dict_and_a_file_declare_the_same_family(new_cases, family_file):
    case = new_cases["patch_classifier"]
    from_file = Explainer(case.model, family=family_file).explain(case.inputs, method="transformer_attribution")
    entry = PATCH_CLASSIFIER["patch-classifier"]
    from_dict = Explainer(case.model, family=entry).explain(case.inputs, method="transformer_attribution")
    for a, b in zip(from_file, from_dict):
        assert_scores(b.scores, a.scores, "dict vs file")
    assert Explainer(case.model, family=entry).adapter.family == "custom"   # an entry alone: a default name
    assert Explainer(case.model, family=family_file).adapter.family == "patch-classifier"


def test_registered_family_explains_every_matching_model(new_cases, monkeypatch):
    from toolkit import families

    monkeypatch.setattr(families, "_registered", [])
    model = new_cases["patch_classifier"].model
    with pytest.raises(UnsupportedModelError, match="No adapter for PatchClassifier"):
        Explainer(model)
    families.register_family(PATCH_CLASSIFIER)
    assert Explainer(model).adapter.family == "patch-classifier"
    assert any(line.startswith("patch-classifier: PatchClassifier") for line in toolkit.supported_families())
    with pytest.raises(FamilyError, match="needs a match"):
        families.register_family({k: v for k, v in PATCH_CLASSIFIER["patch-classifier"].items() if k != "match"})


DATA2VEC_TEXT = """
data2vec-text:
  description: Data2Vec text classifiers (a BERT layout the toolkit has no entry for)
  match: {model_type: data2vec-text}
  inputs: text
  layers: "{base}.encoder.layer[*]"
  heads: config.num_attention_heads
  probs: {module: attention.self, output: 1}
  query: attention.self.query
  key: attention.self.key
  value: attention.self.value
  out_proj: attention.output.dense
  fc1: intermediate.dense
  fc2: output.dense
  norm: post
  head: [classifier.dense, classifier.out_proj]
  readout: 0
"""


def test_from_pretrained_takes_a_family_file(wordpiece, tmp_path):
    """A saved Data2Vec text classifier, which no built-in family covers, explained by naming a YAML file; the scores
    are those of its RoBERTa twin (the same weights under the built-in roberta family)."""
    from transformers import (Data2VecTextConfig, Data2VecTextForSequenceClassification, RobertaConfig,
                              RobertaForSequenceClassification)

    torch.manual_seed(27)
    model = Data2VecTextForSequenceClassification(Data2VecTextConfig(**_text_kwargs(wordpiece), type_vocab_size=1))
    model.save_pretrained(tmp_path / "model")
    wordpiece.save_pretrained(tmp_path / "model")
    (tmp_path / "data2vec_text.yaml").write_text(DATA2VEC_TEXT)
    with pytest.raises(UnsupportedModelError, match="No adapter for Data2VecTextForSequenceClassification"):
        Explainer(model, wordpiece)
    loaded = Explainer.from_pretrained(str(tmp_path / "model"), family=str(tmp_path / "data2vec_text.yaml"))
    assert loaded.adapter.family == "data2vec-text"
    twin = RobertaForSequenceClassification(RobertaConfig(**_text_kwargs(wordpiece), type_vocab_size=1)).eval()
    twin.load_state_dict({key.replace("data2vec_text.", "roberta."): value for key, value in model.state_dict().items()})
    for method in ("transformer_attribution", "lrp", "rollout"):
        for a, b in zip(loaded.explain(TEXTS, method=method), Explainer(twin, wordpiece).explain(TEXTS, method=method)):
            assert_scores(a.scores, b.scores, f"data2vec-text vs roberta {method}")
    from toolkit.cli import main

    out = tmp_path / "cli"
    assert main(["explain", "--model", str(tmp_path / "model"), "--family", str(tmp_path / "data2vec_text.yaml"),
                 "--text", TEXTS[0], "--method", "lrp", "--out", str(out)]) == 0
    saved = sorted(out.glob("*.npz"))
    assert saved and np.allclose(np.load(saved[0])["scores"], loaded.explain(TEXTS[0], method="lrp").scores, atol=1e-6)
    assert main(["explain", "--model", "vit", "--family", str(tmp_path / "data2vec_text.yaml")]) == 2


# --- wrong entries -----------------------------------------------------------------------------------------------------------
def _with(**changes) -> dict:
    entry = dict(PATCH_CLASSIFIER["patch-classifier"], name="my-patches")
    entry.update(changes)
    return entry


def test_a_pattern_that_matches_nothing_names_the_entry_and_the_paths_nearby(new_cases):
    model = new_cases["patch_classifier"].model
    with pytest.raises(FamilyError) as info:
        Explainer(model, family=_with(layers="trunks.*"))
    message = str(info.value)
    assert "Family 'my-patches' (a family dict): layers 'trunks.*' matches no module of PatchClassifier" in message
    assert "Paths nearby: trunk" in message
    with pytest.raises(FamilyError, match=r"fc1 'ff_inn' matches nothing in PatchClassifier \(looked for "
                                          r"'trunk.0.ff_inn'\)\. Paths nearby: trunk.0.ff_in"):
        Explainer(model, family=_with(fc1="ff_inn"))
    with pytest.raises(FamilyError, match="prefix_tokens 'class_token' matches nothing.*summary_token"):
        Explainer(model, family=_with(prefix_tokens=["class_token", "memory_token"]))
    with pytest.raises(FamilyError, match="fc1 'pre_ff' is a LayerNorm; the LRP rules need an nn.Linear"):
        Explainer(model, family=_with(fc1="pre_ff"))


def test_a_head_that_does_not_give_the_logits_is_named(new_cases):
    case = new_cases["patch_classifier"]
    explainer = Explainer(case.model, family=_with(head=["neck"]))
    explainer.explain(case.inputs, method="generic")  # the head is only read by the LRP-based methods
    with pytest.raises(FamilyError) as info:
        explainer.explain(case.inputs, method="lrp")
    message = str(info.value)
    assert ("the head's last module 'neck' gives a (3, 32) tensor that is not the model's logits (3, 4); `head` must "
            "list the Linear layers from the read-out token to the logits") in message
    assert "Paths nearby:" in message and "logit_layer" in message


def test_a_capture_point_that_is_never_called_is_named(new_cases):
    case = new_cases["patch_classifier"]
    explainer = Explainer(case.model, family=_with(probs={"module": "mixer.dropout"}))
    with pytest.raises(FamilyError) as info:
        explainer.explain(case.inputs, method="rollout")
    message = str(info.value)
    assert ("layer 0's attention probabilities are captured at 'trunk.0.mixer.dropout', which the forward pass never "
            "called") in message
    assert "trunk.0.mixer.weights_tap" in message
    assert_no_hooks(case.model)
    with pytest.raises(FamilyError, match=r"capture point 'trunk.0.mixer.merge' gave a tensor shaped \(3, 18, 32\); "
                                          r"expected attention probabilities \(batch, heads, 18, 18\)"):
        Explainer(case.model, family=_with(probs={"module": "mixer.merge"})).explain(case.inputs, method="rollout")


def test_malformed_entries_are_config_errors(new_cases, tmp_path):
    model = new_cases["patch_classifier"].model
    with pytest.raises(ConfigError, match="unknown key 'fc_1'; did you mean 'fc1'"):
        Explainer(model, family=_with(fc_1="ff_in"))
    with pytest.raises(ConfigError, match="missing probs"):
        Explainer(model, family={k: v for k, v in _with().items() if k != "probs"})
    with pytest.raises(ConfigError, match="readout 'cls' is none of"):
        Explainer(model, family=_with(readout="cls"))
    with pytest.raises(ConfigError, match="No family file at"):
        Explainer(model, family=str(tmp_path / "missing.yaml"))
    (tmp_path / "broken.yaml").write_text("layers: [trunk.*\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        Explainer(model, family=tmp_path / "broken.yaml")
    with pytest.raises(FamilyError, match=r"out_proj 'mixer' is a Mixer; the LRP rules need an nn.Linear there\. "
                                          r"Paths nearby: .*trunk.0.mixer.merge"):
        Explainer(model, family=_with(out_proj="mixer"))
    with pytest.raises(FamilyError, match=r"'trunk.0.mixer' returned Tensor, with no attention probabilities at "
                                          r"output\[1\].*forward_kwargs: \{output_attentions: true\}"):
        Explainer(model, family=_with(probs={"module": "mixer", "output": 1})).explain(torch.zeros(1, 3, 32, 32))
    assert_no_hooks(model)  # the error was raised inside a forward hook


# --- the attention views read the same declarations -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["beit", "eva", "patch_classifier"])
def test_image_view_captures_attention_where_the_family_declares_it(new_cases, name, monkeypatch):
    from toolkit import families
    from toolkit.views.data import image_attention

    monkeypatch.setattr(families, "_registered", [])
    families.register_family(PATCH_CLASSIFIER)  # the views find a family by its match
    case = new_cases[name]
    attention = image_attention(case.model, case.inputs[:1])
    assert attention.prefix_tokens == case.prefix and attention.grid == (4, 4)
    expected = torch.stack(case.run(0).attentions).numpy()
    assert attention.weights.shape == expected.shape
    torch.testing.assert_close(torch.from_numpy(attention.weights), torch.from_numpy(expected), rtol=1e-5, atol=1e-6)


def test_neuron_view_of_a_layout_with_a_list_per_part(new_cases, wordpiece):
    """XLM keeps its attentions, norms and MLPs in separate lists: the neuron view finds its query and key
    projections through the declaration, and they reproduce its attention (the view checks)."""
    from toolkit.views import neuron_view

    xlm = new_cases["xlm"].model.transformer
    payload = neuron_view(xlm, wordpiece, TEXTS[0])._payload
    (stack,) = payload["stacks"]
    assert stack["layers"] == 2 and stack["heads"] == 4


def test_the_pinned_ranges_hold_the_tested_libraries():
    """pyproject.toml pins transformers, timm and open_clip to the major versions the declarations are tested with."""
    import tomllib
    from importlib.metadata import version
    from pathlib import Path

    from packaging.requirements import Requirement

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    pins = {Requirement(line).name: Requirement(line).specifier for line in project["dependencies"]}
    for name in ("transformers", "timm", "open_clip_torch"):
        assert pins[name], f"{name} is not pinned"
        assert pins[name].contains(version(name)), f"{name} {version(name)} is outside {pins[name]}"
        major = int(version(name).split(".")[0])
        assert not pins[name].contains(f"{major + 1}.0"), f"{name}: the next major version is not excluded"
