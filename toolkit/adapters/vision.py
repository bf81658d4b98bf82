"""Image classifiers with a patch embedding (Vision Transformers of Hugging Face, timm, or any model an image family
declares): reading pictures, the patch grid, and pixel relevance through the patch embedding."""
from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..core import lrp
from ..core.capture import Recorder
from ..errors import InputError, warn
from ..families import Family, quirks
from ..families.declaration import logits_of
from ..images import original_geometry, to_rgb
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

    def prepare(self, inputs: Any, text_pair: Any = None, first_index: int = 0) -> Batch:
        """A batch from images (PIL images, arrays, paths, image tensors) or preprocessed pixel_values."""
        if text_pair is not None:
            raise InputError("An image classifier takes no text_pair.")
        originals = []
        if torch.is_tensor(inputs):
            pixels = inputs.unsqueeze(0) if inputs.dim() == 3 else inputs
            if pixels.dim() != 4 or pixels.shape[1] != 3:
                raise InputError(f"pixel_values must be shaped (B, 3, H, W); got {tuple(inputs.shape)}.")
            pixels = self._model_sized(pixels, first_index)
        else:
            images = inputs if isinstance(inputs, (list, tuple)) else [inputs]
            if not images:
                raise InputError("No image given.")
            rgb = [to_rgb(image, i) for i, image in enumerate(images, start=first_index)]
            pixels = self.preprocess(rgb)
            originals = [original_geometry(image, self.processor) for image in rgb]
            expected = self.input_size()
            if expected is not None and tuple(pixels.shape[-2:]) != expected:
                raise InputError(f"The processor gives {_size(pixels.shape[-2:])} images but this model reads "
                                 f"{_size(expected)}: pass the model's own processor.")
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

    def _model_sized(self, pixels: torch.Tensor, first_index: int) -> torch.Tensor:
        """A float tensor of the model's input size is its pixel_values. An integer tensor is an image: it is
        preprocessed like an array. A float tensor of another size with no negative value (so not normalised) is
        read as an image too, with a warning; a normalised one of another size is refused, naming the size the
        model reads."""
        expected, size = self.input_size(), tuple(pixels.shape[-2:])
        if pixels.is_floating_point():
            if expected is None or size == expected:
                return pixels
            if bool((pixels < 0).any()):
                raise InputError(f"pixel_values are {_size(size)} but this model reads {_size(expected)} images: "
                                 f"preprocess them to {_size(expected)} with the model's processor, or pass the image "
                                 "itself (a PIL image, an array, a path or an unnormalised tensor) to have it resized.")
            warn(f"The image tensor is {_size(size)}, not the {_size(expected)} pixel_values this model reads: it is "
                 "read as an unprocessed image (like an array: values rescaled to 0..255) and resized by the "
                 "model's processor.")
        return self.preprocess([to_rgb(image, i) for i, image in enumerate(pixels, start=first_index)])

    def _displayable(self, pixels: torch.Tensor) -> list[np.ndarray]:
        """The images as the model saw them (after resizing and cropping), as uint8 RGB arrays."""
        mean, std = self.normalisation()
        data = pixels.detach().float().cpu().numpy().transpose(0, 2, 3, 1) * std + mean
        return list(np.clip(data * 255.0 + 0.5, 0, 255).astype(np.uint8))

    def input_modules(self) -> list[nn.Module]:
        return [self.patch_conv()]

    def input_relevance(self, rec: Recorder, first_layer_relevance: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Pixel relevance (B, H, W): through the position-embedding addition, then the z^B rule on the patch conv."""
        conv = self.patch_conv()
        call = rec.call(conv)
        patches = lrp.working(call.output)
        b, d, gh, gw = patches.shape
        prefix = lrp.working(self.prefix_tokens()).expand(b, -1, -1)
        tokens = torch.cat([prefix, patches.flatten(2).transpose(1, 2)], dim=1)
        layer_input = lrp.working(rec.call(self.spec.layers[0].block, self.spec.layers[0].call).input)
        r_tokens, _ = lrp.residual_add(tokens, layer_input - tokens, first_layer_relevance)
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
