"""The generation task shared by captioning and language models: every explained token is a step, read at the
position before it with objective log p(token | everything before it).

Gradients of a sum of objectives taken over one sequence would mix the steps' attention gradients, so the sequence is
replicated once per step and every replica carries its own objective: one forward and one backward serve every step
of every sequence of a pass. The models being causal, the tokens after a step's position change nothing there, so
each step is explained exactly as it would be over the tokens before it alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def step_scores(step_logits: torch.Tensor, targets: torch.Tensor, by_logit: bool
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(each step's log-probability of its token, the objective explained): the log-probability, or with
    ``by_logit`` (methods with LRP rules: AttnLRP explains logits) the token's logit. ``step_logits`` (S, V)."""
    log_probs = step_logits.log_softmax(-1).gather(1, targets[:, None])[:, 0]
    return log_probs, step_logits.gather(1, targets[:, None])[:, 0] if by_logit else log_probs


def rows_of(maps: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """maps (B, N, M) read at one row per sample (B,) -> (B, M)."""
    return maps[torch.arange(rows.shape[0], device=rows.device), rows]


@dataclass
class StepBatch:
    """Every step of every sequence as one sample: the sequence (prompt first) replicated once per step;
    ``image_index`` says which sequence (image, or prompt) a step belongs to."""

    input_ids: torch.Tensor  # (S, L), right-padded
    attention_mask: torch.Tensor  # (S, L)
    image_index: torch.Tensor  # (S,) which image the step belongs to
    rows: torch.Tensor  # (S,) the position whose logits predict the step's token
    targets: torch.Tensor  # (S,) the step's token id

    @classmethod
    def build(cls, sequences: list[list[int]], prompt_length: int | list[int], pad_id: int,
              device: torch.device) -> "StepBatch":
        """``prompt_length``: one for every sequence, or one per sequence (language models' prompts differ)."""
        length = max(len(s) for s in sequences)
        starts = prompt_length if isinstance(prompt_length, list) else [prompt_length] * len(sequences)
        ids, mask, image_index, rows, targets = [], [], [], [], []
        for i, (sequence, start) in enumerate(zip(sequences, starts)):
            for position in range(start, len(sequence)):
                ids.append(sequence + [pad_id] * (length - len(sequence)))
                mask.append([1] * len(sequence) + [0] * (length - len(sequence)))
                image_index.append(i)
                rows.append(position - 1)
                targets.append(sequence[position])

        def long(values):
            return torch.tensor(values, dtype=torch.long, device=device)

        return cls(long(ids).reshape(-1, length), long(mask).reshape(-1, length), long(image_index), long(rows),
                   long(targets))

    def __len__(self) -> int:
        return self.rows.shape[0]
