"""A stock Hugging Face GPT-2 trained on the scene world's descriptions, where the ground truth says which earlier
tokens a predicted word depends on.

A text is one or two captions of a scene and a question-like statement about one of the objects they name, whose
last word the model must fill in from the captions: "a red triangle left of a blue square . the triangle is" ->
"red", or "... . the blue object is a" -> "square". The statement names the object by a word that only it has
among the captioned objects (its shape for a colour, its colour for a shape), so the answer is determined, and it
rests on the earlier mention(s) of that object: its colour and shape words ("red triangle"). Those earlier tokens
are the ground truth of an explanation of the answer (:attr:`SceneText.evidence`): the statement's own word names
the object and the other captioned objects are distractors. The held-out accuracy is the share of answers the
model predicts (chance: 1/5 for a colour, 1/4 for a shape). Recipe: ``python -m toolkit.zoo.scene_lm``.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..scenes import Scene
from .common import (SPECIAL_TOKENS, TRAIN_SEED, VALIDATION_SCENES, VALIDATION_SEED, WEIGHTS_DIR, batched, fit,
                     load_weights, named_in_caption, random_batch, recipe_main, save_weights, scenes)
from ..scenes import WORDS

WEIGHTS = WEIGHTS_DIR / "scene_lm.safetensors"
SEPARATOR = "."
VOCABULARY = SPECIAL_TOKENS + WORDS + (SEPARATOR,)
MAX_CAPTIONS = 2
POSITIONS = 32  # [CLS], two captions of at most 8 words, two separators, a statement of at most 6 words
LAYERS = dict(n_embd=64, n_layer=2, n_head=4)


@dataclass(frozen=True)
class SceneText:
    """A prompt, the word that completes it, and the positions (in the prompt's tokens, [CLS] at 0) of the earlier
    words the answer depends on."""

    prompt: str
    answer: str
    evidence: tuple[int, ...]

    @property
    def text(self) -> str:
        return f"{self.prompt} {self.answer}"

    def evidence_mask(self) -> np.ndarray:
        """Boolean mask over the prompt's tokens ([CLS] included): True at the ground-truth tokens."""
        mask = np.zeros(len(self.prompt.split()) + 1, dtype=bool)
        mask[list(self.evidence)] = True
        return mask


def scene_texts(scene: Scene, rng: random.Random) -> list[SceneText]:
    """Every text of ``scene`` for one random choice of captions (at most :data:`MAX_CAPTIONS`): one per object and
    statement kind whose answer the captions determine."""
    captions = rng.sample(list(scene.captions), min(MAX_CAPTIONS, len(scene.captions)))
    words, mentions = [], {}  # mentions: (colour, shape) -> token positions of its colour and shape words
    for caption in captions:
        if words:
            words.append(SEPARATOR)
        offset = len(words) + 1  # [CLS] comes first
        subject, reference = named_in_caption(caption)
        last = len(caption.split()) - 1
        for named, at in ((subject, 1), (reference, last - 1)):
            mentions.setdefault(named, []).extend((offset + at, offset + at + 1))
        words += caption.split()
    context = " ".join(words)
    texts = []
    for (colour, shape), positions in mentions.items():
        if sum(other_shape == shape for _, other_shape in mentions) == 1:
            texts.append(SceneText(f"{context} {SEPARATOR} the {shape} is", colour, tuple(positions)))
        if sum(other_colour == colour for other_colour, _ in mentions) == 1:
            texts.append(SceneText(f"{context} {SEPARATOR} the {colour} object is a", shape, tuple(positions)))
    return texts


def held_out_texts(count: int, seed: int) -> list[SceneText]:
    """``count`` texts, one per scene of the ``seed`` scenes (drawn with the same seed) that has any."""
    rng, texts = random.Random(seed), []
    for scene in scenes(count * 2, seed):
        options = scene_texts(scene, rng)
        if options:
            texts.append(rng.choice(options))
        if len(texts) == count:
            return texts
    raise ValueError(f"fewer than {count} texts in {count * 2} scenes")


def scene_lm_tokenizer():
    """A word-level tokenizer of the scene vocabulary that starts every text with [CLS] (the beginning of text)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    vocab = {word: index for index, word in enumerate(VOCABULARY)}
    core = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = WhitespaceSplit()
    core.post_processor = TemplateProcessing(single="[CLS] $A", special_tokens=[("[CLS]", vocab["[CLS]"])])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="[CLS]", eos_token="[SEP]", pad_token="[PAD]",
                                   unk_token="[UNK]", mask_token="[MASK]")


def build_scene_lm(tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=len(tokenizer), n_positions=POSITIONS, **LAYERS,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    return GPT2LMHeadModel(config)


def encode(tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def lm_loss(model, tokenizer, texts: list[str]) -> torch.Tensor:
    """Next-token cross-entropy over every word of the texts, padding ignored, plus that of the answers (each text's
    last word) alone: the captions are mostly unpredictable, and without the second term their loss drowns the one
    word whose prediction needs the lookup (trained on the first term alone, held-out accuracy stays near chance)."""
    ids, mask = encode(tokenizer, texts)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    last = mask.sum(1) - 2  # the position that predicts the answer
    rows = torch.arange(len(texts))
    return (F.cross_entropy(logits.flatten(0, 1), targets.flatten())
            + F.cross_entropy(logits[rows, last], targets[rows, last]))


@torch.no_grad()
def predicted_answers(model, tokenizer, texts: list[SceneText]) -> list[str]:
    answers = []
    for chunk in batched(texts, 256):
        ids, mask = encode(tokenizer, [text.prompt for text in chunk])
        logits = model(input_ids=ids, attention_mask=mask).logits
        last = mask.sum(1) - 1
        answers += tokenizer.convert_ids_to_tokens(logits[torch.arange(len(chunk)), last].argmax(-1).tolist())
    return answers


def accuracy(model, tokenizer, texts: list[SceneText]) -> float:
    """Share of the texts whose answer the model predicts after the prompt."""
    answers = predicted_answers(model, tokenizer, texts)
    return sum(answer == text.answer for answer, text in zip(answers, texts)) / len(texts)


def train_scene_lm(steps: int = 10000, train_scenes: int = 8000, batch_size: int = 32, lr: float = 3e-3, seed: int = 0,
                   out: Path = WEIGHTS, validation_scenes: int = VALIDATION_SCENES) -> float:
    """Train from scratch (seeded) on fresh caption choices of the training scenes at every step; save; return the
    held-out accuracy."""
    tokenizer = scene_lm_tokenizer()
    train = scenes(train_scenes, TRAIN_SEED)
    torch.manual_seed(seed)
    model = build_scene_lm(tokenizer)
    rng = random.Random(seed)

    def loss_of_step(generator: torch.Generator) -> torch.Tensor:
        texts = []
        for index in random_batch(len(train), batch_size * 2, generator).tolist():
            options = scene_texts(train[index], rng)
            if options:
                texts.append(rng.choice(options).text)
        return lm_loss(model, tokenizer, texts[:batch_size])

    fit(model, loss_of_step, steps, lr, seed, desc="scene language model")
    validation = held_out_texts(validation_scenes, VALIDATION_SEED)
    recipe = dict(steps=steps, train_scenes=train_scenes, batch_size=batch_size, lr=lr, seed=seed)
    return save_weights(model, out, recipe, lambda shipped: accuracy(shipped, tokenizer, validation))


def load_scene_lm(path: Path = WEIGHTS):
    """The trained GPT2LMHeadModel (eval mode) and its tokenizer."""
    tokenizer = scene_lm_tokenizer()
    return load_weights(build_scene_lm(tokenizer), path, __name__), tokenizer


if __name__ == "__main__":
    recipe_main(train_scene_lm, "Reproduce the scene language model's weights.")
