"""Static figures for papers: SVG drawn in Python from the view's data, PNG rasterised from that SVG.

SVG needs nothing beyond numpy. PNG needs the ``playwright`` package and a Chromium: the first of
``$TOOLKIT_CHROMIUM``, ``chromium``, ``chromium-browser``, ``google-chrome`` on the PATH, else the
browser Playwright installed itself. No network is used.
"""
from __future__ import annotations

import concurrent.futures
import os
import shutil
from html import escape
from pathlib import Path

import numpy as np

from ..errors import ToolkitError
from .data import AttentionStack, ImageAttention
from .payload import DIVERGING_LUT, HEATMAP_LUT, grey_image_url, head_colors, link_mask, patch_maps, png_data_url, quantize, query_label, relative_maps

FONT = "font-family:Helvetica,Arial,sans-serif;font-size:12px"
ROW = 18  # px per token row, as in the HTML views
CHAR = 7  # estimated px per character of a 12px label
LINK_AREA = 220  # px between the two token columns


class ExportError(ToolkitError, RuntimeError):
    """A static export could not be produced (no browser for PNG, unknown file type)."""


def _document(width: float, height: float, title: str, body: list[str]) -> str:
    """An SVG figure with a bold title line on top, widened to fit the title."""
    width = max(width, len(title) * CHAR + 8)
    title_text = f'<text x="4" y="12" dominant-baseline="middle" font-weight="bold">{escape(title)}</text>'
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" style="{FONT}">'
        f'<rect width="100%" height="100%" fill="#fff"/>{title_text}{"".join(body)}</svg>'
    )


def _text(x: float, y: float, text: str, anchor: str = "start", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" dominant-baseline="middle"{extra}>{escape(text)}</text>'


def allowed_links(stack: AttentionStack, sentence_filter: str, token: int | None) -> np.ndarray:
    """Boolean [query, key]: the links the sentence filter ("all", "A->B"...) and the isolated query token let through."""
    queries = np.arange(len(stack.query_tokens))
    keys = np.arange(len(stack.key_tokens))
    allowed = np.ones((len(queries), len(keys)), dtype=bool)
    if sentence_filter != "all":
        query_side, key_side = sentence_filter.split("->")
        in_b_query = queries >= stack.query_b_start
        in_b_key = keys >= stack.key_b_start
        allowed &= ((in_b_query if query_side == "B" else ~in_b_query)[:, None]) & ((in_b_key if key_side == "B" else ~in_b_key)[None, :])
    if token is not None:
        allowed &= (queries == token)[:, None]
    return allowed


def _link_lines(weights: np.ndarray, allowed: np.ndarray, min_weight: float, x0: float, x1: float, y0: float, row: float, color: str, width: float) -> str:
    queries, keys = np.nonzero(link_mask(weights, min_weight) & allowed)
    opacity = quantize(weights[queries, keys]) / 255
    lines = "".join(
        f'<line x1="{x0:.1f}" y1="{y0 + (q + 0.5) * row:.1f}" x2="{x1:.1f}" y2="{y0 + (k + 0.5) * row:.1f}" stroke-opacity="{o:.3f}"/>'
        for q, k, o in zip(queries, keys, opacity)
    )
    return f'<g stroke="{color}" stroke-width="{width}">{lines}</g>'


def head_svg(stack: AttentionStack, layer: int, heads: list[int], sentence_filter: str, token: int | None, min_weight: float) -> str:
    """Token columns with one colour of lines per head, as the head view shows them."""
    left = max(len(t) for t in stack.query_tokens) * CHAR + 12
    right = max(len(t) for t in stack.key_tokens) * CHAR + 12
    top = 30
    height = top + max(len(stack.query_tokens), len(stack.key_tokens)) * ROW + 10
    colors = head_colors(stack.weights.shape[1])
    allowed = allowed_links(stack, sentence_filter, token)
    title = f"{stack.label} · layer {layer} · heads {', '.join(map(str, heads))}"
    body = []
    for index, label in enumerate(stack.query_tokens):
        weight = ' font-weight="bold"' if index == token else ""
        body.append(_text(left - 6, top + (index + 0.5) * ROW, label, "end", weight))
    for index, label in enumerate(stack.key_tokens):
        body.append(_text(left + LINK_AREA + 6, top + (index + 0.5) * ROW, label))
    for head in heads:
        body.append(_link_lines(stack.weights[layer, head], allowed, min_weight, left, left + LINK_AREA, top, ROW, colors[head], 1.5))
    return _document(left + LINK_AREA + right, height, title, body)


def model_svg(stack: AttentionStack, min_weight: float, thumbnail: int = 80, gap: int = 10) -> str:
    """The layer × head grid of thumbnails, each head in its colour."""
    layers, heads, n_queries, n_keys = stack.weights.shape
    colors = head_colors(heads)
    row = thumbnail / max(n_queries, n_keys)
    left, top = 60, 46
    everything = np.ones((n_queries, n_keys), dtype=bool)
    body = []
    for head in range(heads):
        body.append(_text(left + head * (thumbnail + gap) + thumbnail / 2, top - 12, f"head {head}", "middle"))
    for layer in range(layers):
        y = top + layer * (thumbnail + gap)
        body.append(_text(left - 8, y + thumbnail / 2, f"layer {layer}", "end"))
        for head in range(heads):
            x = left + head * (thumbnail + gap)
            body.append(f'<rect x="{x}" y="{y}" width="{thumbnail}" height="{thumbnail}" fill="none" stroke="#ddd"/>')
            body.append(_link_lines(stack.weights[layer, head], everything, min_weight, x + 4, x + thumbnail - 4, y, row, colors[head], 1))
    return _document(left + heads * (thumbnail + gap), top + layers * (thumbnail + gap), stack.label, body)


def _cells(values: np.ndarray, scale: float, x: float, y: float, width: float) -> str:
    """A vector as a strip of cells, orange (negative) to blue (positive)."""
    indices = np.rint((np.clip(values / scale, -1, 1) + 1) * 127.5).astype(int)
    return "".join(
        f'<rect x="{x + i * width:.1f}" y="{y + 2:.1f}" width="{width:.1f}" height="{ROW - 4}" fill="rgb({r},{g},{b})"/>'
        for i, (r, g, b) in enumerate(DIVERGING_LUT[indices])
    )


def neuron_svg(stack: AttentionStack, layer: int, head: int, token: int) -> str:
    """For one query token: its query vector, each key vector, their element-wise product, score and weight."""
    neurons = stack.neurons
    query = neurons.queries[layer, head, token]
    keys = neurons.keys[layer, head]
    products = keys * query
    scores = neurons.scores[layer, head, token]
    weights = stack.weights[layer, head, token]
    cell = min(10.0, max(2.0, 192 / len(query)))
    strip = cell * len(query)
    label = max(len(t) for t in stack.key_tokens + stack.query_tokens) * CHAR + 12
    column = max(strip, 110)  # wide enough for its heading
    x_key, x_product = label, label + column + 16
    x_score = x_product + column + 16
    x_weight = x_score + 70
    top = 48
    vector_scale = float(max(np.abs(query).max(), np.abs(keys).max(), 1e-6))
    product_scale = float(max(np.abs(products).max(), 1e-6))
    body = [
        _text(x_key, 34, "query q / key k"),
        _text(x_product, 34, "q × k"),
        _text(x_score, 34, "q·k score"),
        _text(x_weight, 34, "softmax"),
        _text(label - 6, top + ROW / 2, stack.query_tokens[token], "end", ' font-weight="bold"'),
        _cells(query, vector_scale, x_key, top, cell),
    ]
    for index, key_token in enumerate(stack.key_tokens):
        y = top + (index + 1.5) * ROW
        score = "masked" if np.isneginf(scores[index]) else f"{scores[index]:.2f}"
        body += [
            _text(label - 6, y + ROW / 2, key_token, "end"),
            _cells(keys[index], vector_scale, x_key, y, cell),
            _cells(products[index], product_scale, x_product, y, cell),
            _text(x_score, y + ROW / 2, score),
            f'<rect x="{x_weight}" y="{y + 3}" width="{80 * weights[index]:.1f}" height="{ROW - 6}" fill="#1f77b4"/>',
            _text(x_weight + 84, y + ROW / 2, f"{weights[index]:.3f}"),
        ]
    title = f"{stack.label} · layer {layer} · head {head} · query “{stack.query_tokens[token]}”"
    return _document(x_weight + 130, top + (len(stack.key_tokens) + 2) * ROW, title, body)


def heatmap_pixels(row: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """RGBA patch heatmap [rows, columns, 4] of one attention row over the patches, as the image view colours it."""
    relative, _, _ = relative_maps(row)
    return HEATMAP_LUT[quantize(relative)].reshape(*grid, 4)


def image_svg(attention: ImageAttention, layer: int, head: int | str, query: int, size: int = 336) -> str:
    """The image with the heatmap of one query's attention over the patches; ``head`` may be "mean"."""
    height_px, width_px, _ = attention.pixels.shape
    scale = size / max(height_px, width_px)
    width, height = width_px * scale, height_px * scale
    head_index = attention.weights.shape[1] if head == "mean" else head
    heatmap = heatmap_pixels(patch_maps(attention)[layer, head_index, query], attention.grid)
    top = 24
    head_name = "mean of heads" if head == "mean" else f"head {head}"
    body = [
        f'<image x="0" y="{top}" width="{width:.1f}" height="{height:.1f}" preserveAspectRatio="none" href="{grey_image_url(attention.pixels)}"/>',
        f'<image x="0" y="{top}" width="{width:.1f}" height="{height:.1f}" preserveAspectRatio="none" href="{png_data_url(heatmap)}"/>',
    ]
    patch = query - attention.prefix_tokens
    if patch >= 0:
        rows, columns = attention.grid
        cell_w, cell_h = width / columns, height / rows
        x, y = (patch % columns) * cell_w, top + (patch // columns) * cell_h
        body.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{cell_w:.1f}" height="{cell_h:.1f}" fill="none" stroke="#fff" stroke-width="2"/>')
    return _document(width, top + height, f"layer {layer} · {head_name} · attention from {query_label(attention, query)}", body)


def chromium_path() -> str | None:
    """The Chromium to use, or None to let Playwright pick the browser it installed."""
    candidates = [os.environ.get("TOOLKIT_CHROMIUM")] + [shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")]
    return next((path for path in candidates if path), None)


def _screenshot(svg: str, path: Path, scale: float) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        try:
            page = browser.new_page(device_scale_factor=scale)
            page.set_content(f"<!doctype html><html><body style='margin:0'>{svg}</body></html>")
            page.locator("svg").first.screenshot(path=str(path))
        finally:
            browser.close()


def save_png(svg: str, path: Path, scale: float = 2.0) -> None:
    """Rasterise ``svg`` with headless Chromium; ``scale`` is pixels per SVG unit."""
    try:
        import playwright  # noqa: F401
    except ImportError as error:
        raise ExportError("PNG export needs the playwright package and a Chromium; save as .svg otherwise.") from error
    # Playwright's sync API refuses to run inside an asyncio loop (Jupyter): a worker thread has none.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as worker:
        try:
            worker.submit(_screenshot, svg, path, scale).result()
        except Exception as error:
            raise ExportError(f"Could not rasterise the SVG with Chromium ({error}). Set $TOOLKIT_CHROMIUM to a Chromium binary, or save as .svg.") from error
