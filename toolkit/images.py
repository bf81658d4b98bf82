"""Turning whatever image a user has into the RGB picture a model expects."""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from .errors import InputError, warn

MAX_FILE_PIXELS = 250_000_000  # a file of more pixels is refused before it is decoded (PIL's bomb check)
MAX_SIDE = 4096  # larger images are downscaled first: no model here reads more, and memory stays bounded
IMAGE_KINDS = ("pass a PIL image, a file path, or a numpy array or tensor shaped HxW, HxWxC or CxHxW (C = 1, 3 "
               "or 4; several images: a list, or a 4-d array or tensor)")
ORIENTATION = 0x0112  # the EXIF tag
_ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def to_rgb(image: Any, index: int = 0) -> Image.Image:
    """An 8-bit RGB PIL image from a PIL image, array, tensor or file path, whatever its mode or bit depth.

    Transparency is composited on white; 16-bit and float data are rescaled to 0..255; tensors are read as
    arrays (HxW, HxWxC or CxHxW, C being 1, 3 or 4); a file's or PIL image's EXIF orientation is applied (a
    photo taken sideways is read upright); images larger than MAX_SIDE on a side are downscaled, keeping the
    aspect ratio. A file that is not a readable image (empty, truncated, another format) is an InputError
    naming it, and so are pixels that are NaN or infinite.
    """
    check_image(image, index)
    if isinstance(image, (str, os.PathLike)):
        image = _open(Path(image), index)
    if torch.is_tensor(image):
        image = image.detach().cpu()
        image = (image if image.dtype == torch.uint8 else image.float()).numpy()
    if isinstance(image, np.ndarray):
        image = _array_to_pil(image, index)
    elif isinstance(image, Image.Image):
        image = _upright(_decoded(image, index))
    if image.width == 0 or image.height == 0:
        raise InputError(f"Image #{index} is empty ({image.width}x{image.height}).")
    if max(image.size) > MAX_SIDE:
        scale = MAX_SIDE / max(image.size)
        warn(f"Image #{index} is {image.width}x{image.height}; downscaled to a {MAX_SIDE}-pixel side.")
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.LANCZOS if image.mode in ("RGB", "RGBA", "L") else Image.Resampling.NEAREST)
    return _mode_to_rgb(image)


def check_image(image: Any, index: int = 0) -> None:
    """The checks of :func:`to_rgb` that read no pixels: the kind of object, and for a path, that it names a file
    here (a URL is not downloaded)."""
    if isinstance(image, (str, os.PathLike)):
        if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*://", str(image)):
            raise InputError(f"Image #{index}: {image} is a URL, and images are not downloaded here: save the file "
                             "first (e.g. curl -o image.jpg URL) and pass its path.")
        path = Path(image)
        if not path.is_file():
            raise InputError(f"Image #{index}: {'a folder, not an image file,' if path.is_dir() else 'no file'} at "
                             f"{path}.")
    elif not (isinstance(image, (Image.Image, np.ndarray)) or torch.is_tensor(image)):
        raise InputError(f"Image #{index} is of type {type(image).__name__}; {IMAGE_KINDS}.")


def image_items(images: Any) -> list:
    """The images in ``images``, one per item: a list or tuple, a 4-d array or tensor (a batch: BxCxHxW or
    BxHxWxC), or a single image (a 2-d or 3-d array or tensor, a PIL image, a path)."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise InputError("No image given: the list is empty.")
        return list(images)
    if isinstance(images, np.ndarray) or torch.is_tensor(images):
        if images.ndim == 4:
            return list(images)
        if images.ndim not in (2, 3):
            raise InputError(f"The image array or tensor has shape {tuple(images.shape)}; {IMAGE_KINDS}.")
    return [images]


def processor_normalisation(processor: Any, model: Any = None) -> tuple | None:
    """The (mean, std) that ``processor`` normalises images with: a Hugging Face image processor's own ((0, 1) when
    it does not normalise), a torchvision/timm transform's Normalize step, or, with no processor, a timm model's
    pretrained config; None when it cannot be known. Undoing it shows an image as the model saw it."""
    if processor is None:
        config = getattr(model, "pretrained_cfg", None) or {}
        return (config["mean"], config["std"]) if "mean" in config and "std" in config else None
    image_processor = getattr(processor, "image_processor", processor)
    if hasattr(image_processor, "image_mean"):
        if not getattr(image_processor, "do_normalize", True):
            return (0.0, 1.0)
        mean, std = image_processor.image_mean, getattr(image_processor, "image_std", None)
        return None if mean is None or std is None else (mean, std)
    steps = getattr(processor, "transforms", [])
    normalise = next((step for step in steps if hasattr(step, "mean") and hasattr(step, "std")), None)
    return (normalise.mean, normalise.std) if normalise is not None else (0.0, 1.0) if steps else None


def image_size(image: Any) -> tuple[int, int] | None:
    """(width, height) of an image, upright, given as a PIL image, an HxW(xC) or CxHxW array or a readable file;
    None otherwise (tensors, which may be preprocessed, and files that are not readable images: those are
    reported when they are explained)."""
    if isinstance(image, Image.Image):
        return _upright_size(image)
    if isinstance(image, np.ndarray) and image.ndim in (2, 3):
        height, width = image.shape[1:3] if channels_first(image.shape) else image.shape[:2]
        return int(width), int(height)
    if isinstance(image, (str, os.PathLike)) and Path(image).is_file():
        try:
            with Image.open(image) as opened:
                size = _upright_size(opened)
                opened.draft("RGB", (1, 1))  # JPEG: decode at the smallest scale, which still reads every byte
                opened.load()
                return size
        except Exception:  # noqa: BLE001 - unreadable files are reported by to_rgb with their path
            return None
    return None


def channels_first(shape: tuple[int, ...]) -> bool:
    """Whether an image array or tensor of ``shape`` is CxHxW (C = 1, 3 or 4) rather than HxW or HxWxC."""
    return len(shape) == 3 and shape[0] in (1, 3, 4) and shape[-1] not in (1, 3, 4)


def _upright_size(image: Image.Image) -> tuple[int, int]:
    width, height = image.size
    return (height, width) if image.getexif().get(ORIENTATION) in _ROTATED else (width, height)


def _upright(image: Image.Image) -> Image.Image:
    """``image`` turned as its EXIF orientation says (a phone photo taken sideways), or itself when it has none."""
    if image.getexif().get(ORIENTATION, 1) == 1:
        return image
    return ImageOps.exif_transpose(image)


def _open(path: Path, index: int) -> Image.Image:
    """The image in ``path``, decoded now (PIL opens lazily, so a broken file would otherwise fail later, deep
    inside a processor) and upright."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, MAX_FILE_PIXELS  # ours for this read, then PIL's again
    try:
        try:
            with warnings.catch_warnings():  # PIL only warns between one and two times its limit
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise InputError(f"Image #{index}: {path} has more than {MAX_FILE_PIXELS:,} pixels; downscale it "
                             "first (the models read a few hundred pixels a side).") from error
        except (OSError, SyntaxError, ValueError) as error:  # UnidentifiedImageError is an OSError
            raise _unreadable(index, path, error) from error
        image.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at reduced size directly
        return _upright(_decoded(image, index, path))
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _decoded(image: Image.Image, index: int, path: Any = None) -> Image.Image:
    """``image`` with its pixels decoded (a truncated or corrupt file fails here, with its path named)."""
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as error:
        if path is not None:  # opened here: closed here
            image.close()
        raise _unreadable(index, path or getattr(image, "filename", None) or "the PIL image", error) from error
    return image


def _unreadable(index: int, path: Any, error: Exception) -> InputError:
    return InputError(f"Image #{index}: {path} is not a readable image ({error}). Check that the file is complete "
                      "and in an image format (JPEG, PNG, ...).")


def _mode_to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        data = np.asarray(image, dtype=np.float64)
        return Image.fromarray(_rescale(data)).convert("RGB")
    if image.mode == "P" or image.mode in ("LA", "PA", "La"):
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "RGBa"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def _rescale(data: np.ndarray) -> np.ndarray:
    """Map integer or float data to uint8: by its dtype's range where known, else by its own min/max."""
    finite = np.nan_to_num(data.astype(np.float64))
    low, high = float(finite.min()), float(finite.max())
    if high <= 1.0 and low >= 0.0:
        scaled = finite * 255.0
    elif low >= 0 and high <= 255:
        scaled = finite
    elif low >= 0 and high <= 65535:
        scaled = finite / 257.0
    else:
        scaled = (finite - low) / max(high - low, 1e-12) * 255.0
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def _array_to_pil(array: np.ndarray, index: int) -> Image.Image:
    if array.size == 0:
        raise InputError(f"Image #{index} is an empty array (shape {array.shape}).")
    if channels_first(array.shape):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise InputError(f"Image #{index} has shape {tuple(array.shape)}; {IMAGE_KINDS}.")
    if array.dtype.kind not in "biuf":
        raise InputError(f"Image #{index} is an array of {array.dtype}; pixels must be numbers.")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InputError(f"Image #{index} has NaN or infinite pixels ({int((~np.isfinite(array)).sum())} of "
                         f"{array.size} values): there is no image to read. Check how the array was made.")
    data = array if array.dtype == np.uint8 else _rescale(array)
    return Image.fromarray(data)


def original_geometry(image: Image.Image, processor: Any) -> dict[str, np.ndarray]:
    """``original_image`` (uint8 RGB) and ``crop_box`` (:func:`view_box`) for an Explanation, so that an overlay
    can be drawn on the image as given; empty when the processor's geometry is unknown."""
    box = view_box(processor, image)
    return {} if box is None else {"original_image": np.asarray(image, dtype=np.uint8), "crop_box": box}


def view_box(processor: Any, image: Image.Image) -> np.ndarray | None:
    """Where the model's view of ``image`` lies in it: (x0, y0, x1, y1) in the image's pixels, float32.

    The view is what ``processor`` makes of the image (resize, then centre crop; the box reaches outside the
    image where the crop pads). Known: Hugging Face image processors and torchvision-style ``Compose``
    transforms (timm, open_clip). None when the processor is neither or does something else to the geometry.
    """
    from transformers.image_processing_utils import BaseImageProcessor

    processor = getattr(processor, "image_processor", processor)
    if isinstance(processor, BaseImageProcessor):
        return _hf_view_box(processor, image)
    if isinstance(getattr(processor, "transforms", None), (list, tuple)):
        return _composed_view_box(processor.transforms, image)
    return None


def _crop_start(size: int, crop: int, rounded: bool) -> int:
    """First pixel of a centred crop of ``crop`` pixels out of ``size``; negative where the crop pads
    (Hugging Face truncates half the excess, torchvision rounds it)."""
    if crop > size:
        return -((crop - size) // 2)
    return int(round((size - crop) / 2.0)) if rounded else int((size - crop) / 2.0)


def _cropped(box: np.ndarray, size: tuple[int, int], crop: tuple[int, int], rounded: bool) -> np.ndarray:
    """``box`` (covering a frame of ``size`` = (height, width)) narrowed to that frame's centred ``crop``."""
    x0, y0, x1, y1 = box
    (height, width), (crop_height, crop_width) = size, crop
    left, top = _crop_start(width, crop_width, rounded), _crop_start(height, crop_height, rounded)
    per_x, per_y = (x1 - x0) / width, (y1 - y0) / height
    return np.array([x0 + left * per_x, y0 + top * per_y, x0 + (left + crop_width) * per_x,
                     y0 + (top + crop_height) * per_y], dtype=np.float32)


def _hf_view_box(processor: Any, image: Image.Image) -> np.ndarray:
    """The whole image when the processor only resizes (and pads); with a centre crop, the resized size is read
    from the processor itself (run without its crop and padding) and the crop placed as Hugging Face places it."""
    whole = np.array([0, 0, image.width, image.height], dtype=np.float32)
    crop = getattr(processor, "crop_size", None)
    if not getattr(processor, "do_center_crop", False) or crop is None:
        return whole
    resized = processor(images=[Image.new("RGB", image.size)], do_center_crop=False, do_pad=False,
                        do_normalize=False, do_rescale=False, return_tensors="pt")["pixel_values"]
    return _cropped(whole, tuple(resized.shape[-2:]), (crop["height"], crop["width"]), rounded=False)


def _composed_view_box(transforms: list, image: Image.Image) -> np.ndarray | None:
    """Follow a torchvision-style pipeline: a resize keeps the box, a centre crop narrows it, and any other
    step must keep the size (ToTensor, Normalize, colour conversion); else the geometry is unknown."""
    box = np.array([0, 0, image.width, image.height], dtype=np.float32)
    probe: Any = Image.new("RGB", image.size)
    size = (image.height, image.width)
    for transform in transforms:
        probe = transform(probe)
        new_size = (probe.height, probe.width) if isinstance(probe, Image.Image) else tuple(probe.shape[-2:])
        kind = type(transform).__name__
        if "CenterCrop" in kind:
            box = _cropped(box, size, new_size, rounded=True)
        elif new_size != size and "Resize" not in kind:
            return None
        size = new_size
    return box


def patch_relevance(heatmap: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """A heatmap on the patch grid: a per-pixel map (full LRP, the LRP rules' input x gradient) summed over each patch, so that every method is
    scored by removing the same units."""
    heatmap = np.asarray(heatmap, dtype=np.float64)
    if heatmap.shape == tuple(grid):
        return heatmap
    rows, cols = grid
    if heatmap.shape[0] % rows or heatmap.shape[1] % cols:
        raise InputError(f"a heatmap of shape {heatmap.shape} does not pool onto the patch grid {grid}")
    return heatmap.reshape(rows, heatmap.shape[0] // rows, cols, heatmap.shape[1] // cols).sum(axis=(1, 3))


def pixel_token_scores(heatmap: np.ndarray, grid: tuple[int, int], prefix: int) -> np.ndarray:
    """Per-token scores of a per-pixel map: zero for the ``prefix`` tokens (class, registers), which hold no
    pixels, then each patch's sum in row-major order."""
    return np.concatenate([np.zeros(prefix), patch_relevance(heatmap, grid).ravel()])
