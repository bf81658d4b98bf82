"""ViLT visual question answering: one transformer over [question tokens; image [CLS]; image patches].

A single self-attention stream (modality ``joint``), so every classifier method applies as it does to a
ViT or BERT classifier: the relevance row of the pooled token (position 0, the question's [CLS]) read over
the question tokens (``scores``) and over the patches (``heatmap``, on the patch grid).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import InputError, UnsupportedModelError
from ..explanation import Explanation
from ..images import original_geometry
from ..labels import find_label, ranked_labels
from ..methods import Method
from ..text import encoded_words, read_texts, unknown_token_mask, word_scores
from ..core import engine
from ..core.propagation import one_hot
from .base import MultimodalAdapter, reject_unknown, string_list, to_numpy
from .captioning import processor_parts
from .clip import shown_images, special_tokens


# --- helpers shared with LXMERT ----------------------------------------------------------------
def pair_up(visuals: int, questions: int) -> list[tuple[int, int]]:
    """(visual input, question) pairs: one image for many questions, one question for many images,
    or two lists of equal length paired in order."""
    if visuals == 1 or questions == 1 or visuals == questions:
        return [(k if visuals > 1 else 0, k if questions > 1 else 0) for k in range(max(visuals, questions))]
    raise InputError(f"{visuals} images and {questions} questions: pass one image for all questions, "
                     "one question for all images, or as many images as questions (paired in order).")


def check_load(name: str, architecture: str) -> None:
    """Refuse checkpoints of the same family saved without a VQA head (their answer layer would be random)."""
    from transformers import AutoConfig

    saved = AutoConfig.from_pretrained(name).architectures or []
    if saved and architecture not in saved:
        raise UnsupportedModelError(f"{name!r} is a {', '.join(saved)} checkpoint; the toolkit explains "
                                    f"{architecture} (a visual question answering head).")


def answer_targets(target: Any, count: int, labels: dict[int, str], num_answers: int) -> list[int | None]:
    """One answer index per pair (None: the predicted answer), from None, an index, an answer name (in any
    case), or a list of these, one per pair."""
    targets = list(target) if isinstance(target, (list, tuple)) else [target] * count
    if len(targets) != count:
        raise InputError(f"{len(targets)} targets given for {count} (image, question) pairs.")
    examples = ", ".join(repr(labels.get(i, str(i))) for i in range(min(num_answers, 8)))
    resolved: list[int | None] = []
    for item in targets:
        if isinstance(item, str):
            item = find_label(item, labels, "answer")
        elif item is not None and (isinstance(item, bool) or not isinstance(item, (int, np.integer))):
            raise InputError(f"target must be an answer index, an answer name or None; got {item!r}.")
        if item is not None and not 0 <= int(item) < num_answers:
            raise InputError(f"target {item} is out of range: this model has {num_answers} answers "
                             f"(0..{num_answers - 1}: {examples}, ...).")
        resolved.append(None if item is None else int(item))
    return resolved


def chosen_answers(targets: list[int | None], logits: torch.Tensor) -> torch.Tensor:
    """The answer index of each pair: the given one, or the highest-scoring answer."""
    predicted = logits.detach().argmax(-1)
    return torch.tensor([int(p) if t is None else t for t, p in zip(targets, predicted.tolist())],
                        device=logits.device)


def answer_labels(config: Any, num_answers: int) -> dict[int, str]:
    """config.id2label when it names every answer (it may hold generic names of another head's size)."""
    id2label = getattr(config, "id2label", None) or {}
    return {int(k): v for k, v in id2label.items()} if len(id2label) == num_answers else {}


class ViltVQAAdapter(MultimodalAdapter):
    """``explain(image=..., question=..., target=None)``: one Explanation per (image, question) pair
    (a single one for one image and one question); one forward and one backward for the batch.

    ``answer`` / ``label`` name the explained answer (the predicted one, or ``target``: an answer name or
    index); ``probability`` is its sigmoid score (ViLT's VQA head is trained as multi-label); the objective is
    its logit. ``heatmap``: relevance of the patches on the patch grid (ViLT keeps each image's aspect ratio,
    so grids need not be square); ``tokens`` / ``scores``: the question's tokens and their relevance.
    A question longer than the model's text positions is cut, with a warning naming the words left out, and
    ``text`` is the part read; words outside the vocabulary are named in a warning too.
    """

    family = "vilt-vqa"
    task = "visual question answering"
    examples = "Hugging Face ViltForQuestionAnswering (dandelin/vilt-b32-finetuned-vqa)"
    model_types = ("vilt",)
    readings = (("joint", "joint", False),)
    text_keyword, pairing, reruns = "question", "zip", True

    @classmethod
    def load(cls, name: str, **kwargs):
        from transformers import ViltForQuestionAnswering, ViltProcessor

        check_load(name, "ViltForQuestionAnswering")
        return (ViltForQuestionAnswering.from_pretrained(name, attn_implementation="eager", **kwargs),
                ViltProcessor.from_pretrained(name))

    @property
    def labels(self) -> dict[int, str]:
        return answer_labels(self.model.config, self.model.config.num_labels)

    def explain(self, method: Method, target: Any, image: Any = None, question: Any = None,
                **unknown) -> Explanation | list[Explanation]:
        reject_unknown(self.family, "image= and question=", unknown)
        self.check_method(method)
        single = not isinstance(image, (list, tuple)) and isinstance(question, str)
        images, questions = self.images(image), string_list(question, "question")
        pairs = pair_up(len(images), len(questions))
        num_answers = self.model.config.num_labels
        targets = answer_targets(target, len(pairs), self.labels, num_answers)
        image_processor, tokenizer = processor_parts(self.processor, self.family)
        visual = image_processor(images=images, return_tensors="pt")
        pixels = visual["pixel_values"].to(self.device, next(self.model.parameters()).dtype)
        pixel_mask = visual["pixel_mask"].to(self.device)
        limit = self.model.config.max_position_embeddings
        read = read_texts(tokenizer, questions, limit=limit, what="Question")
        fast = getattr(tokenizer, "is_fast", False)
        enc = tokenizer([questions[q] for _, q in pairs], padding=True, truncation=True, max_length=limit,
                        return_tensors="pt", return_offsets_mapping=fast)
        offsets = enc.get("offset_mapping")
        enc = enc.to(self.device)
        pair_pixels, pair_mask = pixels[[i for i, _ in pairs]], pixel_mask[[i for i, _ in pairs]]
        embedded = {}

        def run():
            """ViLT's embedding picks the patch tokens in a random order (torch.multinomial) and does not return
            where each came from: its own visual_embed, called here, gives the tokens and their grid positions (and,
            under the LRP rules, the graph from the pixels)."""
            image_embeds, image_mask, (patch_index, _) = self.model.vilt.embeddings.visual_embed(
                pair_pixels, pair_mask, max_image_length=self.model.config.max_image_length)
            embedded.update(embeds=image_embeds.detach(), mask=image_mask, patch_index=patch_index)
            out = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                             image_embeds=image_embeds, pixel_mask=image_mask, output_attentions=True)
            return out, out.logits.gather(1, chosen_answers(targets, out.logits)[:, None])[:, 0]

        def lrp_start(result: engine.Pass) -> dict[str, engine.LRPStart]:
            """LRP starts at the explained answer's logit and reaches the joint sequence at the pooled [CLS]."""
            logits, spec = result.outputs.logits, self.streams()["joint"]
            spec.check_head(result.recorder, logits)
            rows = one_hot(torch.zeros(len(pairs), dtype=torch.long, device=self.device),
                                enc["input_ids"].shape[1] + embedded["embeds"].shape[1])
            return {"joint": engine.LRPStart(one_hot(chosen_answers(targets, logits), logits.shape[-1]), rows,
                                             method.lowest_lrp_layer(len(spec.layers)))}

        def rerun(times: int) -> torch.Tensor:
            return self.model(input_ids=enc["input_ids"].repeat(times, 1),
                              attention_mask=enc["attention_mask"].repeat(times, 1),
                              image_embeds=embedded["embeds"].repeat(times, 1, 1),
                              pixel_mask=embedded["mask"].repeat(times, 1)).logits

        captured = self.run(method, run, lrp=lrp_start, rerun=rerun)
        captured.targets = chosen_answers(targets, captured.outputs.logits)
        answers = chosen_answers(targets, captured.outputs.logits).tolist()
        text_mask, image_mask = enc["attention_mask"].bool(), embedded["mask"].bool()
        patches = image_mask.clone()
        patches[:, 0] = False  # the image [CLS]
        special = special_tokens(tokenizer, enc["input_ids"])  # the read-out [CLS] among them
        reading = (method, captured, "joint", "joint", torch.zeros(len(pairs), dtype=torch.long, device=self.device),
                   torch.cat([text_mask, image_mask], 1), torch.cat([text_mask & ~special, patches], 1))
        relevance = self.relevance(*reading, first_layer=True)  # the question's tokens
        enc["offset_mapping"] = offsets
        length = text_mask.shape[1]
        at_pixels = self.relevance(*reading) if method.rules is not None else None
        sizes = self._sizes(pixel_mask)
        if at_pixels is not None and at_pixels.dim() == 3:  # the LRP rules' per-pixel map, the padding cut off
            heatmaps = [to_numpy(at_pixels[b, :sizes[i][0], :sizes[i][1]]) for b, (i, _) in enumerate(pairs)]
        else:
            heatmaps = [self._grid(relevance[b, length + 1:], patches[b, 1:], embedded["patch_index"][b])
                        for b in range(len(pairs))]
        shown = self._shown(pixels, sizes, image_processor)
        geometry = [original_geometry(image, image_processor) for image in images]
        probabilities, labels = to_numpy(torch.sigmoid(captured.objective)), self.labels
        explanations = []
        for b, (i, q) in enumerate(pairs):
            index = answers[b]
            name = labels.get(index, str(index))
            valid = text_mask[b].cpu().numpy()
            scores, specials = to_numpy(relevance[b, :length])[valid], to_numpy(special[b])[valid].astype(bool)
            ids = enc["input_ids"][b].cpu()[valid]
            words = encoded_words(enc, b, len(scores), specials.tolist(), (questions[q], None),
                                  unknown_token_mask(tokenizer, ids.tolist()))
            explanations.append(Explanation(
                method=method.name, model=self.name, target=index, label=name, probability=float(probabilities[b]),
                scores=scores, tokens=tokenizer.convert_ids_to_tokens(ids), special_tokens=specials,
                words=words.get("words"), unknown_words=words.get("unknown_words"),
                word_scores=word_scores(scores, words["word_pieces"]) if words else None, heatmap=heatmaps[b],
                image=shown[i], text=read[q], outputs={"answer": name}, options=method.options(), **geometry[i]))
        return explanations[0] if single else explanations

    def predict(self, top_k: int = 5, image: Any = None, question: Any = None, **unknown) -> list[tuple[str, float]]:
        """The ``top_k`` answers to one question about one image, by the sigmoid score that ``explain`` reports
        as ``probability`` (the VQA head is trained as multi-label, so the scores need not sum to one)."""
        reject_unknown(self.family, "image= and question=", unknown)
        if isinstance(image, (list, tuple)) or not isinstance(question, str):
            raise InputError("predict() takes one image and one question (a string).")
        image_processor, tokenizer = processor_parts(self.processor, self.family)
        visual = image_processor(images=self.images(image), return_tensors="pt").to(self.device)
        enc = tokenizer(string_list(question, "question"), truncation=True,
                        max_length=self.model.config.max_position_embeddings, return_tensors="pt").to(self.device)
        with torch.no_grad():
            logits = self.model(**enc, pixel_values=visual["pixel_values"].to(next(self.model.parameters()).dtype),
                                pixel_mask=visual["pixel_mask"]).logits
        return ranked_labels(logits[0].float().sigmoid().tolist(), top_k, self.labels)

    @staticmethod
    def _grid(relevance: torch.Tensor, valid: torch.Tensor, positions: torch.Tensor) -> np.ndarray:
        """Patch relevance (K,) placed on the image's patch grid by each token's (row, column)."""
        rows, cols = positions[valid, 0], positions[valid, 1]
        grid = torch.zeros(int(rows.max()) + 1, int(cols.max()) + 1, device=relevance.device)
        grid[rows, cols] = relevance[valid].float()
        return to_numpy(grid)

    @staticmethod
    def _sizes(pixel_mask: torch.Tensor) -> list[tuple[int, int]]:
        """(height, width) of each image as the model saw it, without the batch's padding."""
        return list(zip(pixel_mask.any(2).sum(1).tolist(), pixel_mask.any(1).sum(1).tolist()))

    @staticmethod
    def _shown(pixels: torch.Tensor, sizes: list[tuple[int, int]], image_processor: Any) -> list[np.ndarray]:
        """Each image as the model saw it: resized, normalisation undone, batch padding cropped off."""
        shown = shown_images(pixels, [(i, 0) for i in range(pixels.shape[0])], image_processor.image_mean,
                             image_processor.image_std)
        return [shown[i][:height, :width] for i, (height, width) in enumerate(sizes)]
