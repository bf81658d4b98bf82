"""Image classifiers with a patch embedding (Vision Transformers of Hugging Face, timm, or any model an image family
declares): reading pictures, the patch grid, and pixel relevance through the patch embedding."""
from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from ..core import lrp
from ..core.capture import Recorder
from ..errors import InputError, warn
from ..families import Family, quirks
from ..families.declaration import logits_of
from ..images import channels_first, check_image, image_items, original_geometry, to_rgb
from .base import Batch, DeclaredAdapter


class ImageClassifierAdapter(DeclaredAdapter):
    """An image classifier with a patch embedding: images in, a patch grid of relevance out. Its family says where
    the patch embedding and prefix tokens live; its source (Hugging Face, timm) how pictures are read."""

    modality = "image"

    def __init__(self, model: nn.Module, processor: Any, declaration: Family):
        self.images = quirks.SOURCES[declaration.get("source", "hf")](model)
        super().__init__(model, processor, declaration)
        self._patch_conv = self.layout.patch_embedding()
        self._prefix_tokens = self.layout.prefix_tokens()

    def patch_conv(self) -> nn.Conv2d:
        return self._patch_conv

    def prefix_tokens(self) -> torch.Tensor:
        """Learned tokens placed before the patches (class, distillation, register), shaped (1, P, D)."""
        return self._prefix_tokens

    def check_processor(self) -> None:
        self.processor = self.images.checked_processor(self.processor, self.wrong_processor)

    def preprocess(self, images: list) -> torch.Tensor:
        if self.processor is None:
            self.processor = self.images.default_processor()
        if callable(getattr(self.processor, "preprocess", None)):  # Hugging Face image processors
            return self.processor(images=images, return_tensors="pt")["pixel_values"]
        return torch.stack([self.processor(image) for image in images])  # timm / torchvision transforms

    def normalisation(self) -> tuple[np.ndarray, np.ndarray]:
        return self.images.normalisation(self.processor)

    def input_size(self) -> tuple[int, int] | None:
        """(height, width) of the pixel_values the model reads; None when it reads any size (or does not say)."""
        return self.images.input_size()

    @functools.cached_property
    def labels(self) -> dict[int, str]:
        """Read once: timm's ImageNet descriptions take tens of milliseconds to load, and every explanation asks
        for its label."""
        named = self.images.labels()
        return super().labels if named is None else named

    def logits(self, batch: Batch) -> torch.Tensor:
        return logits_of(self.layout.forward_pixels(batch.model_inputs["pixel_values"]))

    @property
    def num_prefix_tokens(self) -> int:
        return self.prefix_tokens().shape[1]

    def check_inputs(self, items: list, text_pair: list | None) -> None:
        for index, item in enumerate(items):
            check_image(item, index)

    def prepare(self, inputs: Any, text_pair: Any = None, first_index: int = 0) -> Batch:
        """A batch from images (PIL images, arrays, paths, image tensors; one, a list of them, or a 4-d array or
        tensor) or pixel_values: a normalised float tensor of the model's input size, or any one passed as
        ``{"pixel_values": tensor}``."""
        if text_pair is not None:
            raise InputError("An image classifier takes no text_pair.")
        if isinstance(inputs, Mapping):
            pixels, originals = self._given_pixel_values(inputs), []
        else:
            pixels, originals = self._read_images(image_items(inputs), first_index)
        pixels = pixels.to(self.device, dtype=next(self.model.parameters()).dtype)
        stride = self.patch_conv().stride
        grid = (pixels.shape[2] // stride[0], pixels.shape[3] // stride[1])
        count = self.num_prefix_tokens + grid[0] * grid[1]
        token_mask = torch.ones(pixels.shape[0], count, dtype=torch.bool, device=self.device)
        content_mask = token_mask.clone()
        content_mask[:, : self.num_prefix_tokens] = False
        samples = [{"image": image, "grid": grid} for image in self._displayable(pixels)]
        for sample, geometry in zip(samples, originals):
            sample.update(geometry)
        return Batch({"pixel_values": pixels}, token_mask, content_mask, samples)

    def _read_images(self, items: list, first_index: int) -> tuple[torch.Tensor, list[dict]]:
        """(pixel_values, the original geometry of each image) for a list of images and pixel_values tensors."""
        read = [self._pixel_values_or_image(item, index) for index, item in enumerate(items, start=first_index)]
        images = [item for item in read if not torch.is_tensor(item)]
        processed = self.preprocess(images) if images else None
        expected = self.input_size()
        if processed is not None and expected is not None and tuple(processed.shape[-2:]) != expected:
            raise InputError(f"The processor gives {_size(processed.shape[-2:])} images but this model reads "
                             f"{_size(expected)}: pass the model's own processor.")
        queue = iter(() if processed is None else processed)
        pixels = [item if torch.is_tensor(item) else next(queue) for item in read]
        if len({tuple(p.shape) for p in pixels}) > 1:
            raise InputError("The pixel_values in one call have different sizes "
                             f"({', '.join(sorted({_size(p.shape[-2:]) for p in pixels}))}): explain them in "
                             "separate calls.")
        dtype = next(self.model.parameters()).dtype
        return torch.stack([p.to(dtype) for p in pixels]), [
            {} if torch.is_tensor(item) else original_geometry(item, self.processor) for item in read]

    def _pixel_values_or_image(self, item: Any, index: int) -> torch.Tensor | Image.Image:
        """A tensor the model reads as it is (3xHxW), or the RGB image ``item`` holds.

        An integer tensor is an image. A float 3xHxW tensor with a negative value is normalised pixel_values, which
        must be of the model's input size. One without (what torchvision's ToTensor() gives) is an image when the
        processor normalises, read with a warning; it is read as it is only when it is of the model's size and
        the processor does not normalise, which makes the two readings the same. Other layouts are images."""
        if not torch.is_tensor(item):
            return to_rgb(item, index)
        if not item.is_floating_point() or not channels_first(tuple(item.shape)) or item.shape[0] != 3:
            return to_rgb(item, index)
        if not bool(torch.isfinite(item).all()):
            return to_rgb(item, index)  # refused there, naming the NaN pixels
        expected, size = self.input_size(), tuple(item.shape[-2:])
        fits = expected is None or size == expected
        if bool((item < 0).any()):
            if not fits:
                raise InputError(f"Image #{index}: pixel_values are {_size(size)} but this model reads "
                                 f"{_size(expected)} images: preprocess them to {_size(expected)} with the model's "
                                 "processor, or pass the image itself (a PIL image, an array, a path or an "
                                 "unnormalised tensor) to have it resized.")
            return item
        if fits and not self._normalises():
            return item
        size_note = "" if fits else f" is {_size(size)}, not the {_size(expected)} this model reads, and"
        warn(f"Image #{index}: the float tensor{size_note} has no negative value, so it is read as an unprocessed "
             "image, like an array (values in 0..1, as torchvision's ToTensor() gives, or in 0..255), and "
             "preprocessed by the model's processor (resized, normalised). To have a tensor read as pixel_values "
             'as it is, pass {"pixel_values": tensor}.')
        return to_rgb(item, index)

    def _normalises(self) -> bool:
        """Whether the processor changes pixel values in 0..1 (a mean or std other than 0 and 1). Without a
        processor, a tensor of the model's size is taken as prepared: it is read as it is."""
        if self.processor is None or getattr(self.processor, "do_normalize", True) is False:
            return False
        mean, std = self.normalisation()
        return not (np.allclose(mean, 0.0) and np.allclose(std, 1.0))

    def _given_pixel_values(self, inputs: Mapping) -> torch.Tensor:
        """``{"pixel_values": tensor}``: the model's input as given, (B, 3, H, W) or (3, H, W)."""
        unknown = sorted(set(inputs) - {"pixel_values"})
        if unknown or "pixel_values" not in inputs:
            raise InputError(f"An image classifier takes {{'pixel_values': tensor}}; got the keys {sorted(inputs)}.")
        given = torch.as_tensor(inputs["pixel_values"])
        pixels = given.unsqueeze(0) if given.dim() == 3 else given
        if pixels.dim() != 4 or pixels.shape[1] != 3 or not pixels.is_floating_point():
            raise InputError("pixel_values must be a float tensor shaped (B, 3, H, W) or (3, H, W); got "
                             f"{given.dtype} {tuple(given.shape)}.")
        if not bool(torch.isfinite(pixels).all()):
            raise InputError("pixel_values hold NaN or infinite values: there is no image to read.")
        expected = self.input_size()
        if expected is not None and tuple(pixels.shape[-2:]) != expected:
            raise InputError(f"pixel_values are {_size(pixels.shape[-2:])} but this model reads {_size(expected)} "
                             "images: preprocess them with the model's processor, or pass the images themselves.")
        return pixels

    def _displayable(self, pixels: torch.Tensor) -> list[np.ndarray]:
        """The images as the model saw them (after resizing and cropping), as uint8 RGB arrays."""
        mean, std = self.normalisation()
        data = pixels.detach().float().cpu().numpy().transpose(0, 2, 3, 1) * std + mean
        return list(np.clip(data * 255.0 + 0.5, 0, 255).astype(np.uint8))

    def input_modules(self) -> list[nn.Module]:
        return [self.patch_conv()]

    def input_relevance(self, rec: Recorder, first_layer_relevance: torch.Tensor, batch: Batch,
                        rules: lrp.PropagationRules) -> torch.Tensor:
        """Pixel relevance (B, H, W): through the position-embedding addition (the rules' residual rule), then the
        z^B rule on the patch conv."""
        conv = self.patch_conv()
        call = rec.call(conv)
        patches = lrp.working(call.output)
        b, d, gh, gw = patches.shape
        prefix = lrp.working(self.prefix_tokens()).expand(b, -1, -1)
        tokens = torch.cat([prefix, patches.flatten(2).transpose(1, 2)], dim=1)
        layer_input = lrp.working(rec.call(self.spec.layers[0].block, self.spec.layers[0].call).input)
        r_tokens, _ = rules.residual(tokens, layer_input - tokens, first_layer_relevance)
        r_patches = r_tokens[:, self.num_prefix_tokens:].transpose(1, 2).reshape(b, d, gh, gw)
        with torch.no_grad():
            pixels = lrp.patch_embedding_zb(lrp.working(call.input), _working_conv(conv), r_patches)
        return pixels.sum(dim=1)


def _size(height_width) -> str:
    return "x".join(str(int(side)) for side in height_width)


def _working_conv(conv: nn.Conv2d) -> nn.Conv2d:
    dtype = lrp.working_dtype(conv.weight.dtype)
    if conv.weight.dtype == dtype:
        return conv
    copy = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                     conv.dilation, conv.groups, bias=False).to(conv.weight.device)
    copy.weight.data = conv.weight.detach().to(dtype)
    return copy
