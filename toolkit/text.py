"""Grouping sub-word pieces into words, so that relevance can be read per word."""
from __future__ import annotations

from typing import Any

_WORD_START_MARKS = ("▁", "Ġ")


def group_words(tokens: list[str], special: list[bool], *, word_ids=None, sequence_ids=None, offsets=None,
                texts=None, tokenizer: Any = None) -> dict[str, list]:
    """Words of a tokenised text and, for each, the indices of its pieces.

    With a fast tokenizer's word ids and character offsets, words are cut from the original text.
    Otherwise they are rebuilt from the pieces' continuation marks (``##``, ``▁``, ``Ġ``).
    Special tokens belong to no word.
    """
    groups: list[list[int]] = []
    keys: list[Any] = []
    if word_ids is not None:
        for index, word in enumerate(word_ids):
            if word is None or special[index]:
                continue
            key = (sequence_ids[index], word)
            if keys and keys[-1] == key:
                groups[-1].append(index)
            else:
                groups.append([index])
                keys.append(key)
        words = []
        for group, (sequence, _) in zip(groups, keys):
            text = texts[sequence or 0]
            words.append(text[offsets[group[0]][0]:offsets[group[-1]][1]])
        segments = [sequence or 0 for sequence, _ in keys]
    else:
        marked = any(t.startswith(_WORD_START_MARKS) for t in tokens)
        previous_special = True
        for index, token in enumerate(tokens):
            if special[index]:
                previous_special = True
                continue
            starts = (previous_special or token.startswith(_WORD_START_MARKS) if marked
                      else not token.startswith("##"))
            if starts or not groups:
                groups.append([index])
            else:
                groups[-1].append(index)
            previous_special = False
        words = [tokenizer.convert_tokens_to_string([tokens[i] for i in g]).strip() for g in groups]
        segments = _segments_from_specials(groups, special)
    return {"words": words, "word_pieces": groups, "word_segments": segments}


def encoded_words(encoding: Any, index: int, length: int, special: list[bool], texts: tuple) -> dict[str, list]:
    """:func:`group_words` for row ``index`` of a fast tokenizer's batch encoding (with its
    ``offset_mapping``), over its first ``length`` tokens; empty when the tokenizer is not a fast one."""
    offsets = encoding.get("offset_mapping")
    if offsets is None or not getattr(encoding, "is_fast", False):
        return {}
    return group_words([], special, word_ids=encoding.word_ids(index)[:length],
                       sequence_ids=encoding.sequence_ids(index)[:length], offsets=offsets[index, :length].tolist(),
                       texts=texts)


def word_scores(scores: Any, word_pieces: list[list[int]]) -> Any:
    """Each word's relevance: the sum over its pieces."""
    import numpy as np

    return np.array([scores[group].sum() for group in word_pieces], dtype=np.float32)


def _segments_from_specials(groups: list[list[int]], special: list[bool]) -> list[int]:
    """Sentence index of each word, counting separator runs between content (for preprocessed pairs)."""
    segment, seen_content, boundary, result = 0, False, False, []
    position = 0
    for group in groups:
        while position < group[0]:
            if special[position] and seen_content:
                boundary = True
            position += 1
        if boundary:
            segment, boundary = segment + 1, False
        result.append(segment)
        seen_content = True
        position = group[-1] + 1
    return result
