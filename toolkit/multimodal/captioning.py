"""Captioning: the relevance behind every token of a generated or given caption (Chefer et al., ICCV 2021).

Step t's target is log p(token_t | image, earlier tokens), read from the logits at the decoder position just
before token t. Each step needs its own backward pass, so the caption is replicated once per step and every
replica carries its own objective: one forward and one backward serve all steps of all captions of a call.
A causal decoder's later tokens change nothing at an earlier position (neither its output nor, with zero
gradient there, the gradient-weighted maps the rules use), so every replica holds the whole caption: a given
caption is explained exactly as the same tokens were during generation.
"""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import InputError, warn
from ..explanation import CaptionStep, Explanation
from ..images import original_geometry, pixel_token_scores
from ..methods import Method
from ..text import read_texts, warn_cut
from ..core.engine import Pass
from ..generation import StepBatch, rows_of, step_scores
from .base import MultimodalAdapter, image_heatmap, reject_unknown, to_numpy
from .clip import shown_images


@dataclass
class ImageTextProcessor:
    """An image processor and a tokenizer that ship separately (VisionEncoderDecoder checkpoints)."""

    image_processor: Any
    tokenizer: Any


# --- helpers shared with BLIP VQA ------------------------------------------------------------------
def processor_parts(processor: Any, family: str) -> tuple[Any, Any]:
    image_processor, tokenizer = (getattr(processor, "image_processor", None), getattr(processor, "tokenizer", None))
    if image_processor is None or tokenizer is None:
        raise InputError(f"{family} needs a processor with an image processor and a tokenizer: "
                         "Explainer(model, processor) or Explainer.from_pretrained(name).")
    return image_processor, tokenizer


def patch_layout(pixels: torch.Tensor, patch_size: int, image_tokens: int) -> tuple[tuple[int, int], int]:
    """(patch grid, number of prefix tokens such as [CLS]) of a ViT-style image encoder's sequence."""
    grid = (pixels.shape[-2] // patch_size, pixels.shape[-1] // patch_size)
    return grid, image_tokens - grid[0] * grid[1]


def image_token_names(prefix: int, grid: tuple[int, int]) -> list[str]:
    names = ["[CLS]" if j == 0 else f"[prefix{j}]" for j in range(prefix)]
    return names + [f"patch({r},{c})" for r in range(grid[0]) for c in range(grid[1])]


def id_set(value: Any) -> set[int]:
    return set() if value is None else {int(v) for v in (value if isinstance(value, (list, tuple)) else [value])}


def patch_content(batch: int, image_tokens: int, prefix: int, device: torch.device) -> torch.Tensor:
    content = torch.ones(batch, image_tokens, dtype=torch.bool, device=device)
    content[:, :prefix] = False
    return content


class CaptioningAdapter(MultimodalAdapter):
    """An image encoder and a causal text decoder; subclasses say how to generate and where attention lives.

    ``explain(image=..., caption=None, max_new_tokens=20)`` gives one Explanation per image: ``caption``,
    ``steps`` (one CaptionStep per caption token: its image heatmap, the relevance ``text_scores`` of the
    tokens before it, prompt/BOS included), ``heatmap`` = the mean of the steps' heatmaps, and ``scores``
    = the mean over steps of the relevance of every image-encoder token ([CLS] first, then patches). Under the LRP
    rules' methods the heatmaps are per pixel (input x gradient at the pixels) and ``scores`` their per-patch sums.
    ``probability`` = exp of the summed step log-probabilities (the caption's probability, end token not
    included). The end-of-caption token is not a step: a caption is explained token by token (a caption
    the model ends at once has no steps, and no heatmap).

    A caption has at most as many tokens as the decoder has positions after the prompt. A longer given caption
    is cut to them with a warning naming the words left out, rather than refused: the decoder being causal,
    the steps kept are explained exactly as within the whole caption; ``caption`` is the part explained. Words
    outside the vocabulary are named in a warning (the model reads them as the unknown token).
    """

    task = "image captioning"
    readings = (("text", "image", False), ("text", "text", False))
    per_pair = ("caption",)
    numbered, reruns = True, True

    # --- family specifics -------------------------------------------------------------------------
    @abstractmethod
    def patch_size(self) -> int: ...

    @abstractmethod
    def prompt_ids(self) -> list[int]:
        """The tokens a caption follows (BOS / decoder start), as the stock ``generate`` starts."""

    @abstractmethod
    def end_ids(self) -> set[int]:
        """Tokens that end a generated caption."""

    @abstractmethod
    def generate(self, pixels: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """The stock greedy ``generate``: (B, prompt + new tokens)."""

    @abstractmethod
    def text_logits(self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The stock forward's logits at the text positions (B, L, V)."""

    def step_relevance(self, method: Method, captured: Pass, steps: StepBatch, image_tokens: int,
                       prefix: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(image-encoder token relevance (S, N_image), text relevance (S, L)) of each step at its row.

        Encoder-decoder form: image self-attention, then per decoder layer causal self-attention and
        cross-attention to the image."""
        batch, length = steps.input_ids.shape
        visible = steps.attention_mask.bool() & (torch.arange(length, device=self.device) <= steps.rows[:, None])
        sizes, tokens = {"image": image_tokens, "text": length}, steps.attention_mask.bool()
        image = self.relevance(method, captured, "text", "image", steps.rows, tokens,
                               patch_content(batch, image_tokens, prefix, self.device), sizes=sizes)
        return image, self.relevance(method, captured, "text", "text", steps.rows, tokens, visible, sizes=sizes)

    # --- shared ---------------------------------------------------------------------------------------
    @property
    def tokenizer(self):
        return processor_parts(self.processor, self.family)[1]

    @property
    def pad_id(self) -> int:
        pad = getattr(self.tokenizer, "pad_token_id", None)
        return 0 if pad is None else int(pad)

    def pixel_values(self, images: list) -> torch.Tensor:
        image_processor = processor_parts(self.processor, self.family)[0]
        pixels = image_processor(images=images, return_tensors="pt")["pixel_values"]
        return pixels.to(self.device, next(self.model.parameters()).dtype)

    def caption_positions(self) -> int:
        """How many caption tokens the decoder reads: its positions less the prompt's."""
        return self.model.config.get_text_config(decoder=True).max_position_embeddings - len(self.prompt_ids())

    def generated_captions(self, pixels: torch.Tensor, max_new_tokens: int, first_index: int = 0) -> list[list[int]]:
        """Greedy captions from the stock ``generate`` (no gradients), cut at the first end token, and at the
        decoder's last position (with a warning) when ``max_new_tokens`` reaches beyond it."""
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be a positive integer; got {max_new_tokens!r}.")
        positions = self.caption_positions()
        with torch.no_grad():
            sequences = self.generate(pixels, min(max_new_tokens, positions))
        start, ends = len(self.prompt_ids()), self.end_ids()
        captions = []
        for index, sequence in enumerate(sequences[:, start:].tolist()):
            cut = next((k for k, token in enumerate(sequence) if token in ends), len(sequence))
            if cut == positions < max_new_tokens:
                warn(f"The caption of image #{first_index + index} fills the decoder's {positions} caption positions "
                     f"without ending: it is cut there (max_new_tokens={max_new_tokens} reaches beyond them).")
            captions.append(sequence[:cut])
        return captions

    def given_captions(self, caption: Any, count: int, first_index: int = 0) -> list[list[int]]:
        """Token ids of the given caption(s): a string or token ids for every image, or a list of one per image.
        A caption longer than the decoder's caption positions is cut to them, with a warning naming the words
        left out; words outside the vocabulary are named in a warning."""
        per_image = isinstance(caption, (list, tuple)) and caption and not isinstance(caption[0], (int, np.integer))
        captions = list(caption) if per_image else [caption]
        if per_image and len(captions) != count:
            raise InputError(f"{len(captions)} captions given for {count} images: pass one per image, or one for all.")
        vocab = self.model.config.get_text_config(decoder=True).vocab_size
        limit = self.caption_positions()
        token_ids = []
        for index, item in enumerate(captions, start=first_index if per_image else 0):
            if isinstance(item, str):
                if not item.strip():
                    raise InputError(f"Caption #{index} is empty.")
                read_texts(self.tokenizer, [item], limit=limit, what="Caption", first_index=index,
                           add_special_tokens=False)
                ids = self.tokenizer(item, add_special_tokens=False, truncation=True, max_length=limit)["input_ids"]
            elif isinstance(item, (list, tuple)) and all(isinstance(t, (int, np.integer)) for t in item):
                ids = [int(t) for t in item]
                if not all(0 <= t < vocab for t in ids):
                    raise InputError(f"Caption #{index} has token ids outside the vocabulary (0..{vocab - 1}).")
                if len(ids) > limit:
                    warn_cut(f"Caption #{index}", len(ids), limit, repr(self.tokenizer.decode(ids[limit:]).strip()))
                    ids = ids[:limit]
            else:
                raise InputError(f"Caption #{index} must be a string or a list of token ids; "
                                 f"got {type(item).__name__}.")
            if not ids:
                raise InputError(f"Caption #{index} has no tokens.")
            token_ids.append(ids)
        return token_ids if per_image else token_ids * count

    def explain(self, method: Method, target: Any, image: Any = None, caption: Any = None,
                max_new_tokens: int = 20, first_index: int = 0, **unknown) -> Explanation | list[Explanation]:
        """Explain every token of the greedy caption of each image, or of ``caption`` (a string or token ids,
        one for all images or one per image) by teacher forcing. A single image gives one Explanation."""
        reject_unknown(self.family, "image=, caption= and max_new_tokens=", unknown)
        self.check_method(method)
        if target is not None:
            raise InputError("Captioning explains every token of a caption; choose it with caption=..., not target.")
        single = not isinstance(image, (list, tuple))
        images = self.images(image)
        pixels = self.pixel_values(images)
        captions = (self.generated_captions(pixels, max_new_tokens, first_index) if caption is None
                    else self.given_captions(caption, len(images), first_index))
        prompt = self.prompt_ids()
        sequences = [prompt + c for c in captions]
        steps = StepBatch.build(sequences, len(prompt), self.pad_id, self.device)
        step_pixels = pixels[steps.image_index]

        chosen = {}

        def run():
            """Each step's log-probability; under LRP rules the objective is its logit (AttnLRP explains logits)."""
            logits = self.text_logits(step_pixels, steps.input_ids, steps.attention_mask)
            chosen["log_probs"], objective = step_scores(rows_of(logits, steps.rows).float(), steps.targets,
                                                         method.rules is not None)
            return logits, objective

        if len(steps):
            def rerun(times: int) -> torch.Tensor:
                logits = self.text_logits(step_pixels.repeat(times, 1, 1, 1), steps.input_ids.repeat(times, 1),
                                          steps.attention_mask.repeat(times, 1))
                return rows_of(logits, steps.rows.repeat(times)).float().log_softmax(-1)

            captured = self.run(method, run, rerun=rerun)
            captured.targets = steps.targets
            image_tokens = captured.probs[0].shape[-1]
            grid, prefix = patch_layout(pixels, self.patch_size(), image_tokens)
            image_rel, text_rel = (to_numpy(r) for r in self.step_relevance(method, captured, steps, image_tokens, prefix))
            log_probs = to_numpy(chosen["log_probs"])
        image_processor = processor_parts(self.processor, self.family)[0]
        shown = shown_images(pixels, [(i, 0) for i in range(len(images))], image_processor.image_mean,
                             image_processor.image_std)
        owners, rows = steps.image_index.tolist(), steps.rows.tolist()
        options = {**method.options(), **({"max_new_tokens": max_new_tokens} if caption is None else {})}
        explanations = []
        for i, sequence in enumerate(sequences):
            members = [s for s, owner in enumerate(owners) if owner == i]
            text = self.tokenizer.decode(sequence[len(prompt):]).strip()  # the tokens explained, [UNK] included
            common = dict(method=method.name, model=self.name, target=first_index + i, label=text, image=shown[i],
                          options=options, **original_geometry(images[i], image_processor))
            if not members:
                warn(f"The caption of image #{first_index + i} ended at once: there is no token to explain.")
                explanations.append(Explanation(probability=1.0, scores=np.zeros(0, np.float32),
                                                outputs={"caption": text, "steps": []}, **common))
                continue
            names = self.tokenizer.convert_ids_to_tokens(sequence)
            step_list = [CaptionStep(token=names[rows[s] + 1], token_id=sequence[rows[s] + 1],
                                     log_prob=float(log_probs[s]),
                                     heatmap=image_heatmap(image_rel[s], prefix, grid).astype(np.float32),
                                     text_scores=text_rel[s, :rows[s] + 1].astype(np.float32),
                                     text_tokens=names[:rows[s] + 1]) for s in members]
            mean = image_rel[members].mean(0)  # per image token, or per pixel (the LRP rules' methods)
            scores = (pixel_token_scores(mean, grid, prefix) if mean.ndim == 2 else mean).astype(np.float32)
            explanations.append(Explanation(
                probability=float(np.exp(sum(step.log_prob for step in step_list))), scores=scores,
                tokens=image_token_names(prefix, grid), heatmap=image_heatmap(mean, prefix, grid).astype(np.float32),
                outputs={"caption": text, "steps": step_list},
                **common))
        return explanations[0] if single else explanations
