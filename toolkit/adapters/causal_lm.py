"""Causal language models (GPT-2, the Llama layout): the relevance behind the next token of a prompt, behind each
token of a given continuation (teacher forcing), or of a generated one.

Step t (predicting token t) is read at position t - 1, and its objective is log p(token_t | tokens before it).
Gradients of a sum of objectives taken over one sequence would mix the steps' attention gradients, so, as for
captioning (the generation task, :class:`toolkit.generation.StepBatch`), the sequence is replicated once per step and every
replica carries its own objective: one forward and one backward serve every step of every prompt of a pass. The
model being causal, the tokens after a step's position change nothing there, so each step is explained exactly
as it would be over the prompt and the tokens before it alone.

Attention sinks: a causal model's first position sees only itself, and trained models park most of their attention
there (an "attention sink"), so raw attention and rollout give it most of the relevance and leave the content
tokens faint. Its relevance is kept in ``scores`` as computed, but the first position is marked as a special
token: the word scores, the colour scale and the text display leave it out, and attention Grad-CAM averages each
head's gradient over the other tokens only. ``keep_sink=True`` treats it as content like any other token.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core import engine
from ..errors import InputError
from ..explanation import CaptionStep, Explanation
from ..methods import Method
from ..generation import StepBatch, rows_of, step_scores
from ..text import group_words, special_token_mask, word_scores
from .base import DeclaredAdapter
from .hf_text import TextClassifierAdapter

TokenIds = list[int]


class CausalLMAdapter(DeclaredAdapter):
    """A decoder-only language model whose layout a family declares (``inputs: text-generation``)."""

    modality = "text"
    task: ClassVar[str] = "text generation"
    generation: ClassVar[bool] = True
    keywords: ClassVar[tuple[str, ...]] = ("continuation", "max_new_tokens", "keep_sink")
    # method="auto": generic put the most relevance on the ground truth of the scene LM (README, "Which method to trust")
    preferred_methods: ClassVar[tuple[str, ...]] = ("generic",)

    tokenizer = TextClassifierAdapter.tokenizer

    def prepare(self, inputs: Any, text_pair: Any = None, first_index: int = 0):
        raise InputError("A language model is explained token by token: call explain(prompt, target=..., "
                         "continuation=... or max_new_tokens=...).")

    def logits(self, batch):
        raise InputError("A language model has no class logits: explain(prompt) explains its next token.")

    def input_relevance(self, rec, first_layer_relevance, batch, rules):
        raise NotImplementedError("the LRP-based methods are refused for language models")

    # --- inputs -------------------------------------------------------------------------------------
    @property
    def positions(self) -> int:
        config = self.model.config
        return int(getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings"))

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        return 0 if pad is None else int(pad)

    def prompt_ids(self, prompts: list[Any]) -> list[TokenIds]:
        """Each prompt's ids as the tokenizer gives them (its BOS included, where it adds one)."""
        ids = []
        for index, prompt in enumerate(prompts):
            if isinstance(prompt, str):
                if not prompt.strip():
                    raise InputError(f"Prompt #{index} is empty: there is nothing to continue.")
                ids.append(list(self.tokenizer(prompt)["input_ids"]))
            else:
                ids.append(self._token_ids(prompt, f"Prompt #{index}"))
        return ids

    def _token_ids(self, value: Any, what: str) -> TokenIds:
        values = value.tolist() if torch.is_tensor(value) or isinstance(value, np.ndarray) else value
        if not (isinstance(values, (list, tuple)) and values
                and all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in values)):
            raise InputError(f"{what} must be a string or a non-empty list of token ids; got {value!r}.")
        vocab = self.model.config.vocab_size
        if not all(0 <= int(t) < vocab for t in values):
            raise InputError(f"{what} has token ids outside the vocabulary (0..{vocab - 1}).")
        return [int(t) for t in values]

    def _text_ids(self, value: Any, what: str) -> TokenIds:
        if isinstance(value, str):
            ids = list(self.tokenizer(value, add_special_tokens=False)["input_ids"])
            if not ids:
                raise InputError(f"{what} {value!r} has no tokens.")
            return ids
        return self._token_ids([value] if isinstance(value, (int, np.integer)) else value, what)

    def target_ids(self, target: Any, count: int) -> list[int | None]:
        """One token id (None: the predicted one) per prompt: an id or a string of exactly one token."""
        targets = list(target) if isinstance(target, (list, tuple)) else [target] * count
        if len(targets) != count:
            raise InputError(f"{len(targets)} targets given for {count} prompts.")
        resolved = []
        for index, item in enumerate(targets):
            if item is None:
                resolved.append(None)
                continue
            ids = self._text_ids(item, f"Target #{index}")
            if len(ids) != 1:
                raise InputError(f"Target #{index} {item!r} is {len(ids)} tokens "
                                 f"({self.tokenizer.convert_ids_to_tokens(ids)}); a target is one token: pass "
                                 "continuation=... to explain several tokens.")
            resolved.append(ids[0])
        return resolved

    def continuation_ids(self, continuation: Any, count: int) -> list[TokenIds]:
        """A string or token ids for every prompt, or a list of one per prompt (strings are read without special
        tokens: mind GPT-2's leading space)."""
        per_prompt = isinstance(continuation, (list, tuple)) and continuation and not isinstance(
            continuation[0], (int, np.integer))
        items = list(continuation) if per_prompt else [continuation] * count
        if len(items) != count:
            raise InputError(f"{len(items)} continuations given for {count} prompts: pass one per prompt, or one "
                             "for all.")
        return [self._text_ids(item, f"Continuation #{index}") for index, item in enumerate(items)]

    def generated_ids(self, prompts: list[TokenIds], max_new_tokens: int) -> list[TokenIds]:
        """The stock greedy ``generate`` of each prompt (no gradients), cut before its end token (kept when it
        comes first)."""
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be a positive integer; got {max_new_tokens!r}.")
        ends = {int(t) for t in np.atleast_1d(self.model.config.eos_token_id or [])}
        generated = []
        with torch.no_grad():
            for ids in prompts:
                room = min(max_new_tokens, self.positions - len(ids))
                sequence = self.model.generate(torch.tensor([ids], device=self.device), max_new_tokens=room,
                                               do_sample=False, pad_token_id=self.pad_id)[0, len(ids):].tolist()
                # a continuation that ends at once explains its end token: why the model stopped
                cut = next((k for k, token in enumerate(sequence) if token in ends), len(sequence))
                generated.append(sequence[:max(cut, 1)])
        return generated

    def predict(self, prompt: Any, top_k: int) -> list[tuple[str, float]]:
        """The ``top_k`` most probable next tokens of one prompt, as (token, probability)."""
        if not isinstance(prompt, str) and not (isinstance(prompt, Sequence) and prompt
                                                and isinstance(prompt[0], (int, np.integer))):
            raise InputError("predict() takes one prompt (a string or token ids); call it once per prompt.")
        ids = torch.tensor(self.prompt_ids([prompt]), device=self.device)
        with torch.no_grad():
            probabilities = self.layout.forward(input_ids=ids).logits[0, -1].float().softmax(-1)
        top = probabilities.topk(min(top_k, probabilities.shape[0]))
        tokens = self.tokenizer.convert_ids_to_tokens(top.indices.tolist())
        return list(zip(tokens, top.values.tolist()))

    # --- one pass: one forward, one backward ------------------------------------------------------------
    def explain(self, method: Method, prompts: Any, target: Any = None, continuation: Any = None,
                max_new_tokens: int | None = None, keep_sink: bool = False, batch_size: int = 16,
                progress: bool | None = None) -> Explanation | list[Explanation]:
        """Explain the next token of each prompt (``target``: None for the predicted one, a token id or a
        one-token string), each token of ``continuation`` by teacher forcing, or each token of the greedy
        continuation of up to ``max_new_tokens`` tokens. One Explanation per prompt."""
        chosen = [name for name, value in (("target", target), ("continuation", continuation),
                                           ("max_new_tokens", max_new_tokens)) if value is not None]
        if len(chosen) > 1:
            raise InputError(f"Give one of target, continuation and max_new_tokens; got {', '.join(chosen)}.")
        single = isinstance(prompts, str) or (isinstance(prompts, Sequence) and prompts
                                              and isinstance(prompts[0], (int, np.integer)))
        items = [prompts] if single else list(prompts or [])
        if not items:
            raise InputError("No prompt given: pass a string, token ids, or a list of them.")
        prompt_ids = self.prompt_ids(items)
        if continuation is not None:
            follows = self.continuation_ids(continuation, len(items))
        elif max_new_tokens is not None:
            follows = self.generated_ids(prompt_ids, max_new_tokens)
        else:
            follows = [[token] for token in self.target_ids(target, len(items))]
        for index, (prompt, follow) in enumerate(zip(prompt_ids, follows)):
            if len(prompt) + len(follow) - 1 > self.positions:
                raise InputError(f"Prompt #{index} and its continuation are {len(prompt) + len(follow)} tokens; the "
                                 f"model reads {self.positions} positions. Shorten them.")
        starts = range(0, len(items), batch_size)
        explanations = []
        for start in tqdm(starts, desc=method.name, unit="batch",
                          disable=not (progress if progress is not None else len(starts) > 1)):
            chunk = slice(start, start + batch_size)
            explanations += self._explain_pass(method, prompt_ids[chunk], follows[chunk], items[chunk], keep_sink)
        return explanations[0] if single else explanations

    def _explain_pass(self, method: Method, prompts: list[TokenIds], follows: list[list[int | None]],
                      items: list[Any], keep_sink: bool) -> list[Explanation]:
        predicted = [follow == [None] for follow in follows]
        # a predicted next token is read at the prompt's last position: a placeholder after it changes nothing there
        sequences = [prompt + ([self.pad_id] if guess else follow)
                     for prompt, follow, guess in zip(prompts, follows, predicted)]
        steps = StepBatch.build(sequences, [len(p) for p in prompts], self.pad_id, self.device)
        length = steps.input_ids.shape[1]
        positions = torch.arange(length, device=self.device)
        visible = steps.attention_mask.bool() & (positions <= steps.rows[:, None])
        content = visible & (positions > 0) if not keep_sink else visible
        guessed = torch.tensor([predicted[i] for i in steps.image_index.tolist()], device=self.device)
        chosen = {}

        def forward():
            """The objective is each step's log-probability; under LRP rules its logit (AttnLRP explains logits)."""
            step_logits = rows_of(self._logits(steps, 1), steps.rows).float()
            chosen["targets"] = targets = torch.where(guessed, step_logits.argmax(-1), steps.targets)
            chosen["log_probs"], objective = step_scores(step_logits, targets, method.rules is not None)
            return step_logits, objective

        spec = self.spec
        result = engine.run_pass(self.model, engine.sites_of(spec, "text"), forward, method, streams={"text": spec},
                                 tokens={"text": length}, rerun=lambda times: rows_of(
                                     self._logits(steps, times), steps.rows.repeat(times)).float().log_softmax(-1))
        result.targets = chosen["targets"]
        reading = engine.Reading("text", "text", spec.readout_weights(visible, content, rows=steps.rows), visible,
                                 content)
        with torch.no_grad():
            relevance = engine.attribute(method, result, reading).detach().float().cpu().numpy()
        targets, objective = chosen["targets"], chosen["log_probs"]
        return self._explanations(method, prompts, sequences, items, steps, targets.tolist(),
                                  objective.detach().cpu().numpy(), relevance, keep_sink)

    def _logits(self, steps: StepBatch, times: int) -> torch.Tensor:
        """The model's logits over the step batch, repeated ``times`` times (path methods run many copies)."""
        return self.layout.forward(input_ids=steps.input_ids.repeat(times, 1),
                                   attention_mask=steps.attention_mask.repeat(times, 1)).logits

    def _explanations(self, method: Method, prompts: list[TokenIds], sequences: list[TokenIds], items: list[Any],
                      steps: StepBatch, targets: list[int], log_probs: np.ndarray, relevance: np.ndarray,
                      keep_sink: bool) -> list[Explanation]:
        tok = self.tokenizer
        owners, rows = steps.image_index.tolist(), steps.rows.tolist()
        explanations = []
        for i, (prompt, sequence) in enumerate(zip(prompts, sequences)):
            members = [s for s, owner in enumerate(owners) if owner == i]
            explained = [targets[s] for s in members]
            names = tok.convert_ids_to_tokens(prompt + explained)
            special = special_token_mask(tok, prompt)
            special[0] = special[0] or not keep_sink
            step_list = [CaptionStep(token=names[rows[s] + 1], token_id=targets[s], log_prob=float(log_probs[s]),
                                     heatmap=np.zeros((0, 0), np.float32),
                                     text_scores=relevance[s, :rows[s] + 1].astype(np.float32),
                                     text_tokens=names[:rows[s] + 1]) for s in members]
            scores = relevance[members, :len(prompt)].mean(0).astype(np.float32)
            words = group_words(names[:len(prompt)], special, tokenizer=tok)
            text = tok.decode(explained)
            explanations.append(Explanation(
                method=method.name, model=self.name, target=explained[0], label=text,
                probability=float(np.exp(log_probs[members].sum())), scores=scores, tokens=names[:len(prompt)],
                words=words.get("words"), word_scores=word_scores(scores, words["word_pieces"]),
                word_segments=words.get("word_segments"), special_tokens=np.array(special, dtype=bool),
                text=items[i] if isinstance(items[i], str) else tok.decode(prompt),
                outputs={"caption": text, "steps": step_list}, options={**method.options(), "keep_sink": keep_sink}))
        return explanations
