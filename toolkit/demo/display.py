"""What the demo shows of an explanation: the library's overlay and highlighted text, sized to be read, the
ground-truth outline, and the files to download. Colours and scales are the library's (``overlay()``,
``to_html()``); this module only enlarges, outlines and lays out."""
from __future__ import annotations

import html
import json
import math
import re
import shutil
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .. import render
from ..explanation import Explanation
from .scenes import GroundTruth

DISPLAY_SIDE = 256  # small model inputs (the 64x64 scenes) are enlarged to about this side
OUTLINE_RGB = (255, 255, 255)
OUTLINE_SHADOW_RGB = (0, 0, 0)


def enlargement(image: np.ndarray) -> int:
    """The whole-number factor that brings the image's longer side to about DISPLAY_SIDE (1 for large images)."""
    return max(1, round(DISPLAY_SIDE / max(image.shape[:2])))


def enlarge(image: np.ndarray, factor: int) -> np.ndarray:
    """Each pixel as a factor x factor block: the pixels the model saw, no invented detail."""
    return np.repeat(np.repeat(np.asarray(image, dtype=np.uint8), factor, axis=0), factor, axis=1)


def draw_outline(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The mask's border drawn on the image (a white line on a dark shadow, visible on any colour)."""
    height, width = image.shape[:2]
    grown = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(grown, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    thickness = max(1, round(max(height, width) / 128))
    out = np.ascontiguousarray(image.copy())
    cv2.drawContours(out, contours, -1, OUTLINE_SHADOW_RGB, thickness + 2)
    cv2.drawContours(out, contours, -1, OUTLINE_RGB, thickness)
    return out


def overlay_image(exp: Explanation, truth: GroundTruth | None = None,
                  scale: render.ColourScale | None = None) -> Image.Image:
    """The library's overlay, with its colour bar, drawn on the model's view of the image enlarged for reading,
    with the ground truth outlined. Drawn at the enlarged size, so the heatmap is interpolated there. ``scale``:
    one shared by several maps (a caption's steps), else the map's own."""
    factor = enlargement(exp.image)
    shown = replace(exp, image=enlarge(exp.image, factor)) if factor > 1 else exp
    picture = np.array(shown.overlay(colour_bar=True, scale=scale).convert("RGB"))
    if truth is not None:  # on the image part only (a scale drawn beside it is left alone)
        height, width = shown.image.shape[:2]
        picture[:height, :width] = draw_outline(picture[:height, :width], truth.mask)
    return Image.fromarray(picture)


def raw_map_image(exp: Explanation) -> Image.Image:
    """The map alone, one block per patch (or pixel): the library's colours at full opacity on white, on the
    map's own grid, enlarged without interpolation (the scale is the overlay's colour bar)."""
    grid = np.full((*exp.heatmap.shape, 3), 255, dtype=np.uint8)
    coloured = np.asarray(replace(exp, image=grid, outputs={**exp.outputs, "boxes": None}).overlay(alpha=1.0).convert("RGB"))
    return Image.fromarray(enlarge(coloured, max(1, math.ceil(DISPLAY_SIDE / max(coloured.shape[:2])))))


def map_report(exp: Explanation, truth: GroundTruth | None = None) -> str:
    """One Markdown paragraph per method: how much of the map lies on the ground truth and whether its peak does
    (when there is one), and the raw map's range, so the colours can be read as numbers."""
    heatmap = np.asarray(exp.heatmap, dtype=np.float64)
    summary = (f"Raw map {heatmap.shape[0]}×{heatmap.shape[1]}: min {heatmap.min():.3g}, max {heatmap.max():.3g}, "
               f"sum {heatmap.sum():.3g}.")
    if truth is None:
        return f"**{exp.method}**: {summary}"
    mass, hit = truth.scores(exp.heatmap)
    if math.isnan(mass):
        return f"**{exp.method}**: the map has no positive relevance, so it points nowhere. {summary}"
    if hit in (0, 1):
        peak = "inside (a hit)" if hit == 1 else "outside (a miss)"
    else:
        peak = f"inside for {hit:.0%} of its tied maxima"
    return (f"**{exp.method}**: {mass:.0%} of the positive relevance lies inside the outline "
            f"(a uniform map: {truth.chance:.0%}); the peak is {peak}. {summary}")


def deletion_report(result) -> str:
    """The deletion test of one map (a :class:`toolkit.evaluation.faithfulness.ProbeResult`), in words."""
    return (f"Deletion test: the class's probability keeps an area of {result.values['morf_auc']:.3f} as 0–90% of "
            f"the patches are removed most relevant first (lower: more faithful) and "
            f"{result.values['lerf_auc']:.3f} least relevant first (higher: more faithful).")


def text_html(exp: Explanation, caption: str | None = None) -> str:
    """The library's highlighted words (or tokens) with its heading and legend, under an optional caption."""
    body = exp.to_html(level="words" if exp.words is not None else "tokens")
    header = f'<div class="tk-caption">{html.escape(caption)}</div>' if caption else ""
    return f'<div class="tk-text">{header}{body}</div>'


def _pieces(exp: Explanation) -> tuple[list[str], np.ndarray]:
    if exp.words is not None:
        return exp.words, np.asarray(exp.word_scores, dtype=np.float64)
    return exp.tokens, np.asarray(exp.scores, dtype=np.float64)


def score_table(exps: list[Explanation], count: int = 12) -> dict:
    """The words (or tokens) with the largest |relevance| under the first method, with their signed scores under
    each method, as a Gradio Dataframe value."""
    pieces, first = _pieces(exps[0])
    order = np.argsort(-np.abs(first), kind="stable")[:count]
    columns = [_pieces(exp)[1] for exp in exps]
    return {"headers": ["word"] + [exp.method for exp in exps],
            "data": [[pieces[i]] + [round(float(scores[i]), 5) for scores in columns] for i in order]}


def slug(text: str) -> str:
    """A short file-name form of a text."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40].strip("-") or "explanation"


class OutputFolders:
    """Fresh folders for the files a request returns, under one root, each removed ``keep_seconds`` after it was
    made (Gradio copies what it serves into its own cache when the request ends, and cleans that itself)."""

    def __init__(self, root: Path | None = None, keep_seconds: float = 3600.0):
        self.root = Path(root or tempfile.mkdtemp(prefix="toolkit-demo-"))
        self.keep_seconds = keep_seconds
        self._pruned = time.monotonic()
        self._lock = threading.Lock()

    def fresh(self) -> Path:
        with self._lock:
            if time.monotonic() - self._pruned > min(self.keep_seconds, 600):
                self._pruned = time.monotonic()
                self.prune()
        self.root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=self.root))

    def prune(self) -> None:
        """Remove the folders older than ``keep_seconds``."""
        deadline = time.time() - self.keep_seconds
        for folder in self.root.glob("*"):
            if folder.is_dir() and folder.stat().st_mtime < deadline:
                shutil.rmtree(folder, ignore_errors=True)


def png_file(picture: Image.Image, name: str, folder: Path) -> str:
    """The picture as a PNG file. Pages are given files rather than images: Gradio writes an image it is given
    to a path named by its content, in place, so two identical answers at once (two users on one example) could
    send one of them a half-written file; a file it is given is copied atomically."""
    path = folder / f"{name}.png"
    picture.save(path)
    return str(path)


def download_files(exp: Explanation, stem: str, folder: Path, picture: str | None = None) -> list[str]:
    """The shown overlay (a PNG path), the explanation's saved file (.npz, reloaded by Explanation.load) and its
    JSON (every field but the pictures)."""
    stem = f"{slug(stem)}-{exp.method}"
    files = [str(exp.save(folder / f"{stem}.npz"))]
    data = {key: value for key, value in exp.to_dict().items() if key not in ("image", "original_image")}
    (folder / f"{stem}.json").write_text(json.dumps(data, default=str), encoding="utf-8")
    files.append(str(folder / f"{stem}.json"))
    return ([picture] if picture else []) + files
