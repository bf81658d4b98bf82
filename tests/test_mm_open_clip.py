"""open_clip CLIP: each method against a plain per-pair reference whose attention is recomputed by hand
from the MultiheadAttention weights; loading by name, with local checkpoints and offline failures."""
from __future__ import annotations

import contextlib
import math

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from toolkit import Explainer, InputError, ModelLoadError, ToolkitWarning, UnsupportedModelError

TEXTS = ["a dog", "a cat sitting on a warm mat", "red"]
TINY = "toolkit-tiny-vit"
TINY_CFG = dict(embed_dim=16,
                vision_cfg=dict(image_size=32, patch_size=8, width=32, layers=3, head_width=8, mlp_ratio=1.25),
                text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=4, layers=3, mlp_ratio=1.25))


@pytest.fixture(scope="module", autouse=True)
def tiny_config():
    """Registered under a name, so that open_clip's own factory, tokenizer and transforms build it."""
    open_clip.factory._MODEL_CONFIGS[TINY] = TINY_CFG
    yield
    del open_clip.factory._MODEL_CONFIGS[TINY]


def reinitialise(model: torch.nn.Module) -> torch.nn.Module:
    """Larger random weights than open_clip's init, so that gradients and attention are far from uniform."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                param.normal_(0, 0.3)
    return model


@pytest.fixture(scope="module")
def clip():
    model, _, preprocess = open_clip.create_model_and_transforms(TINY, pretrained=None)
    reinitialise(model).eval()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 40, 3), dtype=np.uint8))
    return model, (preprocess, open_clip.get_tokenizer(TINY)), image


def hook_ids(model) -> set:
    return {(name, key) for name, module in model.named_modules()
            for key in (*module._forward_hooks, *module._forward_pre_hooks)}


@contextlib.contextmanager
def attention_by_hand(model, probs: list):
    """Every block's attention recomputed from its MultiheadAttention weights (one sample, batch first),
    keeping each softmax output, with its gradient retained, in ``probs``."""
    blocks = [*model.visual.transformer.resblocks, *model.transformer.resblocks]

    def by_hand(block):
        attn = block.attn

        def attention(q_x, k_x=None, v_x=None, attn_mask=None):
            x = q_x[0]
            n, width, heads = x.shape[0], x.shape[1], attn.num_heads
            q, k, v = (t.reshape(n, heads, -1).transpose(0, 1)
                       for t in F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1))
            scores = q @ k.transpose(-1, -2) / math.sqrt(width // heads)
            a = (scores if attn_mask is None else scores + attn_mask).softmax(dim=-1)
            a.retain_grad()
            probs.append(a)
            return attn.out_proj((a @ v).transpose(0, 1).reshape(n, width))[None]

        return attention

    for block in blocks:
        block.attention = by_hand(block)
    try:
        yield
    finally:
        for block in blocks:
            del block.attention


def reference(model, processor, image, text, method, start_layer=0):
    """One pair at a time, the text cut after its end-of-text token (the causal mask hides what follows)."""
    preprocess, tokenizer = processor
    ids = tokenizer([text])
    probs = []
    with attention_by_hand(model, probs):
        cosine = (model.encode_image(preprocess(image)[None], normalize=True)
                  * model.encode_text(ids, normalize=True)).sum()
        (cosine * model.logit_scale.exp()).backward()
    stock = (model.encode_image(preprocess(image)[None], normalize=True)
             * model.encode_text(ids, normalize=True)).sum()
    torch.testing.assert_close(cosine, stock, rtol=1e-5, atol=1e-6)  # the hand-made attention is the model's
    layers = len(model.visual.transformer.resblocks)
    eot = int((ids[0] == tokenizer.eot_token_id).nonzero()[0])
    cut = slice(0, eot + 1)

    def stream(atts, grads, row, content):
        n = atts[0].shape[-1]
        if method == "raw_attention":
            return atts[-1].mean(0)[row]
        if method == "attention_gradcam":
            weights = grads[-1][:, row, content].mean(-1)
            return (weights[:, None] * atts[-1][:, row, :]).mean(0).clamp(min=0)
        relevance = torch.eye(n)
        for a, g in list(zip(atts, grads))[start_layer:]:
            if method == "generic":
                relevance = relevance + (g * a).clamp(min=0).mean(0) @ relevance
            else:  # rollout
                m = a.mean(0) + torch.eye(n)
                relevance = (m / m.sum(-1, keepdim=True)) @ relevance
        return relevance[row]

    model.zero_grad(set_to_none=True)
    image_rel = stream([a.detach() for a in probs[:layers]], [a.grad for a in probs[:layers]], 0,
                       torch.arange(1, probs[0].shape[-1]))
    text_rel = stream([a.detach()[:, cut, cut] for a in probs[layers:]], [a.grad[:, cut, cut] for a in probs[layers:]],
                      eot, torch.arange(1, eot))
    return image_rel[1:].reshape(4, 4), text_rel, float(cosine.detach())


@pytest.mark.parametrize("method,start", [("generic", 0), ("generic", 1), ("rollout", 0), ("rollout", 2),
                                          ("raw_attention", 0), ("attention_gradcam", 0)])
def test_batched_pairs_match_per_pair_reference(clip, method, start):
    model, processor, image = clip
    before = hook_ids(model)
    exps = Explainer(model, processor).explain(image=image, text=TEXTS, method=method, start_layer=start,
                                               **({"start_layer_text": start} if start else {}))
    assert hook_ids(model) == before
    assert [e.text for e in exps] == TEXTS
    for exp, text in zip(exps, TEXTS):
        heatmap, text_rel, cosine = reference(model, processor, image, text, method, start)
        torch.testing.assert_close(torch.from_numpy(exp.heatmap), heatmap, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(torch.from_numpy(exp.scores), text_rel, rtol=1e-4, atol=1e-6)
        assert exp.similarity == pytest.approx(cosine, rel=1e-4, abs=1e-6)
    assert sum(e.probability for e in exps) == pytest.approx(1.0, rel=1e-5)


def test_multihead_attention_returns_nothing_again_afterwards(clip):
    model, processor, image = clip
    Explainer(model, processor).explain(image=image, text="a dog", method="generic")
    returned = []
    handle = model.visual.transformer.resblocks[0].attn.register_forward_hook(
        lambda module, args, output: returned.append(output[1]))
    try:
        model.encode_image(processor[0](image)[None])
    finally:
        handle.remove()
    assert returned == [None]


def test_bundled_tokenizer_works_offline_and_names_the_tokens(clip):
    model, processor, image = clip
    assert open_clip.get_tokenizer("ViT-B-32")(["a dog"])[0, :4].tolist() == [49406, 320, 1929, 49407]
    exp = Explainer(model, processor).explain(image=image, text="a dog", method="generic")
    assert exp.tokens == ["<start_of_text>", "a", "dog", "<end_of_text>"] and exp.scores.shape == (4,)
    assert exp.heatmap.shape == (4, 4) and exp.heatmap.std() > 0 and exp.scores.std() > 0
    assert exp.image.shape == (32, 32, 3)


def test_several_images_give_every_pair(clip):
    model, processor, image = clip
    flipped = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    exps = Explainer(model, processor).explain(image=[image, flipped], text=TEXTS[:2], method="generic")
    assert [(e.text, e.target) for e in exps] == [(TEXTS[0], 0), (TEXTS[1], 1)] * 2
    alone = Explainer(model, processor).explain(image=flipped, text=TEXTS[1], method="generic")
    np.testing.assert_allclose(exps[3].heatmap, alone.heatmap, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(exps[3].scores, alone.scores, rtol=1e-4, atol=1e-6)


def test_sequence_first_layout_of_older_open_clip_gives_the_same(clip):
    """open_clip before 2.23 ran its towers as (N, B, D) with batch_first=False MultiheadAttention."""
    model, processor, image = clip
    transformers = [model.visual.transformer, model.transformer]
    modules = [*transformers, *(block.attn for t in transformers for block in t.resblocks)]
    expected = Explainer(model, processor).explain(image=image, text=TEXTS, method="generic")
    for module in modules:
        module.batch_first = False
    try:
        sequence_first = Explainer(model, processor).explain(image=image, text=TEXTS, method="generic")
    finally:
        for module in modules:
            module.batch_first = True
    for ours, theirs in zip(sequence_first, expected):
        np.testing.assert_allclose(ours.heatmap, theirs.heatmap, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(ours.scores, theirs.scores, rtol=1e-4, atol=1e-6)


def test_frozen_model_or_callers_no_grad_give_the_same_gradients(clip):
    model, processor, image = clip
    expected = Explainer(model, processor).explain(image=image, text=TEXTS[1], method="generic")
    with torch.no_grad():
        under_no_grad = Explainer(model, processor).explain(image=image, text=TEXTS[1], method="generic")
    model.requires_grad_(False)
    try:
        frozen = Explainer(model, processor).explain(image=image, text=TEXTS[1], method="generic")
    finally:
        model.requires_grad_(True)
    for exp in (under_no_grad, frozen):
        np.testing.assert_allclose(exp.heatmap, expected.heatmap, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(exp.scores, expected.scores, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("suffix", ["safetensors", "bin"])
def test_loads_by_name_with_random_or_local_weights(clip, tmp_path, suffix):
    model, _, image = clip
    path = tmp_path / f"open_clip_model.{suffix}"
    if suffix == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    else:
        torch.save(model.state_dict(), path)
    loaded = Explainer.from_pretrained(TINY, source="open_clip", pretrained=str(path))
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value)
    ours = Explainer(model, clip[1]).explain(image=image, text="red", method="generic")
    np.testing.assert_allclose(loaded.explain(image=image, text="red").heatmap, ours.heatmap, rtol=1e-5)
    assert Explainer.from_pretrained(TINY, pretrained=None).adapter.family == "open_clip"  # source guessed


def test_loading_failures_say_what_to_do(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match=r"offline(.|\n)*pretrained='/path/to/open_clip_model.safetensors'"):
        Explainer.from_pretrained("ViT-B-32", source="open_clip", pretrained="openai")
    with pytest.raises(ModelLoadError, match="not a pretrained tag(.|\n)*laion2b_s34b_b79k"):
        Explainer.from_pretrained("ViT-B-32", source="open_clip", pretrained="laion9b")
    with pytest.raises(ModelLoadError, match="No checkpoint file at"):
        Explainer.from_pretrained("ViT-B-32", source="open_clip", pretrained="/nowhere/weights.bin")
    with pytest.raises(ModelLoadError, match="Did you mean ViT-B-32"):
        Explainer.from_pretrained("ViT-B-33", source="open_clip")


def test_refuses_towers_it_cannot_read():
    text_cfg = TINY_CFG["text_cfg"]
    resnet = open_clip.CLIP(16, dict(image_size=32, layers=[1, 1, 1, 1], width=8, head_width=8), text_cfg)
    with pytest.raises(UnsupportedModelError, match="ModifiedResNet"):
        Explainer(resnet, (None, None))
    qk_norm = open_clip.CLIP(16, TINY_CFG["vision_cfg"], {**text_cfg, "qk_norm": True})
    with pytest.raises(UnsupportedModelError, match="Attention"):
        Explainer(qk_norm, (None, None))


def test_refuses_what_it_cannot_do(clip):
    model, processor, image = clip
    with pytest.raises(InputError, match="get_tokenizer"):
        Explainer(model)
    ex = Explainer(model, processor)
    with pytest.raises(UnsupportedModelError, match="generic"):
        ex.explain(image=image, text="x", method="transformer_attribution")
    with pytest.raises(InputError, match="empty"):
        ex.explain(image=image, text=["ok", " "])
    with pytest.raises(InputError, match="No image"):
        ex.explain(text="x")


def test_overlay_on_the_original_image_follows_the_transforms(clip):
    model, processor, image = clip
    exp = Explainer(model, processor).explain(image=image, text="a dog", method="generic")
    # Resize(32) on 40x48: 32x38 (int(32 * 48 / 40)); CenterCrop(32) from y = round(6 / 2) = 3.
    np.testing.assert_allclose(exp.crop_box, [0, 3 * 48 / 38, 40, 35 * 48 / 38], atol=1e-3)
    np.testing.assert_array_equal(exp.original_image, np.asarray(image))
    assert exp.overlay(on="original").size == image.size


def test_text_beyond_the_context_is_cut_with_the_words_named(clip):
    model, processor, image = clip
    kept = "a dog on the grass a dog on the grass a dog near a"
    with pytest.warns(ToolkitWarning, match=r"Text #0 is 18 tokens long but the model reads at most 16: it is cut to "
                                            r"16 and 'tall tree' is left out"):
        exp = Explainer(model, processor).explain(image=image, text=kept + " tall tree", method="generic")
    assert exp.text == kept and len(exp.tokens) == 16 and exp.tokens[-1] == "<end_of_text>"
    heatmap, text_rel, cosine = reference(model, processor, image, kept, "generic")
    torch.testing.assert_close(torch.from_numpy(exp.scores), text_rel, rtol=1e-4, atol=1e-6)
    assert exp.similarity == pytest.approx(cosine, rel=1e-4, abs=1e-6)


def test_tokenizer_of_another_context_length(clip):
    model, (preprocess, tokenizer), image = clip
    wide = open_clip.get_tokenizer("ViT-B-32")  # 77 tokens; this model reads 16
    exp = Explainer(model, (preprocess, wide)).explain(image=image, text="a dog", method="generic")
    same = Explainer(model, (preprocess, tokenizer)).explain(image=image, text="a dog", method="generic")
    np.testing.assert_allclose(exp.scores, same.scores, rtol=1e-5, atol=1e-7)
    with pytest.raises(InputError, match="gives 77 tokens per text but this model reads 16"):
        Explainer(model, (preprocess, lambda texts: wide(texts))).explain(image=image, text="a dog")
