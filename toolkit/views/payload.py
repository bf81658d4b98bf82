"""Turn attention arrays into the compact JSON that the browser views decode.

Arrays travel as base64 typed arrays (little-endian), not JSON number lists: a 512-token,
6-layer, 12-head model has 19 million weights. Text views keep only the links at or above
``min_weight`` (sparse rows, weights in 1/255 steps, which is all the opacity a canvas has);
image views keep every patch weight, in 1/255 steps of its row's maximum (from zero, as the relevance
overlays: a row of nearly equal weights looks even, not stretched into contrast).
Colours are computed here once and used by both the HTML and the SVG export.
"""
from __future__ import annotations

import base64
import colorsys
import io

import numpy as np
from PIL import Image

from .data import AttentionStack, ImageAttention

# d3's category10 with indigo for its grey (grey reads as "off"); golden-angle hues after ten heads.
_FIRST_HEAD_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#393b79", "#bcbd22", "#17becf")


def head_colors(n_heads: int) -> list[str]:
    """One distinct colour per head."""
    colors = list(_FIRST_HEAD_COLORS[:n_heads])
    for head in range(len(colors), n_heads):
        red, green, blue = colorsys.hls_to_rgb((head * 0.381966) % 1.0, 0.45, 0.7)
        colors.append(f"#{round(red * 255):02x}{round(green * 255):02x}{round(blue * 255):02x}")
    return colors


def _interpolated_lut(anchors: list[tuple[float, ...]]) -> np.ndarray:
    """256 entries linearly interpolated between evenly spaced anchor colours."""
    anchors_array = np.asarray(anchors, dtype=np.float64)
    positions = np.linspace(0.0, 1.0, len(anchors_array))
    steps = np.linspace(0.0, 1.0, 256)
    return np.stack([np.interp(steps, positions, channel) for channel in anchors_array.T], axis=1)


# Heatmap over images, RGBA: transparent dark blue (weak) to opaque yellow (strong), as in viridis/inferno.
HEATMAP_LUT = np.rint(
    _interpolated_lut([(13, 8, 135, 0), (126, 3, 168, 90), (204, 71, 120, 150), (248, 149, 64, 190), (240, 249, 33, 220)])
).astype(np.uint8)
# Vector entries, RGB: orange (negative) to white (zero) to blue (positive).
DIVERGING_LUT = np.rint(_interpolated_lut([(230, 97, 1), (253, 184, 99), (255, 255, 255), (146, 197, 222), (5, 113, 176)])).astype(np.uint8)


def quantize(weights: np.ndarray) -> np.ndarray:
    """Weights in [0, 1] as 1/255 steps."""
    return np.rint(np.clip(weights, 0.0, 1.0) * 255).astype(np.uint8)


def link_mask(weights: np.ndarray, min_weight: float) -> np.ndarray:
    """Which links are drawn: at least ``min_weight`` and visible once quantised."""
    return (weights >= min_weight) & (quantize(weights) > 0)


def _b64(array: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()).decode("ascii")


def _stack_header(stack: AttentionStack) -> dict:
    layers, heads, _, _ = stack.weights.shape
    return {
        "name": stack.name,
        "label": stack.label,
        "queryTokens": stack.query_tokens,
        "keyTokens": stack.key_tokens,
        "queryBStart": stack.query_b_start,
        "keyBStart": stack.key_b_start,
        "layers": layers,
        "heads": heads,
        "colors": head_colors(heads),
    }


def links_stack(stack: AttentionStack, min_weight: float) -> dict:
    """Sparse rows per (layer, head, query): rowStart [rows + 1] uint32, keys uint16, weights uint8 (/255)."""
    n_keys = stack.weights.shape[-1]
    rows = stack.weights.reshape(-1, n_keys)
    keep = link_mask(rows, min_weight)
    row_start = np.concatenate([[0], np.cumsum(keep.sum(axis=1))])
    return {
        **_stack_header(stack),
        "links": {
            "rowStart": _b64(row_start, "u4"),
            "keys": _b64(np.nonzero(keep)[1], "u2"),
            "weights": _b64(quantize(rows)[keep], "u1"),
        },
    }


def neuron_stack(stack: AttentionStack) -> dict:
    """What the page needs to score a query against every key: vectors [layer, head, token, dim] as float32,
    each layer's scale and causal flag, and the position bias [head, query, key] where the model has one.
    Scores are not shipped (layers × heads × tokens² floats); the page recomputes the row it shows."""
    neurons = stack.neurons
    bias = neurons.position_bias
    return {
        **_stack_header(stack),
        "headDim": neurons.queries.shape[-1],
        "queries": _b64(neurons.queries, "f4"),
        "keys": _b64(neurons.keys, "f4"),
        "scales": neurons.scales.tolist(),
        "causal": neurons.causal.tolist(),
        "positionBias": None if bias is None else _b64(bias, "f4"),
    }


def patch_maps(attention: ImageAttention) -> np.ndarray:
    """Attention to the patches only [layer, head + 1, token, patch]; the extra last head is the mean of heads."""
    to_patches = attention.weights[..., attention.prefix_tokens :]
    return np.concatenate([to_patches, to_patches.mean(axis=1, keepdims=True)], axis=1)


def grey_image_url(pixels: np.ndarray) -> str:
    """The image in grey, as a PNG data URL: under a coloured heatmap, only the heatmap should carry colour."""
    luminance = np.rint(pixels.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).astype(np.uint8)
    return png_data_url(np.repeat(luminance[..., None], 3, axis=-1))


def png_data_url(pixels: np.ndarray) -> str:
    """An RGB or RGBA uint8 array as a PNG data URL, to embed in HTML or SVG."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def prefix_labels(attention: ImageAttention) -> list[str]:
    """Names of the tokens before the patches: [CLS], then distillation or register tokens."""
    return ["[CLS]"] + [f"[prefix {index}]" for index in range(1, attention.prefix_tokens)] if attention.prefix_tokens else []


def query_label(attention: ImageAttention, token: int) -> str:
    """"[CLS]" or "patch (row 2, column 5)", as the image view names its query."""
    if token < attention.prefix_tokens:
        return prefix_labels(attention)[token]
    row, column = divmod(token - attention.prefix_tokens, attention.grid[1])
    return f"patch (row {row}, column {column})"


def relative_maps(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row over its strongest patch, in [0, 1] from zero (attention weights are never negative), with the
    row's minimum and maximum (which the view's caption gives)."""
    row_min = maps.min(axis=-1)
    row_max = maps.max(axis=-1)
    return maps / np.maximum(row_max, 1e-12)[..., None], row_min, row_max


def image_payload(attention: ImageAttention) -> dict:
    """Patch maps as uint8 steps of each row's maximum (from zero), and the rows' minima and maxima as float32."""
    relative, row_min, row_max = relative_maps(patch_maps(attention))
    layers, heads, _, _ = attention.weights.shape
    return {
        "layers": layers,
        "heads": heads,
        "grid": list(attention.grid),
        "prefixTokens": attention.prefix_tokens,
        "prefixLabels": prefix_labels(attention),
        "image": grey_image_url(attention.pixels),
        "maps": _b64(quantize(relative), "u1"),
        "rowMin": _b64(row_min, "f4"),
        "rowMax": _b64(row_max, "f4"),
        "heatmap": HEATMAP_LUT.tolist(),
    }
