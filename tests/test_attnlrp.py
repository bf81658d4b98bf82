"""AttnLRP and CP-LRP (modified backward passes of toolkit/core/lrp_rules.py) and the captum baselines
(integrated_gradients, gradient_x_input): against explicit per-sample references, conservation on every family the
classifier engine and the language-model adapter serve, batched equals per-sample, hooks undone after success and
after errors.

Conservation is tested on float64 copies of the tiny models with every bias term zeroed (linear, norm and conv biases,
position embeddings and prefix tokens of images, relative position biases): the rules then pass every relevance on
except where the papers say they do not. CP-LRP has no such place, so the input relevance sums to the target's logit.
AttnLRP's softmax rule is not conservative (softmax is shift invariant): each softmax keeps
1/2 (sum s * dL/ds - sum x * dL/dx) (the A V rule sends it half the relevance), which the test measures by tapping the
softmax calls; relevance + those terms = the logit. Tolerance: 1e-5 of the summed |relevance| (the explanation's
scores are float32; the measured error is at most ~1e-7 of it, up to ~1e-6 for the causal LMs, whose attention
softmax runs in float32).
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
import torch.nn as nn

from conftest import (CASE_NAMES, TEXTS, attention_settings, build_cases, global_hook_counts, hook_counts,
                      make_hf_deit_distilled, make_pixels, make_timm_deit_distilled, make_timm_vit_registers,
                      make_zero_shot)
from references import assert_scores, other_target, reference_attnlrp
from test_causal_lm import MAKERS as LM_MAKERS, make as make_lm, word_tokenizer
from test_families import make_beit, make_eva, make_modernbert, make_mpnet, make_xlm
from toolkit import Explainer, families
from toolkit.core.lrp_rules import ATTNLRP, CP_LRP
from toolkit.core.spec import LayerSpec, ModelSpec
from toolkit.errors import FamilyError, InputError, UnsupportedModelError

RULE_METHODS = {"attnlrp": 0.5, "cp_lrp": 1.0}  # method -> share of A V's relevance that goes to V
NEW_METHODS = ["attnlrp", "cp_lrp", "gradient_x_input", "integrated_gradients"]


def _image_processor():
    from transformers import ViTImageProcessor

    return ViTImageProcessor(size={"height": 32, "width": 32})


def subjects(tokenizer) -> dict:
    """name -> (model factory, processor, inputs): every classifier family declared today."""
    found = {name: (case.make, case.processor, list(case.inputs) if case.modality == "text" else case.inputs)
             for name, case in build_cases(tokenizer).items() if name != "bert_pair"}
    found.update({
        "mpnet": (lambda: make_mpnet(tokenizer), tokenizer, TEXTS[:3]),
        "xlm": (lambda: make_xlm(tokenizer), tokenizer, TEXTS[:3]),
        "modernbert": (lambda: make_modernbert(tokenizer), tokenizer, TEXTS[:3]),
        "zero_shot": (lambda: make_zero_shot(tokenizer), tokenizer, TEXTS[:3]),
        "hf_deit_distilled": (make_hf_deit_distilled, _image_processor(), make_pixels(2, seed=13)),
        "timm_deit_distilled": (make_timm_deit_distilled, None, make_pixels(2, seed=14)),
        "timm_vit_registers": (make_timm_vit_registers, None, make_pixels(2, seed=15)),
        "beit": (lambda: make_beit(False), _image_processor(), make_pixels(2, seed=16)),
        "beit_mean": (lambda: make_beit(True), _image_processor(), make_pixels(2, seed=17)),
        "eva": (make_eva, None, make_pixels(2, seed=18)),
        "eva_rotary": (lambda: make_eva(rotary=True), None, make_pixels(2, seed=19)),
    })
    return found


SUBJECTS = ["bert", "distilbert", "roberta", "electra", "albert", "mpnet", "xlm", "modernbert", "zero_shot", "hf_vit",
            "timm_vit", "hf_deit_distilled", "timm_deit_distilled", "timm_vit_registers", "beit", "beit_mean", "eva",
            "eva_rotary"]


def without_biases(model: nn.Module) -> nn.Module:
    """Every additive term that is not a function of the input set to zero: biases (also relative position biases),
    position embeddings, the learned tokens placed before an image's patches."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if ("bias" in name or "pos_embed" in name or "position_embeddings" in name
                    or leaf in ("cls_token", "dist_token", "reg_token", "distillation_token")):
                param.zero_()
    return model


@contextlib.contextmanager
def softmax_taps():
    """Every softmax called on a tensor in the autograd graph: its input x, output s, and their gradients."""
    taps: list[dict] = []
    method = torch.Tensor.softmax  # torch.nn.functional.softmax calls it too

    def tapped(x, s):
        if torch.is_grad_enabled() and x.requires_grad:
            tap = {"x": x.detach(), "s": s.detach()}
            x.register_hook(lambda g: tap.__setitem__("gx", g))
            s.register_hook(lambda g: tap.__setitem__("gs", g))
            taps.append(tap)
        return s

    torch.Tensor.softmax = lambda x, *args, **kwargs: tapped(x, method(x, *args, **kwargs))
    try:
        yield taps
    finally:
        torch.Tensor.softmax = method


def softmax_deficit(taps: list[dict], batch: int | None = None) -> torch.Tensor:
    """Per sample: the relevance AttnLRP's softmax rule keeps, 1/2 (sum s dL/ds - sum x dL/dx), over every layer.
    ``batch``: the number of samples, for softmax inputs whose first dimension is not the batch's (torch's
    MultiheadAttention computes its softmax over (batch * heads, queries, keys))."""
    total = 0
    for tap in taps:
        x, gx = tap["x"].double(), tap["gx"].double()
        # masked scores (-inf where XLM casts its float64 minimum to float32) get no gradient and keep nothing
        kept = tap["s"].double() * tap["gs"].double() - torch.where(gx == 0, torch.zeros_like(x), x * gx)
        total = total + 0.5 * (kept.flatten(1) if batch is None else kept.reshape(batch, -1)).sum(dim=1)
    return total


def relevance_total(explanation) -> tuple[float, float]:
    """(sum, sum of magnitudes) of the relevance: per token, or per pixel for images (its per-patch sums are the
    patches' scores, the prefix tokens' are zero)."""
    values = np.asarray(explanation.scores, dtype=np.float64)
    if explanation.heatmap is not None and explanation.heatmap.size > values.size:
        assert values.sum() == pytest.approx(float(np.asarray(explanation.heatmap, np.float64).sum()), abs=1e-4)
        values = np.asarray(explanation.heatmap, dtype=np.float64)
    return float(values.sum()), float(np.abs(values).sum())


# --- 1. the rules against explicit per-sample references -------------------------------------------------------------
@pytest.mark.parametrize("target_mode", ["predicted", "other"])
@pytest.mark.parametrize("method", list(RULE_METHODS))
@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_rules_match_the_explicit_reference(cases_float64, case_name, method, target_mode):
    """The hook-based modified gradient equals relevance propagated with the papers' equations, layer by layer
    (tests/references.py: reference_attnlrp), per token for text and per pixel for images."""
    case = cases_float64[case_name]
    targets = [None if target_mode == "predicted" else other_target(case.run(i)) for i in range(len(case))]
    explanations = case.explainer().explain(case.inputs if case.modality == "image" else list(case.inputs),
                                            method=method, target=targets)
    for i, exp in enumerate(explanations):
        ref = reference_attnlrp(case, i, targets[i], RULE_METHODS[method])
        assert exp.target == ref.target
        if case.modality == "text":
            assert_scores(exp.scores, ref.tokens, f"{case_name}[{i}] {method}", rtol=1e-5, atol_rel=1e-5)
        else:
            assert exp.heatmap.shape == (32, 32)
            assert_scores(exp.heatmap, ref.pixels, f"{case_name}[{i}] {method} pixels", rtol=1e-5, atol_rel=1e-5)
            per_patch = ref.pixels.reshape(4, 8, 4, 8).sum(dim=(1, 3)).reshape(-1)
            assert_scores(exp.scores[1:], per_patch, f"{case_name}[{i}] {method} per-patch scores", rtol=1e-5,
                          atol_rel=1e-5)


def test_attnlrp_and_cp_lrp_differ(cases_float64):
    """The attention rules matter: relevance through Q and K (AttnLRP) changes the map."""
    case = cases_float64["bert"]
    a, c = (case.explainer().explain(case.item(0), method=m).scores for m in RULE_METHODS)
    assert np.abs(a - c).max() > 0.05 * np.abs(c).max()


# --- 2. conservation on every family ---------------------------------------------------------------------------------
@pytest.mark.parametrize("method", list(RULE_METHODS))
@pytest.mark.parametrize("name", SUBJECTS)
def test_relevance_sums_to_the_logit(wordpiece, name, method):
    make, processor, inputs = subjects(wordpiece)[name]
    explainer = Explainer(without_biases(make().double()), processor)
    inputs = inputs.double() if torch.is_tensor(inputs) else inputs
    with softmax_taps() as taps:
        explanations = explainer.explain(inputs, method=method)
    assert len(taps) == len(explainer.adapter.spec.layers), "one softmax per layer"
    deficit = softmax_deficit(taps) if method == "attnlrp" else torch.zeros(len(explanations), dtype=torch.float64)
    with torch.no_grad():
        logits = explainer.adapter.logits(explainer.adapter.prepare(inputs)).double()
    for i, exp in enumerate(explanations):
        total, size = relevance_total(exp)
        logit = float(logits[i, exp.target])
        assert total + float(deficit[i]) == pytest.approx(logit, abs=1e-5 * max(size, 1.0)), f"{name}[{i}] {method}"
    if method == "attnlrp":
        assert float(deficit.abs().max()) > 1e-3, "the softmax terms are measured, not zero"


@pytest.mark.parametrize("method", list(RULE_METHODS))
@pytest.mark.parametrize("name", list(LM_MAKERS))
def test_language_model_relevance_sums_to_each_steps_logit(name, method):
    """Every step of a continuation: relevance over the tokens before it (+ the softmax terms) = its logit."""
    tokenizer = word_tokenizer()
    model = without_biases(make_lm(name).double())
    explainer = Explainer(model, tokenizer)
    prompt, continuation = "the big red dog ran", "to the park"
    with softmax_taps() as taps:
        explanation = explainer.explain(prompt, method=method, continuation=continuation)
    deficit = softmax_deficit(taps) if method == "attnlrp" else torch.zeros(len(explanation.steps))
    ids = tokenizer(prompt)["input_ids"] + [step.token_id for step in explanation.steps]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    for t, step in enumerate(explanation.steps):
        row = len(ids) - len(explanation.steps) + t - 1
        scores = np.asarray(step.text_scores, np.float64)
        assert scores.sum() + float(deficit[t]) == pytest.approx(float(logits[row, step.token_id]),
                                                                 abs=1e-5 * max(np.abs(scores).sum(), 1.0)), (name, t)


# --- 3. batched equals per-sample --------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", NEW_METHODS)
@pytest.mark.parametrize("case_name", ["bert", "bert_pair", "albert", "hf_vit", "timm_vit"])
def test_batch_equals_one_at_a_time(cases, case_name, method):
    case = cases[case_name]
    explainer = case.explainer()
    targets = [other_target(case.run(i)) if i % 2 else None for i in range(len(case))]
    batched = explainer.explain(case.inputs if case.modality == "image" else list(case.inputs), method=method,
                                target=targets)
    for i in range(len(case)):
        alone = explainer.explain(case.item(i), method=method, target=targets[i])
        assert alone.target == batched[i].target
        assert_scores(batched[i].scores, alone.scores, f"{case_name}[{i}] {method}: batch vs alone", atol_rel=1e-5)
        if alone.heatmap is not None:
            assert_scores(batched[i].heatmap, alone.heatmap, f"{case_name}[{i}] {method}: heatmap", atol_rel=1e-5)


@pytest.mark.parametrize("method", NEW_METHODS)
def test_language_model_batch_equals_one_at_a_time(method):
    tokenizer = word_tokenizer()
    explainer = Explainer(make_lm("llama"), tokenizer)
    prompts, continuations = ["the cat sat on", "a dog ran", "the big red dog ran to the"], ["the mat", "to", "park"]
    batched = explainer.explain(prompts, method=method, continuation=continuations)
    for prompt, continuation, together in zip(prompts, continuations, batched):
        alone = explainer.explain(prompt, method=method, continuation=continuation)
        for a, b in zip(together.steps, alone.steps):
            assert_scores(a.text_scores, b.text_scores, f"{prompt!r} {method} step {a.token!r}", atol_rel=1e-5)


# --- 4. hooks and patches undone --------------------------------------------------------------------------------------
def _assert_clean(model: nn.Module, settings) -> None:
    dirty = {name: counts for name, counts in hook_counts(model).items() if any(counts)}
    assert not dirty, f"hooks left on modules: {dirty}"
    assert global_hook_counts() == (0, 0, 0, 0)
    assert attention_settings(model) == settings


def _outputs(case) -> torch.Tensor:
    with torch.no_grad():
        if case.modality == "image":
            out = case.model(pixel_values=case.inputs) if case.hooks is None else case.model(case.inputs)
        else:
            out = case.model(**case.encode(0))
    return getattr(out, "logits", out)


@pytest.mark.parametrize("case_name", ["bert", "albert", "hf_vit", "timm_vit"])
def test_model_untouched_after_explaining(fresh_cases, case_name):
    case = fresh_cases[case_name]
    settings, before = attention_settings(case.model), _outputs(case)
    explainer = case.explainer()
    for method in NEW_METHODS:
        explainer.explain(case.item(0), method=method)
        _assert_clean(case.model, settings)
        assert torch.equal(_outputs(case), before), f"{method} changed the model's output"


@pytest.mark.parametrize("case_name", ["bert", "timm_vit"])
def test_rules_leave_forward_values_bit_identical(fresh_cases, case_name):
    """Inside the rules (gradients on), the model computes exactly what it computes without them."""
    case = fresh_cases[case_name]
    explainer = case.explainer()
    batch = explainer.adapter.prepare(case.inputs if case.modality == "image" else list(case.inputs))
    with torch.no_grad():
        plain = explainer.adapter.logits(batch)
    with torch.enable_grad(), ATTNLRP.applied(case.model, explainer.adapter.spec):
        ruled = explainer.adapter.logits(batch)
    assert ruled.requires_grad and torch.equal(ruled.detach(), plain)


@pytest.mark.parametrize("case_name", ["bert", "albert", "hf_vit", "timm_vit"])
def test_hooks_undone_when_forward_or_backward_raises(fresh_cases, case_name, monkeypatch):
    case = fresh_cases[case_name]
    settings = attention_settings(case.model)
    explainer = case.explainer()
    block = explainer.adapter.spec.layers[-1].block
    original = block.forward

    def failing(*args, **kwargs):
        raise RuntimeError("boom in forward")

    for method in NEW_METHODS:
        monkeypatch.setattr(block, "forward", failing)
        with pytest.raises(RuntimeError, match="boom in forward"):
            explainer.explain(case.item(0), method=method)
        monkeypatch.setattr(block, "forward", original)
        _assert_clean(case.model, settings)

    import toolkit.core.engine as passes

    def backward_fails(*args, **kwargs):
        raise RuntimeError("boom in backward")

    monkeypatch.setattr(passes.torch.autograd, "grad", backward_fails)
    for method in RULE_METHODS:
        with pytest.raises(RuntimeError, match="boom in backward"):
            explainer.explain(case.item(0), method=method)
        _assert_clean(case.model, settings)
    monkeypatch.undo()
    explainer.explain(case.item(0), method="attnlrp")  # and it still works
    _assert_clean(case.model, settings)


def test_rerun_hook_undone_when_a_rerun_raises(fresh_cases, monkeypatch):
    case = fresh_cases["bert"]
    settings = attention_settings(case.model)
    explainer = case.explainer()
    calls = {"n": 0}
    original = explainer.adapter.logits

    def second_call_fails(batch):
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("boom in rerun")
        return original(batch)

    monkeypatch.setattr(explainer.adapter, "logits", second_call_fails)
    with pytest.raises(RuntimeError, match="boom in rerun"):
        explainer.explain(case.item(0), method="integrated_gradients")
    _assert_clean(case.model, settings)


# --- 4b. the attention rules where projections are fused or hidden ------------------------------------------------------
class WrittenAttention(nn.Module):
    """torch's MultiheadAttention written out with the same weights: queries from x, keys and values from y, through
    separate query, key and value Linear layers or, as GPT-2's cross-attention, a query Linear and one [key | value]
    Linear. Returns (output, attention weights (B, H, N, M))."""

    def __init__(self, mha: nn.MultiheadAttention, fused_key_value: bool):
        super().__init__()
        self.heads, width = mha.num_heads, mha.embed_dim
        weights, biases = mha.in_proj_weight.detach(), mha.in_proj_bias.detach()

        def linear(rows: slice) -> nn.Linear:
            layer = nn.Linear(width, rows.stop - rows.start).to(weights.dtype)
            layer.weight.data, layer.bias.data = weights[rows].clone(), biases[rows].clone()
            return layer

        self.query = linear(slice(0, width))
        self.key_value = linear(slice(width, 3 * width)) if fused_key_value else None
        self.key = self.key_value or linear(slice(width, 2 * width))
        self.value = self.key_value or linear(slice(2 * width, 3 * width))
        self.out = linear(slice(0, width))
        self.out.weight.data, self.out.bias.data = mha.out_proj.weight.detach().clone(), mha.out_proj.bias.detach().clone()

    def forward(self, x, y):
        def heads(t):
            return t.reshape(*t.shape[:2], self.heads, -1).transpose(1, 2)

        k, v = self.key_value(y).chunk(2, dim=-1) if self.key_value is not None else (self.key(y), self.value(y))
        q, k, v = heads(self.query(x)), heads(k), heads(v)
        probs = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(dim=-1)
        return self.out((probs @ v).transpose(1, 2).flatten(2)), probs


def _spec(attention: nn.Module, **projections) -> ModelSpec:
    return ModelSpec([LayerSpec(block=attention, attention=attention, extract_probs=lambda output: output[1],
                                num_heads=4, out_proj=None, fc1=None, fc2=None, norm_first=True, **projections)])


@pytest.mark.parametrize("rules", [ATTNLRP, CP_LRP], ids=lambda rules: rules.name)
@pytest.mark.parametrize("fused_key_value", [False, True])
@pytest.mark.parametrize("crossing", [False, True])
def test_rules_inside_multihead_attention_and_on_fused_key_value_equal_separate_projections(rules, fused_key_value,
                                                                                        crossing):
    """torch's MultiheadAttention (open_clip), with no module at its projections' outputs, and a [key | value]
    projection (GPT-2's cross-attention) get the gradient the rules give at separate query, key and value Linear
    layers with the same weights: at the inputs and at the attention weights (which generic_attnlrp reads); the
    MultiheadAttention's forward values are unchanged to the bit and its hooks removed afterwards."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=True).double()
    with torch.no_grad():
        for parameter in mha.parameters():
            parameter.normal_(0, 0.5)
    written = WrittenAttention(mha, fused_key_value)
    x, weight = torch.randn(2, 5, 16, dtype=torch.float64), torch.randn(2, 5, 16, dtype=torch.float64)
    y = torch.randn(2, 7, 16, dtype=torch.float64) if crossing else x

    def gradients(module, spec, call):
        inputs = [x.clone().requires_grad_(), y.clone().requires_grad_()] if crossing else [x.clone().requires_grad_()]
        with rules.applied(module, spec):
            out, probs = call(inputs[0], inputs[-1])
        base = probs if probs._base is None else probs._base
        return out, torch.autograd.grad((out * weight).sum(), [*inputs, base])

    def multihead(q, kv):
        return mha(q, kv, kv, need_weights=True, average_attn_weights=False)

    parts = dict(query=written.query, key=written.key, value=written.value)
    expected_out, expected = gradients(written, _spec(written, **parts), written)
    out, got = gradients(mha, _spec(mha), multihead)
    with torch.enable_grad():
        plain, _ = multihead(x, y)
    assert torch.equal(out.detach(), plain.detach())
    torch.testing.assert_close(out, expected_out, rtol=1e-12, atol=1e-12)
    for a, b in zip(got[:-1], expected[:-1]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got[-1], expected[-1].flatten(0, 1), rtol=1e-10, atol=1e-12)
    if rules is CP_LRP:  # the attention held constant: nothing reaches the queries
        assert not crossing or float(got[0].abs().max()) == 0.0
    assert not any((m._forward_hooks, m._forward_pre_hooks) != ({}, {}) for m in (mha, *written.modules()))


# --- 5. refusals, declared and checked before any work ---------------------------------------------------------------
def test_unknown_norm_is_refused_before_any_work(fresh_cases):
    case = fresh_cases["bert"]
    case.model.bert.encoder.layer[0].output.LayerNorm = nn.BatchNorm1d(32)
    explainer = case.explainer()
    ran = []
    case.model.register_forward_pre_hook(lambda *args: ran.append(True))
    for method in RULE_METHODS:
        with pytest.raises(UnsupportedModelError, match="BatchNorm1d, which neither the LayerNorm nor the RMSNorm"):
            explainer.explain(case.item(0), method=method)
        assert method not in explainer.applicable_methods()
    assert not ran
    assert "gradient_x_input" in explainer.applicable_methods()


def _eva_with_q_bias() -> nn.Module:
    from timm.models.eva import Eva

    torch.manual_seed(26)
    return Eva(img_size=32, patch_size=8, num_classes=5, global_pool="token", embed_dim=32, depth=2, num_heads=4,
               qkv_bias=True).eval()


def test_declared_blocker_refuses_the_rules():
    explainer = Explainer(_eva_with_q_bias())
    for method in RULE_METHODS:
        with pytest.raises(UnsupportedModelError, match="q and v biases are added outside the qkv module"):
            explainer.explain(make_pixels(1), method=method)


def test_a_projection_that_never_runs_is_reported():
    """Without the declared blocker, EVA's q_bias path computes qkv with F.linear: the rule never applies, and the
    explanation is refused rather than returned wrong."""
    entry = dict(next(f for f in families.built_in() if f.name == "timm-eva").entry)
    entry.pop("lrp_blockers")
    with pytest.raises(FamilyError, match="never ran in the forward pass"):
        Explainer(_eva_with_q_bias(), family=entry).explain(make_pixels(1), method="attnlrp")


@pytest.mark.parametrize("key, value, problem", [("lrp_blockers", [{"reason": "x", "rules": ["lxt"]}], "rules"),
                                                 ("gated_mlp", "yes", "gated_mlp is true or false")])
def test_family_keys_of_the_rules_are_checked(key, value, problem):
    entry = dict(next(f for f in families.built_in() if f.name == "bert").entry)
    entry[key] = value
    with pytest.raises(FamilyError, match=problem):
        families.load(entry)


@pytest.mark.parametrize("method", NEW_METHODS)
def test_a_model_made_in_inference_mode_is_refused(wordpiece, method):
    from conftest import make_bert

    with torch.inference_mode():
        model = make_bert(wordpiece.vocab_size)
    with pytest.raises(UnsupportedModelError, match=f"and '{method}' needs gradients.*without gradients: lrp, "
                                                    "lrp_plain, partial_lrp, partial_lrp_plain, raw_attention, rollout"):
        Explainer(model, wordpiece).explain("a film", method=method)


def test_cli_lists_the_new_methods(capsys):
    from toolkit.cli import main

    assert main(["methods"]) == 0
    listed = capsys.readouterr().out
    for method in NEW_METHODS:
        assert method in listed


# --- 6. the captum baselines against independent computations ---------------------------------------------------------
def _from_first_layer(case, i: int, target: int):
    """f(x): the reference copy's target logit with x in place of its first layer's input; and the stock x."""
    model = case.reference
    block = Explainer(model, case.processor).adapter.spec.layers[0].block
    x0 = case.run(i).hidden[0][None].to(case.dtype)

    def f(x: torch.Tensor) -> torch.Tensor:
        done = []

        def replace(module, args, kwargs):
            if done:
                return None
            done.append(True)
            return (x.to(args[0].dtype), *args[1:]), kwargs

        handle = block.register_forward_pre_hook(replace, with_kwargs=True)
        try:
            if case.modality == "image":
                out = model(case.inputs[i:i + 1]) if case.hooks else model(pixel_values=case.inputs[i:i + 1])
            else:
                out = model(**case.encode(i))
        finally:
            handle.remove()
        return getattr(out, "logits", out)[0, target]

    return f, x0


@pytest.mark.parametrize("case_name", ["bert", "albert", "hf_vit", "timm_vit"])
def test_gradient_x_input_matches_autograd(cases, case_name):
    case = cases[case_name]
    for i, exp in enumerate(case.explainer().explain(case.inputs if case.modality == "image" else list(case.inputs),
                                                     method="gradient_x_input")):
        f, x0 = _from_first_layer(case, i, exp.target)
        x = x0.clone().requires_grad_()
        (grad,) = torch.autograd.grad(f(x), x)
        assert_scores(exp.scores, (x0 * grad)[0].sum(-1).double(), f"{case_name}[{i}] gradient_x_input")


@pytest.mark.parametrize("case_name", ["bert", "albert", "hf_vit", "timm_vit"])
def test_integrated_gradients_matches_a_gauss_legendre_sum(cases, case_name):
    """IG = (x - x0) * sum_k w_k grad f(x0 + a_k (x - x0)), Gauss-Legendre nodes and weights on [0, 1] (captum's
    default rule), written out here one point at a time from a zero baseline."""
    case = cases[case_name]
    steps = 8
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    explanations = case.explainer().explain(case.inputs if case.modality == "image" else list(case.inputs),
                                            method="integrated_gradients", steps=steps, internal_batch_size=5,
                                            baseline="zero")
    for i, exp in enumerate(explanations):
        f, x = _from_first_layer(case, i, exp.target)
        total = torch.zeros_like(x)
        for node, weight in zip(nodes, weights):
            point = (x * (node + 1) / 2).requires_grad_()
            total += weight / 2 * torch.autograd.grad(f(point), point)[0]
        assert_scores(exp.scores, (x * total)[0].sum(-1).double(), f"{case_name}[{i}] integrated_gradients")


@pytest.mark.parametrize("baseline", ["mean", "zero"])
@pytest.mark.parametrize("case_name", ["bert", "timm_vit"])
def test_integrated_gradients_is_complete(cases, case_name, baseline):
    """sum of IG = f(x) - f(baseline) up to captum's convergence delta (computed here by captum on the reference
    function); from the default mean baseline that delta is below 1e-3 of |f(x) - f(baseline)| with 64 steps. From a
    zero baseline it is not small (see IntegratedGradients' docstring), and the sum is off by exactly that delta."""
    from captum.attr import IntegratedGradients

    case = cases[case_name]
    for i in range(len(case)):
        exp = case.explainer().explain(case.item(i), method="integrated_gradients", steps=64, baseline=baseline)
        f, x = _from_first_layer(case, i, exp.target)
        x_base = torch.zeros_like(x) if baseline == "zero" else x.mean(dim=1, keepdim=True).expand_as(x)
        with torch.no_grad():
            change = float(f(x) - f(x_base))
        _, delta = IntegratedGradients(lambda t: torch.stack([f(row[None]) for row in t])).attribute(
            x, baselines=x_base, n_steps=64, return_convergence_delta=True)
        total = float(exp.scores.astype(np.float64).sum())
        assert total - change == pytest.approx(float(delta), abs=1e-4 * abs(change) + 1e-5)
        if baseline == "mean":
            assert total == pytest.approx(change, abs=1e-3 * abs(change) + 1e-6)


def test_integrated_gradients_options_are_checked(cases):
    explainer = cases["bert"].explainer()
    with pytest.raises(InputError, match="'steps' of 'integrated_gradients' must be at least 1"):
        explainer.explain("a film", method="integrated_gradients", steps=0)
    with pytest.raises(InputError, match="'baseline' of 'integrated_gradients' is one of mean, zero"):
        explainer.explain("a film", method="integrated_gradients", baseline="black")


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_language_model_integrated_gradients_is_complete(name):
    """Per step, the log-probability of the token: sum of IG = log p(x) - log p(baseline), the baseline every
    position's first-layer input replaced by their mean over the step's prefix."""
    tokenizer = word_tokenizer()
    model = make_lm(name)
    explanation = Explainer(model, tokenizer).explain("the cat sat on", method="integrated_gradients", steps=64,
                                                      continuation="the mat")
    block = Explainer(model, tokenizer).adapter.spec.layers[0].block
    ids = tokenizer("the cat sat on")["input_ids"] + [step.token_id for step in explanation.steps]
    for t, step in enumerate(explanation.steps):
        prefix = torch.tensor([ids[:len(ids) - len(explanation.steps) + t]])
        handle = block.register_forward_pre_hook(
            lambda m, args, kwargs: ((args[0].mean(dim=1, keepdim=True).expand_as(args[0]), *args[1:]), kwargs),
            with_kwargs=True)
        try:
            with torch.no_grad():
                base = model(prefix).logits[0, -1].log_softmax(-1)[step.token_id]
        finally:
            handle.remove()
        change = step.log_prob - float(base)
        assert float(np.sum(step.text_scores)) == pytest.approx(change, abs=1e-3 * abs(change) + 1e-5), (name, t)


# --- our own methods on the AttnLRP backward pass (issue 13, "go beyond") -----------------------------------------------
@pytest.mark.parametrize("case_name", ["bert", "distilbert", "hf_vit", "timm_vit"])
def test_generic_attnlrp_is_generic_on_the_attnlrp_gradients(fresh_cases, case_name):
    """generic_attnlrp = the ICCV 2021 propagation (the generic reference) of the gradients that the reference's own
    forward pass gives under the AttnLRP rules; attnlrp_routed = attnlrp's tokens times that row over its maximum."""
    from references import ref_generic

    case = fresh_cases[case_name]
    spec = Explainer(case.reference, case.processor, family=case.family_file).adapter.spec
    with ATTNLRP.applied(case.reference, spec):
        runs = [case.run(i) for i in range(len(case))]
    inputs = case.inputs if case.modality == "image" else list(case.inputs)
    explainer = case.explainer()
    ours = explainer.explain(inputs, method="generic_attnlrp")
    for i, (exp, p) in enumerate(zip(ours, runs)):
        assert_scores(exp.scores, ref_generic(p, None, 0), f"{case_name}[{i}] generic_attnlrp")
    if case.modality == "text":
        plain = explainer.explain(inputs, method="attnlrp")
        routed = explainer.explain(inputs, method="attnlrp_routed")
        for exp, base, route in zip(routed, plain, ours):
            gate = np.clip(route.scores, 0, None) / np.clip(route.scores, 0, None).max()
            np.testing.assert_allclose(exp.scores, base.scores * gate, rtol=1e-5, atol=1e-7)
