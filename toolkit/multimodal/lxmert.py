"""LXMERT visual question answering: a two-stream co-attention model over question tokens and image regions.

The language layers (self-attention over the question) and the relational layers (self-attention over the
region features the user gives) run first; then every cross-modality layer calls one co-attention module
twice, language→vision and vision→language, both on the layer's inputs, followed by a self-attention in each
stream. The answer is read from the pooled language [CLS], so the question's relevance is R^{tt}[CLS] and
the regions' is R^{ti}[CLS] (Chefer et al., ICCV 2021).

The AttnLRP / CP-LRP rules (:mod:`toolkit.core.lrp_rules`) act at the projections of every attention, the
co-attention's at both of its calls (a hook acts per call), and are read at each stream's first layer input.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterable, Iterator

import numpy as np
import torch
import torch.nn as nn

from ..core.engine import Pass
from ..core.spec import LayerSpec, ModelSpec
from ..errors import InputError
from ..explanation import Explanation
from ..methods import Method
from ..text import read_texts
from .base import MultimodalAdapter, Site, reject_unknown, second_output, string_list, to_numpy
from .clip import special_tokens
from .vilt import answer_labels, answer_targets, check_load, chosen_answers, pair_up


@contextlib.contextmanager
def returning_attention(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Have every call of these attention modules return its probabilities: LXMERT's cross-modality
    layers ask for them on the language→vision call only, never on the vision→language call or after."""

    def pre_hook(module, args, kwargs):
        return args, {**kwargs, "output_attentions": True}

    handles = [module.register_forward_pre_hook(pre_hook, with_kwargs=True)
               for module in {id(m): m for m in modules}.values()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def region_sets(values: Any, keyword: str, width: int) -> tuple[list[torch.Tensor], bool]:
    """Per-image (regions, width) float tensors from one (R, width) array, a (B, R, width) batch or a list
    of (R_i, width) arrays; and whether a single set was given."""
    if values is None:
        raise InputError(f"No {keyword} given: pass {keyword}= an array of shape (regions, {width}) "
                         "or a batch / list of them.")
    def tensor(value: Any) -> torch.Tensor:
        return value if torch.is_tensor(value) else torch.as_tensor(np.asarray(value))

    if isinstance(values, (list, tuple)):
        sets = [tensor(v) for v in values]
    else:
        values = tensor(values)
        sets = [values] if values.ndim == 2 else list(values) if values.ndim == 3 else []
    if not sets or any(s.ndim != 2 or s.shape[0] == 0 or s.shape[1] != width for s in sets):
        raise InputError(f"{keyword} must be (regions, {width}) per image (or a batch / list of such arrays); "
                         f"got shapes {[tuple(s.shape) for s in sets] or tuple(getattr(values, 'shape', ()))}.")
    return [s.float() for s in sets], not isinstance(values, (list, tuple)) and values.ndim == 2


def padded(sets: list[torch.Tensor], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, R_max, width) with zero rows after each set's regions (device and dtype of ``like``),
    and the (B, R_max) mask of real ones."""
    regions = max(s.shape[0] for s in sets)
    batch = like.new_zeros(len(sets), regions, sets[0].shape[1])
    mask = torch.zeros(len(sets), regions, dtype=torch.long, device=like.device)
    for b, s in enumerate(sets):
        batch[b, :s.shape[0]], mask[b, :s.shape[0]] = s, 1
    return batch, mask


_NOT_CVPR = dict(origin="the LXMERT adapter", lrp_blocker="the two streams attend to each other, and the CVPR "
                 "2021 LRP passes one stream")


def _layer(block: nn.Module, attention: nn.Module, intermediate: nn.Module, output: nn.Module) -> LayerSpec:
    """One post-LN self-attention layer (LxmertSelfAttentionLayer, then its MLP) with its parts."""
    heads = attention.self.num_attention_heads
    return LayerSpec(block=block, attention=attention.self, extract_probs=second_output, num_heads=heads,
                     out_proj=attention.output.dense, fc1=intermediate.dense, fc2=output.dense, norm_first=False,
                     query=attention.self.query, key=attention.self.key, value=attention.self.value)


class LxmertVQAAdapter(MultimodalAdapter):
    """``explain(question=..., visual_feats=..., visual_pos=..., image=None, target=None)``: one Explanation
    per (regions, question) pair (a single one for one set of regions and one question).

    ``visual_feats`` (R, visual_feat_dim) and ``visual_pos`` (R, 4: x1, y1, x2, y2 as fractions of the image
    size) are the detector's region features, one set per image (a batch, or a list of sets of different
    sizes). ``heatmap`` is the regions' relevance (R,), ``boxes`` their boxes: in pixels of ``image`` when one
    is given (then ``overlay()`` paints the regions), else as given. ``tokens`` / ``scores``: the question.
    The answer: the predicted one or ``target`` (name or index); names come from config.id2label when it lists
    every answer (LXMERT checkpoints ship the VQA answer list separately: set model.config.id2label to it).
    ``probability`` is the answer's sigmoid score (the VQA head is trained as multi-label), the objective its logit.

    Baselines: raw_attention / attention_gradcam of the last language→vision co-attention at [CLS] for the
    regions, and of the last language self-attention for the question. No rollout: there is no single stream.
    """

    family = "lxmert-vqa"
    task = "visual question answering"
    examples = "Hugging Face LxmertForQuestionAnswering (unc-nlp/lxmert-vqa-uncased), with region features"
    model_types = ("lxmert",)
    readings = (("text", "text", False), ("text", "image", False))
    image_keyword, image_rank, text_keyword, pairing = "visual_feats", 3, "question", "zip"
    reruns = True  # the path methods run again from the first language and relational layers' inputs (streams)

    def image_side(self) -> tuple[str, ...]:
        return ("visual_feats", "visual_pos", "image")

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return type(model).__name__ == "LxmertForQuestionAnswering"

    @classmethod
    def load(cls, name: str, **kwargs):
        from transformers import AutoTokenizer, LxmertForQuestionAnswering

        check_load(name, "LxmertForQuestionAnswering")
        return (LxmertForQuestionAnswering.from_pretrained(name, attn_implementation="eager", **kwargs),
                AutoTokenizer.from_pretrained(name))

    @property
    def labels(self) -> dict[int, str]:
        return answer_labels(self.model.config, self.model.config.num_qa_labels)

    def sites(self) -> list[Site]:
        encoder = self.model.lxmert.encoder
        sites = [Site(layer.attention.self, second_output, "text", "text") for layer in encoder.layer]
        sites += [Site(layer.attention.self, second_output, "image", "image") for layer in encoder.r_layers]
        for layer in encoder.x_layers:
            co_attention = layer.visual_attention.att
            sites += [Site(co_attention, second_output, "text", "image", call=0),
                      Site(co_attention, second_output, "image", "text", call=1, together=True),
                      Site(layer.lang_self_att.self, second_output, "text", "text"),
                      Site(layer.visn_self_att.self, second_output, "image", "image")]
        return sites

    def streams(self) -> dict[str, ModelSpec]:
        """Each stream's self-attention layers (its own, then its side of the cross-modality layers), with the
        parts the AttnLRP rules read; the answer head on the language side. None are declared for a model whose
        language or relational layers are missing (no layer of a stream's own reads its input)."""
        if self._specs is None:
            encoder, model = self.model.lxmert.encoder, self.model
            self._specs = {}
            if encoder.layer and encoder.r_layers:
                text = [_layer(l, l.attention, l.intermediate, l.output) for l in encoder.layer]
                text += [_layer(x, x.lang_self_att, x.lang_inter, x.lang_output) for x in encoder.x_layers]
                image = [_layer(l, l.attention, l.intermediate, l.output) for l in encoder.r_layers]
                image += [_layer(x, x.visn_self_att, x.visn_inter, x.visn_output) for x in encoder.x_layers]
                # the answer head's modules from the pooled [CLS] to the logits: its GeLU, a module the activation
                # rule does not know, lies between the first Linear and the LayerNorm (the rules' identity span)
                head = [model.lxmert.pooler.dense, *(model.answer_head.logit_fc[i] for i in (0, 2, 3))]
                self._specs = {"text": ModelSpec(text, head=head, **_NOT_CVPR),
                               "image": ModelSpec(image, readout="given", **_NOT_CVPR)}
        return self._specs

    def cross_stacks(self) -> dict[str, ModelSpec]:
        """The co-attention's projections; one module serves both directions."""
        if not self.streams():
            return {}
        co_attention = ModelSpec([LayerSpec(block=x, attention=x.visual_attention.att, extract_probs=second_output,
                                            num_heads=0, out_proj=None, fc1=None, fc2=None, norm_first=False,
                                            query=x.visual_attention.att.query, key=x.visual_attention.att.key,
                                            value=x.visual_attention.att.value)
                                  for x in self.model.lxmert.encoder.x_layers], **_NOT_CVPR)
        return {"text": co_attention, "image": co_attention}

    def rules_refusal(self, method: Method) -> str | None:
        if not self.streams():
            return ("the model has no language or no relational layer before its cross-modality layers, so a stream "
                    "has no layer of its own whose input the rules' relevance is read from")
        return super().rules_refusal(method)

    def run(self, method: Method, forward, tokens=None, lrp=None, rerun=None) -> Pass:
        with returning_attention(site.module for site in self.sites()):
            return super().run(method, forward, tokens, lrp, rerun)

    def explain(self, method: Method, target: Any, question: Any = None, visual_feats: Any = None,
                visual_pos: Any = None, image: Any = None, **unknown) -> Explanation | list[Explanation]:
        reject_unknown(self.family, "question=, visual_feats=, visual_pos= and image=", unknown)
        self.check_method(method)
        config = self.model.config
        feats, one_set = region_sets(visual_feats, "visual_feats", config.visual_feat_dim)
        boxes, _ = region_sets(visual_pos, "visual_pos", config.visual_pos_dim)
        if [len(f) for f in feats] != [len(b) for b in boxes]:
            raise InputError(f"visual_feats and visual_pos disagree: {[len(f) for f in feats]} regions "
                             f"against {[len(b) for b in boxes]} boxes.")
        images = None if image is None else self.images(image)
        if images is not None and len(images) != len(feats):
            raise InputError(f"{len(images)} images for {len(feats)} sets of regions: pass one image per set.")
        questions = string_list(question, "question")
        pairs = pair_up(len(feats), len(questions))
        targets = answer_targets(target, len(pairs), self.labels, config.num_qa_labels)
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        if tokenizer is None:
            raise InputError("LXMERT needs its tokenizer: Explainer(model, tokenizer) or Explainer.from_pretrained.")
        read = read_texts(tokenizer, questions, limit=config.max_position_embeddings, what="Question")
        enc = tokenizer([questions[q] for _, q in pairs], padding=True, truncation=True,
                        max_length=config.max_position_embeddings, return_tensors="pt").to(self.device)
        parameter = next(self.model.parameters())
        region_feats, region_mask = padded([feats[v] for v, _ in pairs], parameter)
        region_pos, _ = padded([boxes[v] for v, _ in pairs], parameter)

        def run():
            out = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                             visual_feats=region_feats, visual_pos=region_pos, visual_attention_mask=region_mask)
            scores = out.question_answering_score
            return out, scores.gather(1, chosen_answers(targets, scores)[:, None])[:, 0]

        stock_inputs = dict(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], visual_feats=region_feats,
                            visual_pos=region_pos, visual_attention_mask=region_mask)

        def rerun(times: int) -> torch.Tensor:
            """The answer logits (R*B, answers) of the pairs repeated R times (the path methods)."""
            return self.model(**{key: value.repeat(times, *[1] * (value.dim() - 1))
                                 for key, value in stock_inputs.items()}).question_answering_score

        captured = self.run(method, run, rerun=rerun)
        captured.targets = chosen_answers(targets, captured.outputs.question_answering_score)
        answers = captured.targets.tolist()
        text_mask, region_mask = enc["attention_mask"].bool(), region_mask.bool()
        cls = torch.zeros(len(pairs), dtype=torch.long, device=self.device)
        sizes = {"text": text_mask.shape[1], "image": region_mask.shape[1]}
        text_rel = self.relevance(method, captured, "text", "text", cls, text_mask,
                                  text_mask & ~special_tokens(tokenizer, enc["input_ids"]), sizes=sizes)
        region_rel = self.relevance(method, captured, "text", "image", cls, text_mask, region_mask, sizes=sizes,
                                    key_tokens=region_mask)
        probabilities, labels = to_numpy(torch.sigmoid(captured.objective)), self.labels
        explanations = []
        for b, (v, q) in enumerate(pairs):
            name = labels.get(answers[b], str(answers[b]))
            valid = text_mask[b].cpu()
            shown = None if images is None else np.asarray(images[v], dtype=np.uint8)
            scale = 1.0 if shown is None else np.array([shown.shape[1], shown.shape[0]] * 2, dtype=np.float32)
            explanations.append(Explanation(
                method=method.name, model=self.name, target=answers[b], label=name,
                probability=float(probabilities[b]), scores=to_numpy(text_rel[b])[valid.numpy()],
                tokens=tokenizer.convert_ids_to_tokens(enc["input_ids"][b].cpu()[valid]),
                heatmap=to_numpy(region_rel[b, :len(feats[v])]), image=shown, text=read[q],
                outputs={"answer": name, "boxes": to_numpy(boxes[v]) * scale}, options=method.options()))
        return explanations[0] if one_set and isinstance(question, str) else explanations
