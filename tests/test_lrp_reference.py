"""LRP-based methods (lrp, partial_lrp, transformer_attribution, and lrp_plain / partial_lrp_plain by the plain rules
of the paper's baselines) against the reference LRP of tests/references.py, written from the CVPR 2021 rules in the
"gradprop" style (see there), on float64 copies of the models (see references.DTYPE for why).
"""
from __future__ import annotations

import functools

import pytest
import torch

import references
from conftest import CASE_NAMES, make_zero_shot
from references import (CVPR2021, DTYPE, PLAIN, other_target, ref_partial_lrp, ref_transformer_attribution,
                        reference_lrp)
from toolkit.core import engine, lrp, propagation
from toolkit.core.capture import Recorder

TEXT_CASES = [n for n in CASE_NAMES if n not in ("hf_vit", "timm_vit")]
IMAGE_CASES = ["hf_vit", "timm_vit"]


assert_scores = functools.partial(references.assert_scores, rtol=1e-6, atol_rel=1e-6)


def targets_for(case, mode: str) -> list:
    return [None if mode == "predicted" else other_target(case.run(i)) for i in range(len(case))]


def explain_all(case, method: str, targets, **kwargs):
    return case.explainer().explain(case.inputs if case.modality == "image" else list(case.inputs),
                                    method=method, target=targets, **kwargs)


# --- the reference itself ------------------------------------------------------------------------------
@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_reference_reproduces_model_and_conserves_per_layer(cases_float64, case_name):
    """The re-computation matches every stock hidden state / attention map / logit (asserted inside
    reference_lrp), and each layer of the reference conserves relevance: 1 from the head to the input."""
    case = cases_float64[case_name]
    for i in range(len(case)):
        result = reference_lrp(case, i, None)
        for index, sums in enumerate(result.per_layer_sums):
            for name, value in sums.items():
                expected = 1.0 if name in ("out", "x1", "in") else float(sums["ctx"])
                assert float(value) == pytest.approx(expected, abs=1e-5), f"{case_name}[{i}] layer {index} {name}"
        assert float(result.first.sum()) == pytest.approx(1.0, abs=1e-5)


# --- the three LRP-based methods against the reference -----------------------------------------------
RULE_SETS = {"lrp": ("lrp", "partial_lrp", CVPR2021), "plain": ("lrp_plain", "partial_lrp_plain", PLAIN)}


@pytest.mark.parametrize("rule_set", RULE_SETS)
@pytest.mark.parametrize("target_mode", ["predicted", "other"])
@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_lrp_matches_reference(cases_float64, case_name, target_mode, rule_set):
    case = cases_float64[case_name]
    targets = targets_for(case, target_mode)
    method, _, rules = RULE_SETS[rule_set]
    for i, exp in enumerate(explain_all(case, method, targets)):
        ref = reference_lrp(case, i, targets[i], rules)
        assert exp.target == ref.target
        if case.modality == "text":
            assert_scores(exp.scores, ref.first.sum(dim=-1), f"{case_name}[{i}] {method} tokens")
        else:
            assert exp.heatmap.shape == (32, 32)
            assert_scores(exp.heatmap, ref.pixels, f"{case_name}[{i}] {method} pixels")
            per_patch = ref.pixels.reshape(4, 8, 4, 8).sum(dim=(1, 3)).reshape(-1)
            assert_scores(exp.scores, torch.cat([torch.zeros(1, dtype=DTYPE), per_patch]),
                          f"{case_name}[{i}] {method} per-patch scores")


@pytest.mark.parametrize("rule_set", RULE_SETS)
@pytest.mark.parametrize("target_mode", ["predicted", "other"])
@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_partial_lrp_matches_reference(cases_float64, case_name, target_mode, rule_set):
    case = cases_float64[case_name]
    targets = targets_for(case, target_mode)
    _, method, rules = RULE_SETS[rule_set]
    for i, exp in enumerate(explain_all(case, method, targets)):
        expected = ref_partial_lrp(case, i, targets[i], rules)
        assert_scores(exp.scores, expected, f"{case_name}[{i}] {method}")
        if case.modality == "image":
            assert_scores(exp.heatmap.ravel(), expected[1:], f"{case_name}[{i}] {method} heatmap")


@pytest.mark.parametrize("case_name", ["bert", "hf_vit"])
def test_the_two_rule_sets_differ(cases_float64, case_name):
    """The plain rules are not the paper's own under another name: on the same model and target, full LRP by the two
    rule sets differs (the plain residual does not renormalise, and its linear rule does not conserve)."""
    case = cases_float64[case_name]
    own, plain = (reference_lrp(case, 0, None, rules).first.sum(dim=-1) for rules in (CVPR2021, PLAIN))
    assert float(plain.sum()) != pytest.approx(float(own.sum()), rel=1e-3)
    assert not torch.allclose(own / own.abs().max(), plain / plain.abs().max(), atol=1e-2)


@pytest.mark.parametrize("target_mode", ["predicted", "other"])
@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_transformer_attribution_matches_reference(cases_float64, case_name, target_mode):
    case = cases_float64[case_name]
    targets = targets_for(case, target_mode)
    for i, exp in enumerate(explain_all(case, "transformer_attribution", targets)):
        expected = ref_transformer_attribution(case, i, targets[i], 0)
        assert_scores(exp.scores, expected, f"{case_name}[{i}] transformer_attribution")


@pytest.mark.parametrize("start_layer", [1, 2])
@pytest.mark.parametrize("case_name", ["bert", "albert"])
def test_transformer_attribution_start_layer(cases_float64, case_name, start_layer):
    case = cases_float64[case_name]  # three layers each (ALBERT: one shared layer, three depths)
    targets = targets_for(case, "other")
    for i, exp in enumerate(explain_all(case, "transformer_attribution", targets, start_layer=start_layer)):
        expected = ref_transformer_attribution(case, i, targets[i], start_layer)
        assert_scores(exp.scores, expected, f"{case_name}[{i}] transformer_attribution s={start_layer}")


# --- conservation ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target_mode", ["predicted", "other"])
@pytest.mark.parametrize("case_name", TEXT_CASES)
def test_lrp_text_relevance_sums_to_one(cases, case_name, target_mode):
    """Text: every rule conserves, so the token relevances (incl. [CLS]/[SEP]) sum to the one-hot's 1,
    also inside a padded batch."""
    case = cases[case_name]
    for i, exp in enumerate(explain_all(case, "lrp", targets_for(case, target_mode))):
        assert float(exp.scores.sum()) == pytest.approx(1.0, abs=1e-4), f"{case_name}[{i}]"


@pytest.mark.parametrize("case_name", IMAGE_CASES)
def test_lrp_image_conservation(cases_float64, case_name):
    """Images: relevance is 1 at the first layer's input; the [CLS] row and the position-embedding share
    are then dropped by construction, and the z^B rule conserves what reaches the patch embedding, so
    sum(pixels) = 1 - R([CLS] token) - R(position embeddings) = sum of the patch-embedding relevance."""
    case = cases_float64[case_name]
    for i, exp in enumerate(explain_all(case, "lrp", None)):
        ref = reference_lrp(case, i, None)
        assert float(ref.first.sum()) == pytest.approx(1.0, abs=1e-5)
        assert float(ref.pixels.sum()) == pytest.approx(ref.patch_sum, abs=1e-5)
        assert float(exp.heatmap.sum()) == pytest.approx(ref.patch_sum, abs=1e-4), f"{case_name}[{i}]"
        assert float(exp.scores.sum()) == pytest.approx(float(exp.heatmap.sum()), abs=1e-5)


# --- a head without Linear layers: the zero-shot classifier's cosine over mean-pooled tokens -------------------
ZERO_SHOT_TEXTS = ["a wonderful film with a great cast", "dull", "the plot was boring and far too long"]


@pytest.fixture(scope="module")
def zero_shot(wordpiece):
    from toolkit import Explainer

    model = make_zero_shot(wordpiece).to(DTYPE)
    return Explainer(model, wordpiece)


def test_zero_shot_lrp_starts_at_input_x_gradient_of_the_held_norm_logit(zero_shot, wordpiece):
    """LRP starts at the encoder's output tokens: with the pooled vector's norm held constant, the cosine is linear
    in the tokens, so its relevance is input x gradient there (by autograd here), and it sums to the logit."""
    from toolkit.zero_shot import mean_pool

    model = zero_shot.model
    encoded = wordpiece(ZERO_SHOT_TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model.encoder(**encoded).last_hidden_state
        logits = model(**encoded).logits
    leaf = hidden.clone().requires_grad_(True)
    pooled = mean_pool(leaf, encoded.attention_mask)
    held = (pooled / pooled.norm(dim=-1, keepdim=True).detach()) @ model.label_embeddings.T / model.temperature
    targets = torch.tensor([0, 2, 1])
    (grad,) = torch.autograd.grad(held.gather(1, targets[:, None]).sum(), leaf)
    start = zero_shot.adapter.spec.token_start(hidden, encoded.attention_mask, targets)
    torch.testing.assert_close(start, hidden * grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(start.sum(dim=(1, 2)), logits.gather(1, targets[:, None])[:, 0], rtol=1e-10, atol=1e-12)
    assert float(start[encoded.attention_mask == 0].abs().sum()) == 0.0


@pytest.mark.parametrize("method", ["lrp", "transformer_attribution", "partial_lrp", "lrp_plain"])
def test_zero_shot_lrp_methods_conserve_and_batch(zero_shot, wordpiece, method):
    """The LRP-based methods reach the zero-shot classifier; under the paper's rules the token relevance sums to the
    explained logit (its start's sum), and a padded batch gives each text what it gets alone."""
    batched = zero_shot.explain(ZERO_SHOT_TEXTS, method=method)
    for text, exp in zip(ZERO_SHOT_TEXTS, batched):
        alone = zero_shot.explain(text, method=method)
        assert_scores(exp.scores, torch.as_tensor(alone.scores, dtype=DTYPE), f"zero-shot {method} batched")
        if method == "lrp":
            encoded = wordpiece(text, return_tensors="pt")
            with torch.no_grad():
                logit = float(zero_shot.model(**encoded).logits[0, exp.target])
            assert float(exp.scores.sum()) == pytest.approx(logit, rel=1e-5)
        assert float(abs(exp.scores).sum()) > 0


# --- the linear rule's closed form (three products from the recorded output) ---------------------------------
def _linear_case(kind: str, dtype=DTYPE):
    """x (B, N, D_in), W (D_out, D_in), bias, relevance (B, N, D_out): dense; ReLU inputs with outputs that have no
    positive contribution (z = 0) or only tiny ones (|x| |W| / z ~ 1e5: the difference x W + |x| |W| is all
    rounding there); relevance in one row per sample only (a classifier's read-out above the last attention)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, 48, generator=g, dtype=DTYPE)
    w = torch.randn(40, 48, generator=g, dtype=DTYPE) * 0.1
    bias = torch.randn(40, generator=g, dtype=DTYPE)
    relevance = torch.randn(3, 7, 40, generator=g, dtype=DTYPE)
    if kind == "degenerate":
        x = x.relu()
        w[:8] = -w[:8].abs()
        w[8:16] = -w[8:16].abs()
        w[8:16, :2] = w[8:16, :2].abs() * 1e-4
    if kind == "one row":
        relevance[:, 1:] = 0
        relevance[1, 0, 0] = 0  # a row read in full: its first value says nothing
    return x.to(dtype), w.to(dtype), bias.to(dtype), relevance.to(dtype)


@pytest.mark.parametrize("kind", ["dense", "degenerate", "one row"])
def test_linear_rule_matches_reference(kind):
    """z = (x W^T + |x| |W|^T) / 2 and R_in = (x (s W) + |x| (s |W|)) / 2 give the sign-split rule of the reference,
    from x W^T computed or from the layer's output less its bias, in float64; in float32 too where z is all
    rounding (those outputs take the split sums)."""
    x, w, bias, relevance = _linear_case(kind)
    expected = references.rel_linear(x, w, relevance)
    output = torch.nn.functional.linear(x, w, bias)
    for product in (None, output - bias):
        torch.testing.assert_close(lrp.linear_alpha1_beta0(x, w, relevance, product), expected, rtol=1e-9, atol=1e-12)
    x32, w32, b32, r32 = (t.float() for t in (x, w, bias, relevance))
    single = lrp.linear_alpha1_beta0(x32, w32, r32, torch.nn.functional.linear(x32, w32, b32) - b32)
    torch.testing.assert_close(single.double(), expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))


def test_linear_rule_reads_the_recorded_output_only_as_the_layer_left_it():
    """The output less the bias stands for x W^T only while it is the layer's: not after an in-place change, and not
    from a bfloat16 layer (its rounding would enter z); then the rule computes x W^T itself."""
    x, w, bias, relevance = _linear_case("dense", torch.float32)
    expected = references.rel_linear(x.double(), w.double(), relevance.double())
    layer = torch.nn.Linear(48, 40)
    with torch.no_grad():
        layer.weight.copy_(w), layer.bias.copy_(bias)
    with Recorder() as rec:
        rec.record(layer)
        with torch.no_grad():
            layer(x).mul_(3)  # a model that scales the output in place after the layer
    changed = propagation._linear_relevance(layer, rec.call(layer), relevance, lrp.CVPR2021_RULES)
    torch.testing.assert_close(changed.double(), expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))

    half = torch.nn.Linear(48, 40).to(torch.bfloat16)
    with torch.no_grad():
        half.weight.copy_(w), half.bias.copy_(bias)
    with Recorder() as rec:
        rec.record(half)
        with torch.no_grad():
            half(x.to(torch.bfloat16))
    call = rec.call(half)
    from_float32 = lrp.linear_alpha1_beta0(call.input.float(), half.weight.float(), relevance)
    torch.testing.assert_close(propagation._linear_relevance(half, call, relevance, lrp.CVPR2021_RULES), from_float32)


def test_lrp_pass_keeps_of_attention_relevance_only_what_a_method_reads(cases, monkeypatch):
    """lrp reads the input's relevance only: its pass drops each attention map's (B, H, N, N) relevance once past
    the layer (a lower peak); transformer_attribution keeps each layer's gradient-weighted head mean (B, N, N),
    partial_lrp the last layer's head mean; and what the Recorder kept for the pass is let go layer by layer."""
    kept = {}

    def spy(spec, rec, *args, **kwargs):
        first, maps = propagation.lrp_through_layers(spec, rec, *args, **kwargs)
        kept[method] = maps
        passed = [layer for layer, relevance in zip(spec.layers, maps) if relevance is not None] or spec.layers
        assert all(rec.call(layer.fc2, layer.call).output is None for layer in passed)
        assert all(rec.call(layer.block, layer.call).input is not None for layer in spec.layers)
        return first, maps

    monkeypatch.setattr(engine, "lrp_through_layers", spy)
    for method in ("lrp", "transformer_attribution", "partial_lrp"):
        explain_all(cases["bert"], method, None)
    assert all(relevance is None for relevance in kept["lrp"])
    assert all(relevance.dim() == 3 for relevance in kept["transformer_attribution"])
    assert kept["partial_lrp"][-1].dim() == 3 and all(relevance is None for relevance in kept["partial_lrp"][:-1])


@pytest.mark.parametrize("activation, recomputed", [(torch.nn.GELU(), True), (torch.nn.ReLU(), False)])
def test_recorder_keeps_a_recipe_for_an_input_it_reproduces_exactly(activation, recomputed):
    """An MLP's fc2 reads GELU(fc1's output): declared so, its call keeps no input tensor and recomputes it, equal
    to the bit; a declared function that does not reproduce the input (ReLU here) keeps the tensor."""
    torch.manual_seed(0)
    fc1, fc2 = torch.nn.Linear(6, 16), torch.nn.Linear(16, 6)
    with Recorder() as rec:
        rec.record(fc2, input_from=(fc1, activation))
        rec.record(fc1)
        with torch.no_grad():
            hidden = torch.nn.functional.gelu(fc1(torch.randn(2, 5, 6)))
            fc2(hidden)
    call = rec.call(fc2)
    assert (call.kept_input is None) == recomputed
    assert torch.equal(call.input, hidden)
