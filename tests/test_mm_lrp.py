"""The LRP-based methods on image-text models: CLIP's two towers and ViLT's single stream, each pair against a
reference written from the CVPR 2021 rules (tests/references.py) on a float64 copy of the stock model, from its
own hidden states and attention maps; the start of each tower's LRP is the similarity split over the projection's
dimensions (scale * ê_i[d] * ê_t[d]), ViLT's the answer's one-hot logit."""
from __future__ import annotations

import copy

import numpy as np

import pytest
import torch
import torch.nn.functional as F

from references import DTYPE, Layer, _lin, layer_forward, layer_relevance, rel_linear
from test_mm_clip import clip  # noqa: F401  (fixture)
from test_mm_vilt import QUESTIONS, vilt  # noqa: F401  (fixture)
from toolkit import Explainer

METHODS = ["lrp", "partial_lrp", "transformer_attribution"]


def stack(layers, heads: int, causal: bool) -> list[Layer]:
    """The references' reading of CLIP / ViLT pre-LN layers (a causal mask enters the text tower's scores)."""
    def attention(layer):
        return getattr(layer, "self_attn", None) or layer.attention.attention

    result = []
    for layer in layers:
        if hasattr(layer, "self_attn"):
            a = layer.self_attn
            parts = (a.q_proj, a.k_proj, a.v_proj, a.out_proj, layer.mlp.fc1, layer.mlp.fc2)
            act, ln1, ln2 = layer.mlp.activation_fn, layer.layer_norm1, layer.layer_norm2
        else:
            a = attention(layer)
            parts = (a.query, a.key, a.value, layer.attention.output.dense, layer.intermediate.dense,
                     layer.output.dense)
            act, ln1, ln2 = layer.intermediate.intermediate_act_fn, layer.layernorm_before, layer.layernorm_after
        result.append(Layer(*map(_lin, parts), act, ln1, ln2, heads, True, biased=causal))
    return result


def detached(tensors) -> list[torch.Tensor]:
    return [t.detach() for t in tensors]


def relevance_through(layers: list[Layer], hidden, attentions, grads, row: int, r_row: torch.Tensor, method: str,
                      start: int = 0) -> torch.Tensor:
    """The reference of one method for one stack: LRP from the read-out row's relevance r_row (D,)."""
    saved = [layer_forward(layer, hidden[i][0], attentions[i][0], f"layer {i}") for i, layer in enumerate(layers)]
    for i, f in enumerate(saved):
        torch.testing.assert_close(f["out"], hidden[i + 1][0], rtol=1e-7, atol=1e-7)
    r = torch.zeros_like(hidden[-1][0])
    r[row] = r_row
    maps = [None] * len(layers)
    for i in reversed(range(len(layers))):
        r, maps[i], _ = layer_relevance(layers[i], saved[i], r)
    if method == "lrp":
        return r.sum(-1)
    if method == "partial_lrp":
        return maps[-1].clamp(min=0).mean(0)[row]
    n = r.shape[0]
    relevance = torch.eye(n, dtype=DTYPE)
    for grad, r_a in list(zip(grads, maps))[start:]:
        relevance = relevance + (grad[0] * r_a).clamp(min=0).mean(0) @ relevance
    return relevance[row]


@pytest.mark.parametrize("method", METHODS)
def test_clip_towers_match_the_lrp_reference(clip, method):  # noqa: F811
    model, processor, image = clip
    model = copy.deepcopy(model).to(DTYPE)
    texts = ["a small dog", "two red birds on a wire"]
    start = 1 if method == "transformer_attribution" else 0  # the image tower's; the text tower's stays 0
    exps = Explainer(model, processor).explain(image=image, text=texts, method=method, start_layer=start)
    model.set_attn_implementation("eager")
    pixels = processor.image_processor(images=[image], return_tensors="pt")["pixel_values"].to(DTYPE)
    for exp, text in zip(exps, texts):
        enc = processor.tokenizer([text], return_tensors="pt")
        out = model(**enc, pixel_values=pixels, output_attentions=True, output_hidden_states=True)
        vision, words = out.vision_model_output, out.text_model_output
        scale = model.logit_scale.exp()
        similarity = (out.image_embeds * out.text_embeds).sum() * scale
        grads = torch.autograd.grad(similarity, [*vision.attentions, *words.attentions])
        shared = (out.image_embeds[0] * out.text_embeds[0] * scale).detach()
        eot = int((enc["input_ids"][0] == processor.tokenizer.sep_token_id).nonzero()[0])
        pooled = model.vision_model.post_layernorm(vision.hidden_states[-1][0, 0]).detach()
        image_row = rel_linear(pooled, model.visual_projection.weight.detach(), shared)
        text_pooled = model.text_model.final_layer_norm(words.hidden_states[-1][0, eot]).detach()
        text_row = rel_linear(text_pooled, model.text_projection.weight.detach(), shared)
        heads = model.config.vision_config.num_attention_heads
        image_rel = relevance_through(stack(model.vision_model.encoder.layers, heads, False), detached(vision.hidden_states),
                                      detached(vision.attentions), grads[:3], 0, image_row, method, start)
        text_rel = relevance_through(stack(model.text_model.encoder.layers, heads, True), detached(words.hidden_states),
                                     detached(words.attentions), grads[3:], eot, text_row, method)
        if method == "lrp":  # the relevance that reached the towers' inputs is the similarity, less the biases' share
            assert abs(float(image_rel.sum()) - float(similarity)) < 0.5 * abs(float(similarity)) + 1e-3
        torch.testing.assert_close(torch.from_numpy(exp.heatmap).to(DTYPE), image_rel[1:].reshape(4, 4).float().to(DTYPE),
                                   rtol=1e-4, atol=1e-8 + 1e-4 * float(image_rel.abs().max()))
        torch.testing.assert_close(torch.from_numpy(exp.scores).to(DTYPE), text_rel.float().to(DTYPE),
                                   rtol=1e-4, atol=1e-8 + 1e-4 * float(text_rel.abs().max()))
        assert float(image_rel[1:].abs().max()) > 0 and float(text_rel.abs().max()) > 0


@pytest.mark.parametrize("method", METHODS)
def test_vilt_joint_stream_matches_the_lrp_reference(vilt, method):  # noqa: F811
    model, processor, images = vilt
    model = copy.deepcopy(model).to(DTYPE)
    ex = Explainer(model, processor)
    for question in QUESTIONS[:2]:
        exp = ex.explain(image=images[1], question=question, method=method)
        model.set_attn_implementation("eager")
        visual = processor.image_processor(images=[images[1]], return_tensors="pt")
        enc = processor.tokenizer([question], return_tensors="pt")
        out = model(**enc, pixel_values=visual["pixel_values"].to(DTYPE), pixel_mask=visual["pixel_mask"],
                    output_attentions=True, output_hidden_states=True)
        answer = int(out.logits[0].argmax())
        assert exp.target == answer
        grads = torch.autograd.grad(out.logits[0, answer], out.attentions)
        # head: pooler (dense, tanh), then classifier Linear, LayerNorm, GELU, Linear
        x0 = model.vilt.layernorm(out.hidden_states[-1][0, 0]).detach()
        x1 = torch.tanh(model.vilt.pooler.dense(x0)).detach()
        x2 = F.gelu(model.classifier[1](model.classifier[0](x1))).detach()
        r = torch.zeros(out.logits.shape[-1], dtype=DTYPE)
        r[answer] = 1.0
        for x, linear in ((x2, model.classifier[3]), (x1, model.classifier[0]), (x0, model.vilt.pooler.dense)):
            r = rel_linear(x, linear.weight.detach(), r)
        layers = stack(model.vilt.encoder.layer, model.config.num_attention_heads, False)
        row = relevance_through(layers, detached(out.hidden_states), detached(out.attentions), grads, 0, r, method)
        length = enc["input_ids"].shape[1]
        torch.testing.assert_close(torch.from_numpy(exp.scores).to(DTYPE), row[:length].float().to(DTYPE),
                                   rtol=1e-4, atol=1e-8 + 1e-4 * float(row.abs().max()))
        patches = torch.from_numpy(exp.heatmap).to(DTYPE).flatten()
        assert float(patches.sum()) == pytest.approx(float(row[length + 1:].sum()), rel=1e-5, abs=1e-9)
        assert sorted(patches.tolist()) == pytest.approx(sorted(row[length + 1:].float().tolist()), rel=1e-4, abs=1e-9)


def _without_biases(model):
    """A copy whose biases (layers, norms) are zero: the relevance at a tower's input then sums to the pair's logit
    under CP-LRP (which conserves exactly; AttnLRP's softmax rule keeps a share, as the paper says)."""
    model = copy.deepcopy(model).to(DTYPE)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.zero_()
    return model


def test_cp_lrp_conserves_the_similarity_in_each_clip_tower(clip):  # noqa: F811
    model, processor, image = clip
    model = _without_biases(model)
    exps = Explainer(model, processor).explain(image=image, text=["a small dog", "two red birds on a wire"],
                                              method="cp_lrp")
    for exp in exps:
        logit = exp.similarity * float(model.logit_scale.exp())
        assert float(exp.scores.sum()) == pytest.approx(logit, rel=1e-4, abs=1e-6)  # every text token, specials too
        assert float(np.abs(exp.heatmap).max()) > 0


@pytest.mark.parametrize("method", ["attnlrp", "cp_lrp"])
def test_rule_methods_reach_vilt_and_clip_and_are_batch_invariant(clip, vilt, method):  # noqa: F811
    model, processor, images = vilt
    ex = Explainer(model, processor)
    batched = ex.explain(image=images[1], question=QUESTIONS[:2], method=method)
    for exp, question in zip(batched, QUESTIONS[:2]):
        alone = ex.explain(image=images[1], question=question, method=method)
        np.testing.assert_allclose(exp.scores, alone.scores, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(exp.heatmap, alone.heatmap, rtol=1e-4, atol=1e-6)
    clip_model, clip_processor, image = clip
    assert method in Explainer(clip_model, clip_processor).applicable_methods()


def test_integrated_gradients_on_a_clip_tower_match_a_path_integral_by_hand(clip):  # noqa: F811
    """The text tower's first-layer input x, its baseline x0 (the mean real token), and the similarity's gradient
    averaged over 400 points of the straight path, by hand: (x - x0) . mean grad, summed per token."""
    model, processor, image = clip
    model = copy.deepcopy(model).to(DTYPE)
    text = "two red birds on a wire"
    exp = Explainer(model, processor).explain(image=image, text=text, method="integrated_gradients", steps=64)
    pixels = processor.image_processor(images=[image], return_tensors="pt")["pixel_values"].to(DTYPE)
    enc = processor.tokenizer([text], return_tensors="pt")
    first = model.text_model.encoder.layers[0]
    seen = []
    handle = first.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    model(**enc, pixel_values=pixels)
    handle.remove()
    x = seen[0]
    x0 = x.mean(dim=1, keepdim=True).expand_as(x)
    total = torch.zeros_like(x)
    alphas = (torch.arange(400, dtype=DTYPE) + 0.5) / 400
    for alpha in alphas:
        point = (x0 + alpha * (x - x0)).requires_grad_()
        handle = first.register_forward_pre_hook(lambda module, args: (point, *args[1:]))
        out = model(**enc, pixel_values=pixels)
        handle.remove()
        similarity = (out.image_embeds * out.text_embeds).sum() * model.logit_scale.exp()
        total += torch.autograd.grad(similarity, point)[0]
    expected = ((x - x0) * total / len(alphas)).sum(-1)[0]
    torch.testing.assert_close(torch.from_numpy(exp.scores).to(DTYPE), expected, rtol=1e-3,
                               atol=1e-3 * float(expected.abs().max()))


def test_path_methods_reach_vilt_pair_by_pair(vilt):  # noqa: F811
    model, processor, images = vilt
    ex = Explainer(model, processor)
    for method in ("integrated_gradients", "gradient_x_input"):
        batched = ex.explain(image=images[1], question=QUESTIONS[:2], method=method)
        alone = ex.explain(image=images[1], question=QUESTIONS[1], method=method)
        np.testing.assert_allclose(batched[1].scores, alone.scores, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(batched[1].heatmap, alone.heatmap, rtol=1e-4, atol=1e-6)
        assert np.abs(alone.heatmap).max() > 0
