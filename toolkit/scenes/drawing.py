"""Rasterise shapes as exact boolean masks and paint them.

Shapes are tested at pixel centres with no anti-aliasing, so a mask is exactly the set of pixels
painted in the object's colour: the ground truth has no fuzzy border to argue about.
"""
from __future__ import annotations

import numpy as np

# The dark phase of a texture keeps the hue but drops the brightness, so the colour stays nameable.
TEXTURE_SHADE = 0.7
CROSS_ARM_SHARE = 1 / 3  # arm width as a share of the extent: thick enough to read at small sizes
# The share of its square each shape fills, to size shapes by area.
FILL_SHARES: dict[str, float] = {
    "circle": np.pi / 4,
    "square": 1.0,
    "triangle": 0.5,
    "cross": 1 - (1 - CROSS_ARM_SHARE) ** 2,
}


def shape_mask(shape: str, left: int, top: int, extent: int, image_size: int) -> np.ndarray:
    """Pixels covered by ``shape`` drawn in the ``extent``-sided square at (``left``, ``top``).

    What lies outside the image is cut. Triangles point up; dashes are horizontal bars a third as tall as long.
    """
    mask = np.zeros((image_size, image_size), dtype=bool)
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + extent, image_size), min(top + extent, image_size)
    if x0 >= x1 or y0 >= y1:
        return mask
    half = extent / 2
    # Pixel centres relative to the shape's centre.
    dx = (np.arange(x0, x1) + 0.5 - (left + half))[None, :]
    dy = (np.arange(y0, y1) + 0.5 - (top + half))[:, None]
    if shape in ("circle", "dot"):
        inside = dx**2 + dy**2 <= half**2
    elif shape == "square":
        inside = np.ones((y1 - y0, x1 - x0), dtype=bool)
    elif shape == "triangle":
        depth = dy + half  # distance below the apex
        inside = np.abs(dx) <= depth / 2
    elif shape == "cross":
        arm = extent * CROSS_ARM_SHARE / 2
        inside = (np.abs(dx) <= arm) | (np.abs(dy) <= arm)
    elif shape == "dash":
        inside = np.broadcast_to(np.abs(dy) <= extent / 6, (y1 - y0, x1 - x0))
    else:
        raise ValueError(f"no rasteriser for shape {shape!r}")
    mask[y0:y1, x0:x1] = inside
    return mask


def texture_pattern(texture: str, image_size: int, period: int) -> np.ndarray:
    """Where a texture's dark phase falls, over the whole image (objects take their own pixels)."""
    ys, xs = np.indices((image_size, image_size))
    if texture == "stripes":
        return ((xs + ys) // period) % 2 == 1
    if texture == "checks":
        return (xs // period + ys // period) % 2 == 1
    raise ValueError(f"no pattern for texture {texture!r}")


def paint(canvas: np.ndarray, mask: np.ndarray, rgb: tuple[int, int, int], texture: str, period: int) -> None:
    """Paint ``mask`` on the HxWx3 uint8 ``canvas`` in ``rgb``, textured unless ``texture`` is plain."""
    canvas[mask] = rgb
    if texture != "plain":
        dark = mask & texture_pattern(texture, canvas.shape[0], period)
        canvas[dark] = np.round(np.asarray(rgb) * TEXTURE_SHADE).astype(np.uint8)
