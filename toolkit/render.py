"""Pictures and HTML from relevance scores: kept apart from the methods that compute them.

Colours are scaled from zero, never min-max: a value's colour strength is |value| / max |value|, so
zero relevance is drawn as no colour (the photo, a plain word), an offset common to every value stays
visible as an even tint instead of being stretched into false contrast, and the sign decides the hue
(red positive, blue negative, as in the text view). A near-constant map is reported as flat. A map counts as
signed only when its negative part is more than ``SIGNED_SHARE`` of its peak: rounding noise (-1e-9 in a map
peaking at 0.5) neither switches the legend to a diverging scale nor paints blue.

Overlays paint on the image desaturated and lightened (:func:`muted`), so that the colours of relevance are the
only saturated colours in the picture: a red object under red relevance, or a reddish photo, cannot pass for
relevance or hide it. Zero relevance leaves that muted image untouched.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Mapping, Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .errors import InputError, warn

COLORMAPS = {"jet": cv2.COLORMAP_JET, "inferno": cv2.COLORMAP_INFERNO, "viridis": cv2.COLORMAP_VIRIDIS,
             "turbo": cv2.COLORMAP_TURBO, "hot": cv2.COLORMAP_HOT}
POSITIVE_RGB, NEGATIVE_RGB = (220, 38, 38), (37, 99, 235)  # as the text view's backgrounds
SIGN_COLORMAP = "bwr"  # the default: red for positive, blue for negative, strength as opacity (white on paper)
DEFAULT_ALPHA = 0.6  # opacity at full strength; weaker relevance is proportionally more transparent
FLAT_TOLERANCE = 0.01  # spread (max - min) below this share of max |value| makes a map "flat"
OUTSIDE_VIEW_BRIGHTNESS = 0.5  # on the original image, what the model did not see is darkened to this
SIGNED_SHARE = 1e-3  # a map is signed (diverging scale) only when its minimum is below -SIGNED_SHARE x its peak
LUMINANCE = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights: the grey of a colour
MUTED_LIGHTENING = 0.25  # share of white mixed into the grey image under an overlay


@dataclass(frozen=True)
class ColourScale:
    """How relevance values map to colours: from zero to ``peak`` = max |value|.

    ``signed`` (some value below -``SIGNED_SHARE`` x peak): a diverging scale, -peak full blue, 0 neutral,
    +peak full red. Otherwise sequential: 0 no colour, peak full colour, and negligible negative values are drawn
    as zero. ``flat``: the values hardly differ (their spread is under ``FLAT_TOLERANCE`` of the peak, or all
    are zero), so the picture carries no pattern.
    """

    signed: bool
    peak: float
    low: float
    high: float
    flat: bool

    @property
    def ends(self) -> tuple[float, float]:
        """The values at the two ends of the scale."""
        return (-self.peak if self.signed else 0.0, self.peak)

    def strengths(self, values: np.ndarray) -> np.ndarray:
        """Each value over the peak, clipped to [-1, 1] (signed) or [0, 1] (sequential: negligible negative values
        count as zero); zero when every value is zero."""
        values = np.nan_to_num(np.asarray(values, dtype=np.float32))
        if self.peak == 0:
            return np.zeros_like(values)
        return np.clip(values / np.float32(self.peak), -1.0 if self.signed else 0.0, 1.0)

    def covers(self, values: np.ndarray) -> bool:
        """Whether ``values`` lie within this scale (up to float rounding), so that it can draw them."""
        values = np.nan_to_num(np.asarray(values, dtype=np.float64))
        if not values.size:
            return True
        reach = self.peak * (1 + 1e-6)
        return values.max() <= reach and values.min() >= (-reach if self.signed else -SIGNED_SHARE * self.peak)

    @property
    def end_labels(self) -> tuple[str, str]:
        """The two ends written as the colour bar and the text legend show them."""
        low, high = self.ends
        return (f"{low:+.3g}", f"{high:+.3g}") if self.signed else ("0", f"{high:.3g}")

    @property
    def caption(self) -> str:
        """One line saying what the colours mean (and that the map is flat, when it is)."""
        if self.peak == 0:
            return "flat map: every value is 0 (nothing to show)"
        if self.signed:
            text = f"relevance from {-self.peak:+.3g} (blue) through 0 (no colour) to {self.peak:+.3g} (red)"
        else:
            text = f"relevance from 0 (no colour) to {self.peak:.3g}"
            if self.low < 0:
                text += (f"; negligible negative values (down to {self.low:.2g}, under {SIGNED_SHARE:.1%} of the "
                         "largest) drawn as 0")
        if self.flat:
            spread = (self.high - self.low) / self.peak
            text += f"; flat map: all values {self.low:.4g} to {self.high:.4g} (spread {spread:.1%} of the largest)"
        return text


def colour_scale(values: np.ndarray, flat_tolerance: float = FLAT_TOLERANCE) -> ColourScale:
    """The zero-based colour scale of a map or of per-token scores (NaN counted as zero)."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float64))
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    peak = max(abs(low), abs(high))
    return ColourScale(signed=low < -SIGNED_SHARE * peak, peak=peak, low=low, high=high,
                       flat=peak == 0 or (high - low) <= flat_tolerance * peak)


def shared_colour_scale(maps) -> ColourScale:
    """One colour scale for several maps drawn side by side (the steps of a caption), so that a map with little
    relevance looks nearly empty next to a strong one instead of being stretched to full colour."""
    return colour_scale(np.concatenate([np.ravel(np.asarray(values, dtype=np.float64)) for values in maps]))


def muted(image: np.ndarray) -> np.ndarray:
    """The image as overlays paint on it (float RGB): grey (its luminance) mixed with ``MUTED_LIGHTENING`` of white,
    so that only the relevance colours are saturated and even red on a dark red object stands out."""
    grey = np.asarray(image, dtype=np.float32)[..., :3] @ np.float32(LUMINANCE)
    grey = grey * np.float32(1 - MUTED_LIGHTENING) + np.float32(255 * MUTED_LIGHTENING)
    return np.repeat(grey[..., None], 3, axis=-1)


def _colours(strengths: np.ndarray, scale: ColourScale, colormap: str | None) -> np.ndarray:
    """RGB colour (float) of each strength. ``"bwr"`` colours by sign only; an OpenCV map runs from zero
    (sequential scale) or from -peak through zero at its middle to +peak (signed scale)."""
    colormap = colormap or SIGN_COLORMAP
    if colormap == SIGN_COLORMAP:
        return np.where((strengths >= 0)[..., None], np.float32(POSITIVE_RGB), np.float32(NEGATIVE_RGB))
    if colormap not in COLORMAPS:
        raise InputError(f"Unknown colormap {colormap!r}; choose {SIGN_COLORMAP!r} or one of {sorted(COLORMAPS)}.")
    table = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], COLORMAPS[colormap])[:, 0, ::-1]
    position = (strengths + 1) / 2 if scale.signed else strengths
    return table[np.clip(np.round(position * 255), 0, 255).astype(np.int64)].astype(np.float32)


def _resample(values: np.ndarray, height: int, width: int, crop_box: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``values`` (a grid covering ``crop_box`` = x0, y0, x1, y1 in pixels; the whole image when None) sampled
    bilinearly at every pixel centre of a ``height`` x ``width`` image, and the mask of pixels inside the box."""
    x0, y0, x1, y1 = (0.0, 0.0, float(width), float(height)) if crop_box is None else map(float, crop_box)
    rows, cols = values.shape
    xs = (np.arange(width, dtype=np.float32) + 0.5 - x0) / (x1 - x0)
    ys = (np.arange(height, dtype=np.float32) + 0.5 - y0) / (y1 - y0)
    map_x = np.broadcast_to(xs * cols - 0.5, (height, width)).astype(np.float32)
    map_y = np.broadcast_to((ys * rows - 0.5)[:, None], (height, width)).astype(np.float32)
    sampled = cv2.remap(values.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = ((ys >= 0) & (ys <= 1))[:, None] & ((xs >= 0) & (xs <= 1))[None, :]
    return sampled, inside


def heatmap_overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = DEFAULT_ALPHA, colormap: str | None = None,
                    crop_box: np.ndarray | None = None, colour_bar: bool = False,
                    scale: ColourScale | None = None) -> Image.Image:
    """The heatmap upsampled (bilinear) to the image and painted from zero (see :class:`ColourScale`) over the
    image muted to grey (:func:`muted`), so that the relevance colours are the only saturated ones.

    Each pixel's opacity is ``alpha`` x |strength|, so weak relevance lets the photo show. The default colours
    are red for positive and blue for negative values (``"bwr"``); ``colormap`` may name an OpenCV map from
    ``COLORMAPS`` instead. ``crop_box`` (x0, y0, x1, y1 in the image's pixels) is where
    the heatmap lies when ``image`` is larger than what the model saw: pixels outside it are darkened.
    ``colour_bar=True`` attaches the scale below. ``scale`` (default: the map's own) draws several maps on one
    scale, e.g. :func:`shared_colour_scale` of a caption's steps; it must cover the map. A flat scale gives a
    warning (and says so in the bar).
    """
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must lie in [0, 1]; got {alpha}.")
    if scale is None:
        scale = colour_scale(heatmap)
    elif not scale.covers(heatmap):
        own = colour_scale(heatmap)
        raise InputError(f"The colour scale ({scale.caption}) does not cover this map ({own.caption}): build it from "
                         "every map drawn with it, e.g. render.shared_colour_scale(maps).")
    _colours(np.zeros(1, np.float32), scale, colormap)  # an unknown name fails before any work
    if scale.flat:
        warn(f"The heatmap is flat ({scale.caption}); it has no pattern to show.")
    image = np.asarray(image, dtype=np.uint8)
    height, width = image.shape[:2]
    strengths, inside = _resample(scale.strengths(heatmap), height, width, crop_box)
    opacity = (alpha * np.abs(strengths) * inside)[..., None]
    base = muted(image) * np.where(inside, 1.0, OUTSIDE_VIEW_BRIGHTNESS)[..., None]
    blended = (1 - opacity) * base + opacity * _colours(strengths, scale, colormap)
    overlay = Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8))
    return with_colour_bar(overlay, scale, alpha=alpha, colormap=colormap) if colour_bar else overlay


def region_overlay(image: np.ndarray, boxes: np.ndarray, relevance: np.ndarray, alpha: float = DEFAULT_ALPHA,
                   colormap: str | None = None, colour_bar: bool = False) -> Image.Image:
    """Region relevance painted over the image: each pixel takes the highest relevance of the boxes
    (x1, y1, x2, y2 in pixels) that cover it, pixels outside every box zero (no colour); then painted
    like a heatmap."""
    image = np.asarray(image, dtype=np.uint8)
    height, width = image.shape[:2]
    relevance = np.nan_to_num(np.asarray(relevance, dtype=np.float32))
    painted = np.full((height, width), -np.inf, dtype=np.float32)
    for (x1, y1, x2, y2), value in zip(np.asarray(boxes, dtype=np.float32), relevance):
        top, bottom = int(np.clip(np.floor(y1), 0, height)), int(np.clip(np.ceil(y2), 0, height))
        left, right = int(np.clip(np.floor(x1), 0, width)), int(np.clip(np.ceil(x2), 0, width))
        region = painted[top:bottom, left:right]
        np.maximum(region, value, out=region)
    painted[np.isneginf(painted)] = 0.0
    return heatmap_overlay(image, painted, alpha=alpha, colormap=colormap, colour_bar=colour_bar)


def colour_bar(scale: ColourScale, width: int = 256, alpha: float = DEFAULT_ALPHA, colormap: str | None = None,
               title: str = "relevance") -> Image.Image:
    """The scale as a picture: the colours (as painted on white) with the end values and zero marked,
    under a title that says when the map is flat. Put it beside an overlay, or use :func:`with_colour_bar`."""
    font_size = int(np.clip(width / 22, 9, 16))
    font = ImageFont.load_default(size=font_size)
    margin, strip_height = max(font_size // 2, 6), max(font_size, 8)
    strengths = np.linspace(-1.0 if scale.signed else 0.0, 1.0, width - 2 * margin, dtype=np.float32)
    opacity = alpha * np.abs(strengths)[:, None]
    row = (1 - opacity) * 255.0 + opacity * _colours(strengths, scale, colormap)
    strip = np.repeat(np.clip(row + 0.5, 0, 255).astype(np.uint8)[None], strip_height, axis=0)
    heading = title + (" (flat map: no pattern)" if scale.flat else "")
    title_top, strip_top = margin // 2, margin // 2 + font_size + 3
    labels_top = strip_top + strip_height + 4
    bar = Image.new("RGB", (width, labels_top + font_size + margin // 2), "white")
    bar.paste(Image.fromarray(strip), (margin, strip_top))
    draw = ImageDraw.Draw(bar)
    draw.text((margin, title_top), heading, fill=(40, 40, 40), font=font)
    draw.rectangle((margin - 1, strip_top - 1, width - margin, strip_top + strip_height), outline=(120, 120, 120))
    right_edge = width - margin - 1
    left, right = scale.end_labels
    marks = [(margin, left, "la"), (right_edge, right, "ra")]
    if scale.signed:
        marks.append(((margin + right_edge) // 2, "0", "ma"))
    for x, text, anchor in marks:
        draw.line((x, strip_top + strip_height, x, strip_top + strip_height + 3), fill=(40, 40, 40))
        draw.text((x, labels_top), text, fill=(40, 40, 40), font=font, anchor=anchor)
    return bar


MIN_DISPLAY_SIDE = 256


def with_colour_bar(picture: Image.Image, scale: ColourScale, alpha: float = DEFAULT_ALPHA,
                    colormap: str | None = None, title: str = "relevance") -> Image.Image:
    """``picture`` with :func:`colour_bar` attached below, as wide as the picture; a picture narrower than
    MIN_DISPLAY_SIDE pixels (a 64x64 scene) is enlarged to it first, so that it can be read beside its scale."""
    if picture.width < MIN_DISPLAY_SIDE:
        factor = MIN_DISPLAY_SIDE / picture.width
        picture = picture.resize((MIN_DISPLAY_SIDE, round(picture.height * factor)), Image.Resampling.NEAREST)
    bar = colour_bar(scale, width=picture.width, alpha=alpha, colormap=colormap, title=title)
    combined = Image.new("RGB", (bar.width, picture.height + bar.height), "white")
    combined.paste(picture.convert("RGB"), ((bar.width - picture.width) // 2, 0))
    combined.paste(bar, (0, picture.height))
    return combined


def _rgba(rgb: tuple[int, int, int], strength: float) -> str:
    return f"rgba({rgb[0]},{rgb[1]},{rgb[2]},{strength:.3f})"


UNKNOWN_OUTLINE = "outline:2px dashed #222;outline-offset:1px;margin:1px 4px"  # a word read as the unknown token
UNKNOWN_NOTE = ("read as the unknown token: not in the model's vocabulary, so the model cannot tell it from other "
                "unknown words")


def scale_legend_html(scale: ColourScale, unknown: bool = False) -> str:
    """An inline legend for :func:`scores_html`: the colour ramp between its end values, zero marked; with
    ``unknown``, what the dashed outline of unknown words means."""
    ramp = (f"{_rgba(NEGATIVE_RGB, 1)},{_rgba(NEGATIVE_RGB, 0)},{_rgba(POSITIVE_RGB, 1)}" if scale.signed
            else f"{_rgba(POSITIVE_RGB, 0)},{_rgba(POSITIVE_RGB, 1)}")
    zero = ('<span style="position:absolute;left:50%;top:-3px;height:18px;border-left:1px solid #444"></span>'
            if scale.signed else "")
    left, right = scale.end_labels
    flat = " — flat: the scores hardly differ" if scale.flat else ""
    marked = (f'<span><span class="unknown-key" style="{UNKNOWN_OUTLINE};padding:0 3px">word</span> '
              f'{html.escape(UNKNOWN_NOTE)}</span>' if unknown else "")
    return (f'<div class="legend" style="font-size:12px;color:#444;margin-top:6px;display:flex;flex-wrap:wrap;'
            f'align-items:center;gap:6px"><span>{left}</span><span style="position:relative;display:inline-block;'
            f'width:160px;height:12px;border:1px solid #bbb;background:linear-gradient(to right,{ramp})">{zero}</span>'
            f'<span>{right}</span><span>relevance from zero{" (0 in the middle)" if scale.signed else ""}: '
            f'red positive, blue negative{flat}</span>{marked}</div>')


def heading_html(details: Mapping[str, str], title: str = "") -> str:
    """A page section's heading: an optional bold ``title`` over a table of ``details`` (input, model, method,
    target, ...), as :meth:`Explanation.heading` gives them."""
    heading = (f'<div style="font-size:13px;font-weight:bold;margin-bottom:4px">{html.escape(title)}</div>'
               if title else "")
    if details:
        rows = "".join(f'<tr><th style="text-align:left;font-weight:normal;padding:0 10px 0 0;color:#666">'
                       f'{html.escape(key)}</th><td style="padding:0">{html.escape(value)}</td></tr>'
                       for key, value in details.items())
        heading += (f'<table class="heading" style="font-size:13px;line-height:1.4;margin-bottom:6px;'
                    f'border-collapse:collapse">{rows}</table>')
    return heading


def scores_html(pieces: list[str], scores: np.ndarray, title: str = "",
                details: Mapping[str, str] | None = None, unknown: Sequence[bool] | None = None) -> str:
    """Inline HTML: each piece on a red (positive) or blue (negative) background, opacity |score| / max |score|
    (from zero, so similar scores look alike and a zero looks plain), a heading (``title`` and a table of
    ``details`` such as the input, model and target) and a legend with the scale. Pieces flagged in ``unknown``
    (words the model read as its unknown token) get a dashed outline and say so on hover: their colour is the
    unknown token's, not the word's."""
    scores = np.asarray(scores, dtype=np.float64)
    scale = colour_scale(scores)
    unknown = list(unknown) if unknown is not None else [False] * len(pieces)
    spans = []
    for piece, score, strength, is_unknown in zip(pieces, scores, scale.strengths(scores), unknown):
        rgb = POSITIVE_RGB if score >= 0 else NEGATIVE_RGB
        hint, outline, marker = ((f" · {UNKNOWN_NOTE}", f";{UNKNOWN_OUTLINE}", ' class="unknown"') if is_unknown
                                 else ("", "", ""))
        spans.append(
            f'<span{marker} title="{score:.4g}{html.escape(hint)}" '
            f'style="background:{_rgba(rgb, abs(float(strength)))};padding:1px 3px;margin:1px;border-radius:3px;'
            f'display:inline-block{outline}">{html.escape(piece)}</span>'
        )
    return (f'<div style="font-family:sans-serif;line-height:1.9">{heading_html(details or {}, title)}'
            f'<div>{"".join(spans)}</div>{scale_legend_html(scale, any(unknown))}</div>')
