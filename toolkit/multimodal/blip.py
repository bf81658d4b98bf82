"""BLIP: captioning (ViT + a text decoder that cross-attends to the image) and visual question answering
(ViT -> question encoder that cross-attends to the image -> answer decoder that cross-attends to the question)."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn as nn

from ..errors import InputError, warn
from ..explanation import Explanation
from ..images import original_geometry
from ..methods import Method
from ..text import read_texts
from .base import MultimodalAdapter, image_heatmap, reject_unknown, string_list, to_numpy
from ..core import engine
from .captioning import CaptioningAdapter, patch_content, patch_layout, processor_parts
from .clip import pair_grid, shown_images


def load_blip(name: str, **kwargs):
    """The BLIP head the checkpoint was saved with (captioning or VQA), with eager attention, and its processor."""
    from transformers import AutoConfig, AutoProcessor, BlipForConditionalGeneration, BlipForQuestionAnswering

    architectures = AutoConfig.from_pretrained(name).architectures or []
    vqa = "BlipForQuestionAnswering" in architectures
    model_class = BlipForQuestionAnswering if vqa else BlipForConditionalGeneration
    return model_class.from_pretrained(name, attn_implementation="eager", **kwargs), AutoProcessor.from_pretrained(name)


class BlipCaptioningAdapter(CaptioningAdapter):
    family = "blip-captioning"
    examples = "Hugging Face BlipForConditionalGeneration (Salesforce/blip-image-captioning-*)"
    model_types = ("blip",)

    @classmethod
    def load(cls, name: str, **kwargs):
        return load_blip(name, **kwargs)

    def patch_size(self) -> int:
        return self.model.config.vision_config.patch_size

    def prompt_ids(self) -> list[int]:
        return [self.model.config.text_config.bos_token_id]  # BLIP's generate starts from BOS ([DEC]) alone

    def end_ids(self) -> set[int]:
        return {self.model.config.text_config.sep_token_id}  # what BLIP's generate passes as eos_token_id

    def generate(self, pixels: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        return self.model.generate(pixel_values=pixels, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)

    def text_logits(self, pixels, input_ids, attention_mask):
        return self.model(pixel_values=pixels, input_ids=input_ids, attention_mask=attention_mask).logits


@contextlib.contextmanager
def output_of(module: nn.Module) -> Iterator[list]:
    """Collect the outputs of ``module`` while the block runs (the stock VQA forward returns no logits)."""
    outputs: list = []
    handle = module.register_forward_hook(lambda mod, args, output: outputs.append(output))
    try:
        yield outputs
    finally:
        handle.remove()


class BlipVQAAdapter(MultimodalAdapter):
    """``explain(image=..., question=..., answer=None, max_new_tokens=10)``: one Explanation per
    (image, question) pair, image-major, like CLIP's pairs; a single image and question give one.

    The target is log p(answer | image, question), summed over the answer's tokens (the end token is not
    part of it): the greedy answer of the stock ``generate`` by default, or ``answer`` (one for all pairs, or
    one per pair) by teacher forcing. Relevance is read at the answer decoder's rows that predict the answer's
    tokens, averaged (for the usual one-token answer: the BOS row). ``heatmap`` = R^{answer,image} there, over
    the patches; ``tokens`` / ``scores`` = the question's tokens and R^{answer,question} there. The image
    relevance reaches the answer through the question encoder's states (the third-modality chain of
    RelevanceState.cross_attention). Baselines: the question encoder's last cross-attention to the image,
    read at the question's first token (the state BLIP's encoder summarises into), and the answer decoder's
    last cross-attention to the question, at the answer rows. The methods read at a stream's input (AttnLRP,
    CP-LRP, gradient x input, integrated gradients) give the patches' relevance at the image encoder's first layer
    (the LRP rules' methods: per pixel, at the patch embedding's input) and the question's at the question
    encoder's, for the whole log p(answer) (the sum of its tokens' logits under the
    rules); the path methods run the model again from those inputs, teacher-forced on the answer.

    Questions and answers longer than the text positions are cut, with a warning naming the words left out
    (``text`` is the part of the question read); words outside the vocabulary are named in a warning too.

    BLIP's text layers do not pass the encoder attention mask to their cross-attention (transformers 5.x),
    so the answer decoder would attend to question padding: pairs run in groups of equal question length,
    unpadded, one forward and one backward per group (usually one: a question asked of many images).
    """

    family = "blip-vqa"
    task = "visual question answering"
    examples = "Hugging Face BlipForQuestionAnswering (Salesforce/blip-vqa-*)"
    model_types = ("blip",)
    readings = (("answer", "question", False),)  # the image: see image_relevance
    text_keyword, per_pair, reruns = "question", ("answer",), True

    @classmethod
    def load(cls, name: str, **kwargs):
        return load_blip(name, **kwargs)

    def _answer_ids(self, answer: Any, count: int, tokenizer: Any) -> list[list[int]]:
        answers = string_list(answer, "answer")
        if not isinstance(answer, str) and len(answers) != count:
            raise InputError(f"{len(answers)} answers given for {count} (image, question) pairs: "
                             "pass one per pair, or one for all.")
        limit = self.answer_positions()
        read_texts(tokenizer, answers, limit=limit, what="Answer", add_special_tokens=False)
        ids = tokenizer(answers, add_special_tokens=False, truncation=True, max_length=limit)["input_ids"]
        return ids * count if isinstance(answer, str) else ids

    def answer_positions(self) -> int:
        """How many answer tokens the decoder reads: its positions less the BOS it starts from."""
        return self.model.config.text_config.max_position_embeddings - 1

    def _explain_group(self, method: Method, pixels: torch.Tensor, question_ids: torch.Tensor,
                       answers: list[list[int]] | None, max_new_tokens: int) -> list[tuple]:
        """(answer ids, heatmap, question-token relevance, log p(answer)) of pairs whose questions have the
        same length: one stock ``generate`` if no answer is given, then one forward and one backward."""
        if answers is None:
            limit = self.answer_positions()
            with torch.no_grad():
                generated = self.model.generate(input_ids=question_ids, pixel_values=pixels, do_sample=False,
                                                max_new_tokens=min(max_new_tokens, limit), num_beams=1)
            end = self.model.config.text_config.sep_token_id
            answers = [s[:s.index(end)] if end in s else s for s in generated[:, 1:].tolist()]
            if max_new_tokens > limit and any(len(a) == limit for a in answers):
                warn(f"An answer fills the answer decoder's {limit} positions without ending: it is cut there "
                     f"(max_new_tokens={max_new_tokens} reaches beyond them).")
        if not all(answers):
            raise InputError("An answer has no tokens to explain (the model ended it at once, or it was empty).")
        batch, length = len(answers), 1 + max(len(a) for a in answers)
        bos, pad = self.model.config.text_config.bos_token_id, self.model.decoder_pad_token_id or 0
        decoder_ids = torch.tensor([[bos] + a + [pad] * (length - 1 - len(a)) for a in answers], device=self.device)
        decoder_mask = torch.tensor([[1] * (1 + len(a)) + [0] * (length - 1 - len(a)) for a in answers],
                                    device=self.device)
        answer_rows = torch.tensor([[1.0] * len(a) + [0.0] * (length - len(a)) for a in answers], device=self.device)
        answer_rows = answer_rows / answer_rows.sum(-1, keepdim=True)  # mean over the rows predicting the answer
        next_ids = torch.roll(decoder_ids, -1, dims=1)

        chosen = {}

        def decode(times: int = 1):
            """The answer decoder's outputs for the group repeated ``times`` times, and the answer tokens' rows."""
            with output_of(self.model.text_decoder) as decoded:
                self.model(input_ids=question_ids.repeat(times, 1), pixel_values=pixels.repeat(times, 1, 1, 1),
                           decoder_input_ids=decoder_ids.repeat(times, 1),
                           decoder_attention_mask=decoder_mask.repeat(times, 1))
            return decoded[0], next_ids.repeat(times, 1)[..., None], (answer_rows > 0).repeat(times, 1)

        def answer_log_p(decoded, tokens, rows):
            return (decoded.logits.float().log_softmax(-1).gather(-1, tokens)[..., 0] * rows).sum(-1)

        def run():
            """log p(answer); under LRP rules the objective is the sum of its tokens' logits (AttnLRP explains logits)."""
            decoded, tokens, rows = decode()
            chosen["log_p"] = answer_log_p(decoded, tokens, rows)
            token_logits = decoded.logits.float().gather(-1, tokens)[..., 0]
            return decoded, (token_logits * rows).sum(-1) if method.rules else chosen["log_p"]

        def rerun(times: int) -> torch.Tensor:
            """log p(answer) (R*B, 1) of the group repeated R times (the path methods, teacher-forced)."""
            return answer_log_p(*decode(times))[:, None]

        captured = self.run(method, run, rerun=rerun)
        captured.targets = torch.zeros(batch, dtype=torch.long, device=self.device)  # rerun's one column
        image_tokens, question_length = captured.probs[0].shape[-1], question_ids.shape[1]
        grid, prefix = patch_layout(pixels, self.model.config.vision_config.patch_size, image_tokens)
        sizes = {"image": image_tokens, "question": question_length, "answer": length}
        first = torch.zeros(batch, dtype=torch.long, device=self.device)
        answer_tokens = decoder_mask.bool()
        question = torch.ones(batch, question_length, dtype=torch.bool, device=self.device)
        patches = patch_content(batch, image_tokens, prefix, self.device)
        if engine.route(method.reads, captured.sites, "answer", "image") is not None:
            image_rel = self.relevance(method, captured, "answer", "image", answer_rows, answer_tokens, patches,
                                       sizes=sizes)
        else:  # no attention runs from the answer to the image: the question encoder's view of it, at its first token
            image_rel = self.relevance(method, captured, "question", "image", first, question, patches, sizes=sizes)
        if engine.route(method.reads, captured.sites, "answer", "question") == "input":  # one reading for all rows
            question_rel = self.relevance(method, captured, "answer", "question", answer_rows, answer_tokens, question,
                                          sizes=sizes)
        else:
            question_rel = sum(answer_rows[:, t, None] * self.relevance(method, captured, "answer", "question",
                                                                        first + t, answer_tokens, question, sizes=sizes)
                               for t in range(length))
        heatmaps = [image_heatmap(row, prefix, grid) for row in to_numpy(image_rel)]
        return list(zip(answers, heatmaps, to_numpy(question_rel), to_numpy(chosen["log_p"])))

    def explain(self, method: Method, target: Any, image: Any = None, question: Any = None, answer: Any = None,
                max_new_tokens: int = 10, **unknown) -> Explanation | list[Explanation]:
        reject_unknown(self.family, "image=, question=, answer= and max_new_tokens=", unknown)
        self.check_method(method)
        if target is not None:
            raise InputError("BLIP VQA explains an answer: name it with answer='...', not target.")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be a positive integer; got {max_new_tokens!r}.")
        single = not isinstance(image, (list, tuple)) and isinstance(question, str)
        images, questions = self.images(image), string_list(question, "question")
        pairs = pair_grid(images, questions)
        image_processor, tokenizer = processor_parts(self.processor, self.family)
        pixels = image_processor(images=images, return_tensors="pt")["pixel_values"]
        pixels = pixels.to(self.device, next(self.model.parameters()).dtype)[[i for i, _ in pairs]]
        limit = self.model.config.text_config.max_position_embeddings
        read = read_texts(tokenizer, questions, limit=limit, what="Question")
        encoded = tokenizer(questions, truncation=True, max_length=limit)["input_ids"]
        question_ids = [encoded[q] for _, q in pairs]
        answers = None if answer is None else self._answer_ids(answer, len(pairs), tokenizer)
        results: list = [None] * len(pairs)
        for length in sorted({len(ids) for ids in question_ids}):
            members = [b for b, ids in enumerate(question_ids) if len(ids) == length]
            group = self._explain_group(method, pixels[members],
                                        torch.tensor([question_ids[b] for b in members], device=self.device),
                                        None if answers is None else [answers[b] for b in members], max_new_tokens)
            for b, result in zip(members, group):
                results[b] = result
        shown = shown_images(pixels, pairs, image_processor.image_mean, image_processor.image_std)
        geometry = [original_geometry(image, image_processor) for image in images]
        explanations = []
        for (i, q), ids, (answer_ids, heatmap, scores, log_p) in zip(pairs, question_ids, results):
            text = tokenizer.decode(answer_ids).strip()  # the tokens explained, [UNK] included
            explanations.append(Explanation(
                method=method.name, model=self.name, target=q, label=text, probability=float(np.exp(log_p)),
                scores=scores.astype(np.float32), tokens=tokenizer.convert_ids_to_tokens(ids),
                heatmap=heatmap.astype(np.float32), image=shown[i], text=read[q], outputs={"answer": text},
                options=method.options(), **geometry[i]))
        return explanations[0] if single else explanations
