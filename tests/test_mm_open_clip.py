"""open_clip CLIP: each method against a plain per-pair reference whose attention is recomputed by hand
from the MultiheadAttention weights (AttnLRP and CP-LRP against tests/references.py's rules through each tower);
loading by name, with local checkpoints and offline failures."""
from __future__ import annotations

import contextlib
import copy
import math

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from references import (Layer, _lin, assert_pairs_match_rules_reference, assert_path_methods_by_hand, attnlrp_layer,
                        by_path_methods, completeness_gap, eps_layer_norm, eps_linear, from_first_layer, layer_forward,
                        rules_at_pixels)
from toolkit import Explainer, InputError, ModelLoadError, ToolkitWarning, UnsupportedModelError
from toolkit.core.lrp_rules import ATTNLRP
from toolkit.multimodal.open_clip import attention_weights_returned

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
        refusal = Explainer(model, processor).method_refusal("attnlrp")
    finally:
        for module in modules:
            module.batch_first = True
    for ours, theirs in zip(sequence_first, expected):
        np.testing.assert_allclose(ours.heatmap, theirs.heatmap, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(ours.scores, theirs.scores, rtol=1e-4, atol=1e-6)
    assert "sequence-first" in refusal  # the rules read the first block's input batch-first
    for module in modules:
        module.batch_first = False
    try:
        assert "runs the model again" in Explainer(model, processor).method_refusal("integrated_gradients")
    finally:
        for module in modules:
            module.batch_first = True


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


# --- AttnLRP and CP-LRP: the rules at each MultiheadAttention -----------------------------------------------------
RULE_SHARES = {"attnlrp": 0.5, "cp_lrp": 1.0}  # method -> share of A V's relevance that goes to V


def float64_copy(model, without_biases: bool = False):
    """``without_biases``: every bias zero (linear layers, in-projections, LayerNorms), and the image's class token
    and position embeddings too, so that the class token's first-layer input is zero."""
    model = copy.deepcopy(model).double()
    if without_biases:
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name.endswith("bias") or name in ("visual.class_embedding", "visual.positional_embedding"):
                    parameter.zero_()
    return model


def tower_layers(blocks, causal: bool) -> list[Layer]:
    """tests/references.py's reading of open_clip's pre-LN blocks: query, key and value are the rows of the
    MultiheadAttention's in-projection (a causal mask enters the text tower's scores)."""
    layers = []
    for block in blocks:
        attn, width = block.attn, block.attn.embed_dim
        weight, bias = attn.in_proj_weight.detach(), attn.in_proj_bias.detach()
        q, k, v = ((weight[i * width:(i + 1) * width], bias[i * width:(i + 1) * width]) for i in range(3))
        layers.append(Layer(q, k, v, _lin(attn.out_proj), _lin(block.mlp.c_fc), _lin(block.mlp.c_proj), block.mlp.gelu,
                            block.ln_1, block.ln_2, attn.num_heads, True, biased=causal))
    return layers


def rules_reference(model, processor, image, text, value_share):
    """(pixel relevance (H, W), token relevance up to the end of text) of AttnLRP (value_share 1/2) or CP-LRP (1)
    for one pair of a float64 model: from the similarity split over the embedding's dimensions (scale * ê_i[d] *
    ê_t[d], the norms held constant) back through the projection and the final LayerNorm to the read-out row, then
    the layer rules of tests/references.py through every block, on the blocks' own inputs and the hand-computed
    attention maps; per token of the first block's input, and for the image back through ln_pre, the position
    embeddings and the patch convolution to the pixels (tests/references.py, rules_at_pixels)."""
    preprocess, tokenizer = processor
    ids = tokenizer([text])
    blocks = {"image": list(model.visual.transformer.resblocks), "text": list(model.transformer.resblocks)}
    states = {name: [] for name in blocks}
    def keep(name):
        return lambda module, args, *output: states[name].append((output[-1] if output else args[0])[0].detach())

    hooks = [block.register_forward_pre_hook(keep(name)) for name in blocks for block in blocks[name]]
    hooks += [blocks[name][-1].register_forward_hook(keep(name)) for name in blocks]
    probs = []
    try:
        with attention_by_hand(model, probs):
            image_embedding = model.encode_image(preprocess(image)[None].double())
            text_embedding = model.encode_text(ids)
    finally:
        for hook in hooks:
            hook.remove()
    shared = (model.logit_scale.exp() * F.normalize(image_embedding, dim=-1) * F.normalize(text_embedding, dim=-1))[0]
    eot = int((ids[0] == tokenizer.eot_token_id).nonzero()[0])
    maps = {"image": probs[:len(blocks["image"])], "text": probs[len(blocks["image"]):]}
    ends = {"image": (model.visual.ln_post, model.visual.proj, 0), "text": (model.ln_final, model.text_projection, eot)}
    relevance = {}
    for name, (norm, projection, row) in ends.items():
        layers, hidden = tower_layers(blocks[name], causal=name == "text"), states[name]
        with torch.no_grad():
            saved = [layer_forward(layer, hidden[i], maps[name][i].detach(), f"{name} block {i}")
                     for i, layer in enumerate(layers)]
            for i, f in enumerate(saved):
                torch.testing.assert_close(f["out"], hidden[i + 1], rtol=1e-10, atol=1e-10)
            r_pooled = eps_linear(norm(hidden[-1][row]), projection.T, None, shared)
            r = torch.zeros_like(hidden[-1])
            r[row] = eps_layer_norm(norm, hidden[-1][row], r_pooled)
            for i in reversed(range(len(layers))):
                r = attnlrp_layer(layers[i], saved[i], r, value_share)
        relevance[name] = r
    visual = model.visual
    pixels = rules_at_pixels(preprocess(image), visual.conv1, visual.class_embedding, visual.positional_embedding,
                             relevance["image"], visual.ln_pre)
    return pixels, relevance["text"].sum(-1)[:eot + 1]


@pytest.mark.parametrize("method", list(RULE_SHARES))
def test_rules_match_the_explicit_reference_in_both_towers(clip, method):
    model, processor, image = clip
    model = float64_copy(model)
    assert_pairs_match_rules_reference(Explainer(model, processor), image, TEXTS, method, lambda text: rules_reference(
        model, processor, image, text, RULE_SHARES[method]))


def test_cp_lrp_conserves_the_similarity_in_each_tower(clip):
    """Without biases, CP-LRP passes the pair's logit (scale * cosine, the norms held constant as in the HF CLIP
    test) whole to each tower's input: the text's tokens (special ones too) hold it, and so do the patches (the
    class token's first-layer input being zero)."""
    model, processor, image = clip
    model = float64_copy(model, without_biases=True)
    scale = float(model.logit_scale.exp().detach())
    for exp in Explainer(model, processor).explain(image=image, text=TEXTS, method="cp_lrp"):
        size = max(float(np.abs(exp.scores).sum()), float(np.abs(exp.heatmap).sum()), 1.0)
        assert float(exp.scores.sum()) == pytest.approx(exp.similarity * scale, abs=1e-6 * size)
        assert float(exp.heatmap.sum()) == pytest.approx(exp.similarity * scale, abs=1e-6 * size)


@pytest.mark.parametrize("method", list(RULE_SHARES))
def test_rules_batched_equal_one_pair_at_a_time(clip, method):
    model, processor, image = clip
    flipped = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    ex = Explainer(model, processor)
    batched = ex.explain(image=[image, flipped], text=TEXTS, method=method)
    for index, exp in enumerate(batched):  # image-major: every text with the first image, then the second
        alone = ex.explain(image=[image, flipped][index // len(TEXTS)], text=exp.text, method=method)
        np.testing.assert_allclose(exp.heatmap, alone.heatmap, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(exp.scores, alone.scores, rtol=1e-4, atol=1e-6)


def test_rules_leave_the_forward_bit_identical(clip):
    """Inside the rules (gradients on, per-head weights returned as the explained pass asks), both towers compute
    exactly what they compute without them; and the rule methods report the similarity generic reports (the same
    pass: gradients on, the parameters frozen), within float32 rounding of a pass without gradients (which takes
    another path through torch's attention: ~1e-7)."""
    model, (preprocess, tokenizer), image = clip
    ex = Explainer(model, (preprocess, tokenizer))
    pixels, ids = preprocess(image)[None], tokenizer(TEXTS)
    with torch.enable_grad(), attention_weights_returned([site.module for site in ex.adapter.sites()]):
        plain = model.encode_image(pixels), model.encode_text(ids)
        with ATTNLRP.applied(model, *ex.adapter.streams().values()):
            ruled = model.encode_image(pixels), model.encode_text(ids)
    assert all(r.requires_grad and torch.equal(r.detach(), p.detach()) for r, p in zip(ruled, plain))
    similarity = [exp.similarity for exp in ex.explain(image=image, text=TEXTS, method="generic")]
    without_gradients = [exp.similarity for exp in ex.explain(image=image, text=TEXTS, method="raw_attention")]
    np.testing.assert_allclose(similarity, without_gradients, rtol=0, atol=1e-6)
    for method in RULE_SHARES:
        assert [exp.similarity for exp in ex.explain(image=image, text=TEXTS, method=method)] == similarity


def test_rule_hooks_undone_when_forward_or_backward_raises(clip, monkeypatch):
    import toolkit.core.engine as engine

    model, processor, image = clip
    before = hook_ids(model)
    ex = Explainer(model, processor)

    def raises(*args, **kwargs):
        raise RuntimeError("boom")

    for method in RULE_SHARES:
        for target, name in ((model.transformer.resblocks[-1], "forward"), (engine.torch.autograd, "grad")):
            monkeypatch.setattr(target, name, raises)
            with pytest.raises(RuntimeError, match="boom"):
                ex.explain(image=image, text="a dog", method=method)
            monkeypatch.undo()
            assert hook_ids(model) == before
    assert float(np.abs(ex.explain(image=image, text="a dog", method="attnlrp").scores).max()) > 0


# --- the captum methods: each tower run again from its first block's input ----------------------------------------
def towers_by_hand(model, processor, image, text):
    """Per tower, (f, x) of references.from_first_layer for one pair's logit scale * cosine."""
    preprocess, tokenizer = processor
    pixels, ids = preprocess(image)[None].double(), tokenizer([text])

    def run(times: int) -> torch.Tensor:
        image_embeds = model.encode_image(pixels.repeat(times, 1, 1, 1), normalize=True)
        text_embeds = model.encode_text(ids.repeat(times, 1), normalize=True)
        return (image_embeds * text_embeds).sum(-1) * model.logit_scale.exp()

    return {"image": from_first_layer(model.visual.transformer.resblocks[0], run),
            "text": from_first_layer(model.transformer.resblocks[0], run)}


def test_path_methods_match_the_hand_computation_per_pair_and_tower(clip):
    """gradient x input by autograd and integrated gradients as a 400-point path integral from the mean token, per
    pair and tower (image: the patches, the class token left out; text: up to the end of text, where the tower reads);
    the text side sums to the logit's change along the path, up to captum's convergence delta."""
    model, processor, image = clip
    model = float64_copy(model)
    for text, (ig, gxi) in zip(TEXTS, by_path_methods(Explainer(model, processor), image=image, text=TEXTS)):
        hand = towers_by_hand(model, processor, image, text)
        for stream, method_scores in (("image", (ig.heatmap.ravel(), gxi.heatmap.ravel())),
                                      ("text", (ig.scores, gxi.scores))):
            f, x = hand[stream]
            real = x.shape[0] if stream == "image" else len(ig.tokens)  # the text's tokens up to its end
            x0 = x[:real].mean(dim=0, keepdim=True).expand_as(x)
            kept = slice(1, None) if stream == "image" else slice(0, real)  # the patches; the text up to its end
            assert_path_methods_by_hand(*method_scores, f, x, x0, f"{text!r} {stream}", kept)
        f, x = hand["text"]
        x0 = x[:len(ig.tokens)].mean(dim=0, keepdim=True).expand_as(x)
        gap, delta, change = completeness_gap(f, x, x0, float(np.sum(ig.scores)), 64)
        assert gap == pytest.approx(delta, abs=1e-5 * abs(change) + 1e-6)  # the positions after the end add nothing
        assert abs(delta) < 1e-3 * abs(change)


def test_path_methods_batch_like_one_pair_and_release_every_hook(clip):
    model, processor, image = clip
    model = float64_copy(model)
    before = hook_ids(model)
    ex = Explainer(model, processor)
    batched = ex.explain(image=image, text=TEXTS, method="integrated_gradients", steps=8, internal_batch_size=6)
    assert hook_ids(model) == before
    for text, exp in zip(TEXTS, batched):
        alone = ex.explain(image=image, text=text, method="integrated_gradients", steps=8, internal_batch_size=6)
        np.testing.assert_allclose(exp.scores, alone.scores, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(exp.heatmap, alone.heatmap, rtol=1e-6, atol=1e-9)
        assert exp.similarity == pytest.approx(alone.similarity, rel=1e-9)
