"""Pictures and HTML from relevance scores: kept apart from the methods that compute them."""
from __future__ import annotations

import html

import cv2
import numpy as np
from PIL import Image

COLORMAPS = {"jet": cv2.COLORMAP_JET, "inferno": cv2.COLORMAP_INFERNO, "viridis": cv2.COLORMAP_VIRIDIS,
             "turbo": cv2.COLORMAP_TURBO, "hot": cv2.COLORMAP_HOT}


def normalise_for_display(heatmap: np.ndarray) -> np.ndarray:
    """Min-max scaling to [0, 1]; a constant map becomes all zeros."""
    heatmap = np.nan_to_num(np.asarray(heatmap, dtype=np.float32))
    low, high = float(heatmap.min()), float(heatmap.max())
    return (heatmap - low) / (high - low) if high > low else np.zeros_like(heatmap)


def heatmap_overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5, colormap: str = "jet") -> Image.Image:
    """The heatmap upsampled (bilinear) to the image, coloured with an OpenCV colormap and blended in."""
    if colormap not in COLORMAPS:
        raise ValueError(f"Unknown colormap {colormap!r}; choose one of {sorted(COLORMAPS)}.")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1]; got {alpha}.")
    image = np.asarray(image, dtype=np.uint8)
    height, width = image.shape[:2]
    scaled = cv2.resize(normalise_for_display(heatmap), (width, height), interpolation=cv2.INTER_LINEAR)
    colours = cv2.applyColorMap(np.uint8(np.round(255 * scaled)), COLORMAPS[colormap])[..., ::-1]
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours.astype(np.float32)
    return Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8))


def region_overlay(image: np.ndarray, boxes: np.ndarray, relevance: np.ndarray, alpha: float = 0.5,
                   colormap: str = "jet") -> Image.Image:
    """Region relevance painted over the image: each pixel takes the highest relevance of the boxes
    (x1, y1, x2, y2 in pixels) that cover it, pixels outside every box zero (or the lowest relevance if that is
    negative); then blended in like a heatmap."""
    image = np.asarray(image, dtype=np.uint8)
    height, width = image.shape[:2]
    relevance = np.nan_to_num(np.asarray(relevance, dtype=np.float32))
    painted = np.full((height, width), float(relevance.min(initial=0.0)), dtype=np.float32)
    for (x1, y1, x2, y2), value in zip(np.asarray(boxes, dtype=np.float32), relevance):
        top, bottom = int(np.clip(np.floor(y1), 0, height)), int(np.clip(np.ceil(y2), 0, height))
        left, right = int(np.clip(np.floor(x1), 0, width)), int(np.clip(np.ceil(x2), 0, width))
        region = painted[top:bottom, left:right]
        np.maximum(region, value, out=region)
    return heatmap_overlay(image, painted, alpha=alpha, colormap=colormap)


def scores_html(pieces: list[str], scores: np.ndarray, title: str = "") -> str:
    """Inline HTML: each piece on a red (positive) or blue (negative) background.

    Opacity is |score| / max |score| when scores have both signs; when none is negative (most
    attention methods), it is min-max scaled, so that a common offset (rollout's and the
    identity's share) does not paint every piece the same red.
    """
    scores = np.asarray(scores, dtype=np.float64)
    strengths = normalise_for_display(scores) if scores.size and scores.min() >= 0 else None
    peak = float(np.abs(scores).max()) if scores.size else 0.0
    spans = []
    for index, (piece, score) in enumerate(zip(pieces, scores)):
        if strengths is not None:
            strength = float(strengths[index])
        else:
            strength = abs(score) / peak if peak > 0 else 0.0
        rgb = "220,38,38" if score >= 0 else "37,99,235"
        spans.append(
            f'<span title="{score:.4g}" style="background:rgba({rgb},{strength:.3f});'
            f'padding:1px 3px;margin:1px;border-radius:3px;display:inline-block">{html.escape(piece)}</span>'
        )
    heading = f'<div style="font-size:12px;color:#555;margin-bottom:4px">{html.escape(title)}</div>' if title else ""
    return f'<div style="font-family:sans-serif;line-height:1.9">{heading}{"".join(spans)}</div>'
