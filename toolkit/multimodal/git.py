"""Hugging Face GitForCausalLM (GIT): a CLIP-like image encoder whose tokens ([CLS] kept), projected, open one
joint transformer sequence [image tokens; text tokens]: image tokens attend to image tokens, text tokens to all
image tokens and to the earlier text."""
from __future__ import annotations

import torch

from ..core.engine import Pass
from ..methods import Method
from ..generation import StepBatch
from .captioning import CaptioningAdapter, id_set, patch_content


class GitCaptioningAdapter(CaptioningAdapter):
    """The image encoder is one stream ("image"); the joint transformer another ("joint") whose first
    positions are copies of the image encoder's outputs, so they inherit its relevance (RelevanceState.link)
    before the first joint layer. The heatmap is R^{joint,image} and the text scores R^{joint,joint} over the
    text positions, both at the step's row. Being one joint stream, GIT also supports rollout (and reads
    raw attention / attention Grad-CAM) over the joint transformer alone."""

    family = "git"
    examples = "Hugging Face GitForCausalLM (microsoft/git-base, microsoft/git-base-coco)"
    model_types = ("git",)
    readings = (("joint", "image", True), ("joint", "joint", False))

    @classmethod
    def load(cls, name: str, **kwargs):
        from transformers import AutoProcessor, GitForCausalLM

        model = GitForCausalLM.from_pretrained(name, attn_implementation="eager", **kwargs)
        return model, AutoProcessor.from_pretrained(name)

    def patch_size(self) -> int:
        return self.model.config.vision_config.patch_size

    def prompt_ids(self) -> list[int]:
        return [self.model.generation_config.bos_token_id or self.model.config.bos_token_id]

    def end_ids(self) -> set[int]:
        return id_set(self.model.generation_config.eos_token_id) or {self.model.config.eos_token_id}

    def generate(self, pixels: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        return self.model.generate(pixel_values=pixels, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)

    def text_logits(self, pixels, input_ids, attention_mask):
        logits = self.model(pixel_values=pixels, input_ids=input_ids, attention_mask=attention_mask).logits
        return logits[:, -input_ids.shape[1]:]

    def step_relevance(self, method: Method, captured: Pass, steps: StepBatch, image_tokens: int,
                       prefix: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch, length = steps.input_ids.shape
        rows = steps.rows + image_tokens
        positions = torch.arange(image_tokens, device=self.device).expand(batch, -1)
        visible_text = steps.attention_mask.bool() & (torch.arange(length, device=self.device) <= steps.rows[:, None])
        image_mask = torch.ones(batch, image_tokens, dtype=torch.bool, device=self.device)
        tokens = torch.cat([image_mask, steps.attention_mask.bool()], dim=1)
        patches = patch_content(batch, image_tokens, prefix, self.device)
        content = torch.cat([patches, visible_text], dim=1)
        sizes = {"image": image_tokens, "joint": image_tokens + length}
        links = {next(i for i, site in enumerate(self.sites()) if site.query == "joint"): ("joint", "image", positions)}
        image = self.relevance(method, captured, "joint", "image", rows, tokens, patches, sizes=sizes, links=links,
                               positions=positions, stream_content=content)
        joint = self.relevance(method, captured, "joint", "joint", rows, tokens, content, sizes=sizes, links=links)
        return image, joint[:, image_tokens:]
