"""Vision Transformers: the shared image handling, and the Hugging Face (ViT, DeiT) and timm families."""
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
from ..core.spec import LayerSpec, ModelSpec
from ..errors import InputError, warn
from ..images import channels_first, check_image, image_items, original_geometry, to_rgb
from .base import Batch, ModelAdapter


def _second(output: Any) -> torch.Tensor | None:
    return output[1] if isinstance(output, (tuple, list)) and len(output) > 1 else None


def _identity(output: torch.Tensor) -> torch.Tensor:
    return output


class VisionTransformerAdapter(ModelAdapter):
    """Images in, a patch grid of relevance out; a subclass says where patches, prefix tokens and layers live."""

    modality = "image"

    # --- what a family declares -------------------------------------------------------------
    def patch_conv(self) -> nn.Conv2d:
        raise NotImplementedError

    def prefix_tokens(self) -> torch.Tensor:
        """Learned tokens placed before the patches (class, distillation, register), shaped (1, P, D)."""
        raise NotImplementedError

    def preprocess(self, images: list) -> torch.Tensor:
        raise NotImplementedError

    def normalisation(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def run(self, pixel_values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def input_size(self) -> tuple[int, int] | None:
        """(height, width) of the pixel_values the model reads; None when it reads any size (or does not say)."""
        return None

    # --- shared -------------------------------------------------------------------------------
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
        """Whether the processor changes pixel values in 0..1 (a mean or std other than 0 and 1)."""
        if getattr(self.processor, "do_normalize", True) is False:
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

    def logits(self, batch: Batch) -> torch.Tensor:
        return self.run(batch.model_inputs["pixel_values"])

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


class HFViTAdapter(VisionTransformerAdapter):
    """Hugging Face ViTForImageClassification and DeiT (with or without the distillation head)."""

    family = "hf-vit"
    examples = "Hugging Face ViT and DeiT image classifiers"

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        config = getattr(model, "config", None)
        return getattr(config, "model_type", None) in ("vit", "deit") and "ImageClassification" in type(model).__name__

    @property
    def backbone(self) -> nn.Module:
        return self.model.base_model

    def patch_conv(self) -> nn.Conv2d:
        return self.backbone.embeddings.patch_embeddings.projection

    def prefix_tokens(self) -> torch.Tensor:
        emb = self.backbone.embeddings
        tokens = [emb.cls_token] + ([emb.distillation_token] if hasattr(emb, "distillation_token") else [])
        return torch.cat(tokens, dim=1)

    def check_processor(self) -> None:
        from transformers.image_processing_utils import BaseImageProcessor

        image_processor = getattr(self.processor, "image_processor", self.processor)
        if image_processor is not None and not isinstance(image_processor, BaseImageProcessor):
            raise self.wrong_processor("its image processor (AutoImageProcessor.from_pretrained(name)), or None "
                                       "for ViT's default,")
        self.processor = image_processor

    def normalisation(self):
        proc = self.processor
        mean = getattr(proc, "image_mean", None) or [0.5, 0.5, 0.5]
        std = getattr(proc, "image_std", None) or [0.5, 0.5, 0.5]
        return np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)

    def preprocess(self, images: list) -> torch.Tensor:
        if self.processor is None:
            from transformers import ViTImageProcessor

            size = self.model.config.image_size
            warn(f"No image processor given: resizing to {size}x{size} and normalising with mean=std=0.5 "
                 "(ViT's default). Pass the model's processor for exact preprocessing.")
            self.processor = ViTImageProcessor(size={"height": size, "width": size})
        return self.processor(images=images, return_tensors="pt")["pixel_values"]

    def run(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits

    def input_size(self) -> tuple[int, int]:
        size = self.model.config.image_size
        return tuple(size) if isinstance(size, (list, tuple)) else (size, size)

    def build_spec(self) -> ModelSpec:
        heads = self.model.config.num_attention_heads
        layers = [
            LayerSpec(block=layer, attention=layer.attention, extract_probs=_second, num_heads=heads,
                      query=layer.attention.q_proj, key=layer.attention.k_proj, value=layer.attention.v_proj,
                      out_proj=layer.attention.o_proj, fc1=layer.mlp.fc1, fc2=layer.mlp.fc2, norm_first=True)
            for layer in self.backbone.layers
        ]
        if hasattr(self.model, "classifier"):
            return ModelSpec(layers=layers, head=[self.model.classifier])
        return ModelSpec(layers=layers, head=[self.model.cls_classifier],
                         lrp_blocker="the prediction averages two heads (class and distillation tokens)")


class TimmViTAdapter(VisionTransformerAdapter):
    """timm VisionTransformer (ViT, DeiT, DeiT-distilled) with the standard Block and Attention modules."""

    family = "timm-vit"
    examples = "timm ViT and DeiT (vit_*, deit_*)"

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        try:
            from timm.layers import Attention
            from timm.models.vision_transformer import VisionTransformer
        except ImportError:
            return False
        return isinstance(model, VisionTransformer) and all(isinstance(b.attn, Attention) for b in model.blocks)

    @functools.cached_property
    def labels(self) -> dict[int, str]:
        """Class names from the model's pretrained config (``label_names``), else timm's ImageNet descriptions
        when the classifier's size matches an ImageNet subset, else none. Read once: ImageNet's descriptions
        take tens of milliseconds to load, and every explanation asks for its label."""
        names = (getattr(self.model, "pretrained_cfg", None) or {}).get("label_names")
        if names:
            return {index: str(name) for index, name in enumerate(names)}
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(self.model)
        if subset is None:
            return {}
        info = ImageNetInfo(subset)
        return {index: info.index_to_description(index) for index in range(self.model.num_classes)}

    def patch_conv(self) -> nn.Conv2d:
        return self.model.patch_embed.proj

    def prefix_tokens(self) -> torch.Tensor:
        tokens = [t for t in (self.model.cls_token, getattr(self.model, "dist_token", None),
                              getattr(self.model, "reg_token", None)) if t is not None]
        if not tokens:
            return self.model.pos_embed.new_zeros(1, 0, self.model.embed_dim)
        return torch.cat(tokens, dim=1)

    def check_processor(self) -> None:
        processor = self.processor
        if processor is not None and (not callable(processor) or hasattr(processor, "convert_ids_to_tokens")
                                      or hasattr(processor, "preprocess")):
            raise self.wrong_processor("an image transform (timm.data.create_transform(**timm.data."
                                       "resolve_data_config({}, model=model))), or None for the model's own,")

    def _data_config(self) -> dict:
        from timm.data import resolve_data_config

        return resolve_data_config({}, model=self.model)

    def normalisation(self):
        cfg = self._data_config()
        return np.asarray(cfg["mean"], dtype=np.float32), np.asarray(cfg["std"], dtype=np.float32)

    def preprocess(self, images: list) -> torch.Tensor:
        if self.processor is None:
            from timm.data import create_transform

            self.processor = create_transform(**self._data_config())
        return torch.stack([self.processor(image) for image in images])

    def run(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values)

    def input_size(self) -> tuple[int, int] | None:
        embed = self.model.patch_embed
        fixed = embed.img_size is not None and getattr(embed, "strict_img_size", True)
        return tuple(embed.img_size) if fixed and not getattr(self.model, "dynamic_img_size", False) else None

    def build_spec(self) -> ModelSpec:
        layers = []
        for block in self.model.blocks:
            attn = block.attn
            blocker = None
            if not (isinstance(attn.q_norm, nn.Identity) and isinstance(attn.k_norm, nn.Identity)
                    and isinstance(attn.norm, nn.Identity) and getattr(attn, "gate", None) is None):
                blocker = "attention with QK-norm or gating has no LRP rule here"
            layers.append(LayerSpec(block=block, attention=attn.attn_drop, extract_probs=_identity,
                                    num_heads=attn.num_heads, qkv=attn.qkv, out_proj=attn.proj,
                                    attn_branch=block.ls1, fc1=block.mlp.fc1, fc2=block.mlp.fc2,
                                    mlp_branch=block.ls2, norm_first=True, lrp_blocker=blocker))
        model_blocker = None
        if getattr(self.model, "dist_token", None) is not None:
            model_blocker = "the prediction averages two heads (class and distillation tokens)"
        elif self.model.global_pool != "token":
            model_blocker = f"global_pool={self.model.global_pool!r}; LRP reads a single class token"
        return ModelSpec(layers=layers, head=[self.model.head], lrp_blocker=model_blocker)
