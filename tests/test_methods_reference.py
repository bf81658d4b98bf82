"""Attention-based methods against plain per-sample references, and the library's batching and hook hygiene.

The references (tests/references.py) read the equations directly (full N x N products, one sample, no
padding, the stock eager model's own attention tensors and their autograd gradients); the LRP-based
methods are checked in test_lrp_reference.py. Also: padding/batching invariance for all seven methods, hooks released and
the attention implementation restored (also when explain raises), and fused (SDPA) == eager.
"""
from __future__ import annotations

import copy

import pytest
import torch

import toolkit
from conftest import CASE_NAMES, PAIRS as PAIR_TEXTS, attention_settings, global_hook_counts, hook_counts
from references import REFERENCES, assert_scores, other_target
from toolkit import InputError, list_methods

ALL_METHODS = ["raw_attention", "rollout", "attention_gradcam", "generic", "transformer_attribution", "lrp",
               "partial_lrp", "lrp_plain", "partial_lrp_plain"]
ATTENTION_METHODS = ["raw_attention", "rollout", "attention_gradcam", "generic"]
# Full LRP to the input runs ~20 stabilised divisions in float32: the same text batched twice (no padding)
# already differs by ~2e-5 of the map's maximum, so its absolute floor is 1e-4 of the maximum.
# The plain rules also divide the x- W- part of each linear layer by its own sum, which nears zero more often: 3e-4
# of the maximum between batched and alone (float64: to 1e-6, tests/test_lrp_reference.py).
ATOL_REL = {"lrp": 1e-4, "lrp_plain": 1e-3, "partial_lrp_plain": 1e-4}


def explain_all(case, method: str, targets, start_layer: int = 0):
    kwargs = {"start_layer": start_layer} if start_layer else {}
    return case.explainer().explain(case.inputs if case.modality == "image" else list(case.inputs),
                                    method=method, target=targets, **kwargs)


# --- 1. each attention method against its reference ---------------------------------------------
def test_every_method_is_registered():
    assert sorted(list_methods()) == sorted(ALL_METHODS + ["attnlrp", "cp_lrp", "gradient_x_input",
                                                           "integrated_gradients", "generic_attnlrp", "attnlrp_routed"])


@pytest.mark.parametrize("target_mode", ["predicted", "other"])
@pytest.mark.parametrize("method", ATTENTION_METHODS)
@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_attention_method_matches_reference(cases, case_name, method, target_mode):
    case = cases[case_name]
    runs = [case.run(i) for i in range(len(case))]
    targets = [None if target_mode == "predicted" else other_target(p) for p in runs]
    explanations = explain_all(case, method, targets)  # one padded batch
    assert len(explanations) == len(case)
    for i, (exp, p) in enumerate(zip(explanations, runs)):
        assert exp.target == p.target(targets[i])
        assert exp.probability == pytest.approx(float(p.logits.detach().softmax(-1)[exp.target]), rel=1e-4)
        expected = REFERENCES[method](p, targets[i], 0)
        assert exp.scores.shape == expected.shape, f"{case_name}[{i}]: one score per non-padding token"
        assert_scores(exp.scores, expected, f"{case_name}[{i}] {method} target={exp.target}")
        if case.modality == "image":
            grid = exp.heatmap.shape
            assert grid == (4, 4)
            assert_scores(exp.heatmap.ravel(), expected[-16:], f"{case_name}[{i}] heatmap = patch scores")


@pytest.mark.parametrize("start_layer", [1, 2, -1])
@pytest.mark.parametrize("method", ["rollout", "generic"])
def test_start_layer_matches_reference(cases, method, start_layer):
    case = cases["bert"]  # three layers
    runs = [case.run(i) for i in range(len(case))]
    targets = [other_target(p) for p in runs]
    explanations = explain_all(case, method, targets, start_layer=start_layer)
    resolved = start_layer % 3
    for i, (exp, p) in enumerate(zip(explanations, runs)):
        assert_scores(exp.scores, REFERENCES[method](p, targets[i], resolved), f"bert[{i}] {method} s={start_layer}")


@pytest.mark.parametrize("method", ["rollout", "generic", "transformer_attribution"])
def test_start_layer_out_of_range_is_refused(cases, method):
    with pytest.raises(InputError, match="start_layer"):
        cases["bert"].explainer().explain("a film", method=method, start_layer=3)


def test_default_target_is_argmax_of_logits(cases):
    case = cases["albert"]
    for exp, i in zip(explain_all(case, "raw_attention", None), range(len(case))):
        assert exp.target == int(case.run(i).logits.argmax())


# --- 2. batching / padding invariance for every method ---------------------------------------------
@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_batch_equals_one_at_a_time(cases, case_name, method):
    case = cases[case_name]
    explainer = case.explainer()
    targets = [other_target(case.run(i)) if i % 2 else None for i in range(len(case))]
    batched = explain_all(case, method, targets)
    for i in range(len(case)):
        alone = explainer.explain(case.item(i), method=method, target=targets[i])
        assert alone.target == batched[i].target
        assert batched[i].scores.shape == alone.scores.shape
        tol = ATOL_REL.get(method, 1e-5)
        assert_scores(batched[i].scores, alone.scores, f"{case_name}[{i}] {method}: batch vs alone", atol_rel=tol)
        if alone.heatmap is not None:
            assert_scores(batched[i].heatmap, alone.heatmap, f"{case_name}[{i}] {method}: heatmap batch vs alone",
                          atol_rel=tol)


@pytest.mark.parametrize("method", ["generic", "lrp"])
def test_batch_size_splits_do_not_change_results(cases, method):
    case = cases["bert"]
    explainer = case.explainer()
    whole = explainer.explain(list(case.inputs), method=method)
    split = explainer.explain(list(case.inputs), method=method, batch_size=3, progress=False)
    for a, b in zip(whole, split):
        assert_scores(b.scores, a.scores, f"{method}: batch_size=3 vs one batch", atol_rel=ATOL_REL.get(method, 1e-5))


# --- 3. hooks released, attention implementation restored ------------------------------------------
HOOK_CASES = ["bert", "albert", "hf_vit", "timm_vit"]


def _assert_clean(model, settings_before) -> None:
    dirty = {name: counts for name, counts in hook_counts(model).items() if any(counts)}
    assert not dirty, f"hooks left on modules: {dirty}"
    assert global_hook_counts() == (0, 0, 0, 0)
    assert attention_settings(model) == settings_before


def _fused(case) -> None:
    settings = attention_settings(case.model)
    assert settings, "expected attention settings to check"
    assert all(value in ("sdpa", True) for _, value in settings), settings


@pytest.mark.parametrize("case_name", HOOK_CASES)
def test_hooks_released_after_explain(fresh_cases, case_name):
    case = fresh_cases[case_name]
    _fused(case)
    before = attention_settings(case.model)
    explainer = case.explainer()
    for method in ALL_METHODS:
        explainer.explain(case.item(0), method=method)
        _assert_clean(case.model, before)


@pytest.mark.parametrize("method", ["raw_attention", "generic", "transformer_attribution"])
@pytest.mark.parametrize("case_name", HOOK_CASES)
def test_hooks_released_when_target_out_of_range(fresh_cases, case_name, method):
    case = fresh_cases[case_name]
    before = attention_settings(case.model)
    with pytest.raises(InputError, match="out of range"):
        case.explainer().explain(case.item(0), method=method, target=99)
    _assert_clean(case.model, before)


def _first_block(case):
    model = case.model
    return {"bert": lambda: model.bert.encoder.layer[1],
            "albert": lambda: model.albert.encoder.albert_layer_groups[0].albert_layers[0],
            "hf_vit": lambda: model.vit.layers[1],
            "timm_vit": lambda: model.blocks[1]}[case.name]()


@pytest.mark.parametrize("case_name", HOOK_CASES)
def test_hooks_released_when_forward_raises(fresh_cases, case_name, monkeypatch):
    """A layer's forward raises after the toolkit's hooks are in place (and after a first layer ran)."""
    case = fresh_cases[case_name]
    before = attention_settings(case.model)
    block = _first_block(case)
    original = block.forward
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= (2 if case.name == "albert" else 1):  # ALBERT: fail on the second depth
            raise RuntimeError("boom in forward")
        return original(*args, **kwargs)

    monkeypatch.setattr(block, "forward", failing)
    for method in ("raw_attention", "transformer_attribution"):
        calls["n"] = 0
        with pytest.raises(RuntimeError, match="boom in forward"):
            case.explainer().explain(case.item(0), method=method)
        monkeypatch.setattr(block, "forward", original)
        _assert_clean(case.model, before)
        monkeypatch.setattr(block, "forward", failing)


@pytest.mark.parametrize("case_name", HOOK_CASES)
def test_hooks_released_when_adapter_or_lrp_raises(fresh_cases, case_name, monkeypatch):
    case = fresh_cases[case_name]
    before = attention_settings(case.model)
    explainer = case.explainer()
    original_logits = explainer.adapter.logits

    def logits_then_fail(batch):
        original_logits(batch)
        raise RuntimeError("boom after forward")

    monkeypatch.setattr(explainer.adapter, "logits", logits_then_fail)
    with pytest.raises(RuntimeError, match="boom after forward"):
        explainer.explain(case.item(0), method="generic")
    monkeypatch.undo()
    _assert_clean(case.model, before)

    import toolkit.core.engine as engine_module

    def lrp_fails(*args, **kwargs):
        raise RuntimeError("boom in lrp")

    monkeypatch.setattr(engine_module, "lrp_through_layers", lrp_fails)
    with pytest.raises(RuntimeError, match="boom in lrp"):
        explainer.explain(case.item(0), method="lrp")
    monkeypatch.undo()
    _assert_clean(case.model, before)
    # and the explainer still works afterwards
    explainer.explain(case.item(0), method="lrp")
    _assert_clean(case.model, before)


def test_model_without_toolkit_hooks_after_many_calls(fresh_cases):
    """Repeated explains do not accumulate hooks (ALBERT's shared modules are hooked once per call)."""
    case = fresh_cases["albert"]
    before = attention_settings(case.model)
    explainer = case.explainer()
    for _ in range(3):
        explainer.explain(list(case.inputs), method="transformer_attribution")
    _assert_clean(case.model, before)


# --- 5. fused (SDPA) attention gives the eager result, and is restored ---------------------------------
@pytest.mark.parametrize("case_name", ["bert_pair", "distilbert", "albert", "hf_vit", "timm_vit"])
def test_fused_attention_equals_eager(fresh_cases, case_name):
    case = fresh_cases[case_name]
    _fused(case)
    fused_model = case.model
    eager_model = copy.deepcopy(fused_model)
    if case.family == "timm-vit":
        for block in eager_model.blocks:
            block.attn.fused_attn = False
    else:
        eager_model.set_attn_implementation("eager")
    before = attention_settings(fused_model)
    fused = toolkit.Explainer(fused_model, case.processor)
    eager = toolkit.Explainer(eager_model, case.processor)
    inputs = case.inputs if case.modality == "image" else list(case.inputs)
    for method in ALL_METHODS:
        for a, b in zip(fused.explain(inputs, method=method), eager.explain(inputs, method=method)):
            assert a.target == b.target
            assert_scores(a.scores, b.scores, f"{case_name} {method}: sdpa vs eager", atol_rel=ATOL_REL.get(method, 1e-5))
        assert attention_settings(fused_model) == before
    # the restored model really runs its fused path again: HF SDPA attention returns no weights
    if case.family != "timm-vit":
        module = next(m for m in fused_model.modules() if type(m).__name__.endswith(("SelfAttention", "Attention"))
                      and hasattr(m, "config"))
        seen = []
        handle = module.register_forward_hook(lambda m, a, o: seen.append(o[1] if isinstance(o, tuple) else None))
        try:
            with torch.no_grad():
                if case.modality == "image":
                    fused_model(pixel_values=case.inputs[:1])
                else:
                    fused_model(**case.encode(0))
        finally:
            handle.remove()
        assert seen and seen[0] is None, "the model still runs eager attention after explain"


# --- gradient context ---------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["attention_gradcam", "generic", "transformer_attribution"])
@pytest.mark.parametrize("case_name", ["bert", "timm_vit"])
def test_gradient_methods_work_inside_no_grad(cases, case_name, method):
    """Callers often wrap inference in torch.no_grad(); the explainer enables the gradients it needs."""
    case = cases[case_name]
    explainer = case.explainer()
    expected = explainer.explain(case.item(0), method=method).scores
    with torch.no_grad():
        got = explainer.explain(case.item(0), method=method).scores
    assert_scores(got, expected, f"{case_name} {method} inside torch.no_grad()")


def test_frozen_model_gives_same_gradients_and_leaves_no_param_grads(cases, fresh_cases):
    """Attention gradients exist for a frozen model; explain never writes .grad or changes requires_grad."""
    reference_case = cases["bert"]                      # same seed, same weights, trainable
    frozen = fresh_cases["bert"]
    for param in frozen.model.parameters():
        param.requires_grad_(False)
    trainable = fresh_cases["bert_pair"].model             # also a fresh BERT: check .grad stays None
    for method in ("generic", "transformer_attribution"):
        for i, exp in enumerate(explain_all(frozen, method, None)):
            expected = explain_all(reference_case, method, None)[i].scores
            assert_scores(exp.scores, expected, f"frozen bert[{i}] {method}")
        toolkit.Explainer(trainable, fresh_cases["bert_pair"].processor).explain(list(PAIR_TEXTS), method=method)
    assert all(not p.requires_grad for p in frozen.model.parameters())
    assert all(p.requires_grad and p.grad is None for p in trainable.parameters())
