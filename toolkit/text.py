"""Reading text as a model does (cut to its length, unknown words named) and grouping sub-word pieces into
words, so that relevance can be read per word."""
from __future__ import annotations

import contextlib
import string
from typing import Any

from .errors import InputError, quiet_logger, warn

_WORD_START_MARKS = ("▁", "Ġ")
NAMED_DROPPED_WORDS = 30  # a cut text's warning quotes at most this many of the words left out


def group_words(tokens: list[str], special: list[bool], *, word_ids=None, sequence_ids=None, offsets=None,
                texts=None, tokenizer: Any = None, unknown: list[bool] | None = None) -> dict[str, list]:
    """Words of a tokenised text and, for each, the indices of its pieces.

    With a fast tokenizer's word ids and character offsets, words are cut from the original text.
    Otherwise they are rebuilt from the pieces' continuation marks (``##``, ``▁``, ``Ġ``).
    Special tokens belong to no word. With ``unknown`` (per token: read as the unknown token, see
    :func:`unknown_token_mask`), ``unknown_words`` says which words have such a piece: the text shows the word
    while the model read only the unknown token.
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
    grouped = {"words": words, "word_pieces": groups, "word_segments": segments}
    if unknown is not None:
        grouped["unknown_words"] = [any(unknown[i] for i in group) for group in groups]
    return grouped


def encoded_words(encoding: Any, index: int, length: int, special: list[bool], texts: tuple,
                  unknown: list[bool] | None = None) -> dict[str, list]:
    """:func:`group_words` for row ``index`` of a fast tokenizer's batch encoding (with its
    ``offset_mapping``), over its first ``length`` tokens; empty when the tokenizer is not a fast one."""
    offsets = encoding.get("offset_mapping")
    if offsets is None or not getattr(encoding, "is_fast", False):
        return {}
    return group_words([], special, word_ids=encoding.word_ids(index)[:length],
                       sequence_ids=encoding.sequence_ids(index)[:length], offsets=offsets[index, :length].tolist(),
                       texts=texts, unknown=unknown)


def unknown_token_mask(tokenizer: Any, ids: list[int]) -> list[bool]:
    """Which of ``ids`` are the tokenizer's unknown token (all False when it has none)."""
    unknown = getattr(tokenizer, "unk_token_id", None)
    return [unknown is not None and token == unknown for token in ids]


def special_token_mask(tokenizer: Any, ids: list[int]) -> list[bool]:
    """Which of ``ids`` are the tokenizer's special tokens ([CLS], [SEP], padding, ...). Its unknown token is not
    one of them here: it stands for a word of the text, which displays and word scores keep."""
    unknown = getattr(tokenizer, "unk_token_id", None)
    marks = tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True)
    return [bool(mark) and token != unknown for mark, token in zip(marks, ids)]


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


# --- reading text as the model does ---------------------------------------------------------------
def read_texts(tokenizer: Any, firsts: list[str], seconds: list[str] | None = None, *, limit: int,
               what: str = "Text", first_index: int = 0, add_special_tokens: bool = True) -> list:
    """Each text as the model reads it from ``tokenizer(firsts, seconds, truncation=True, max_length=limit)``,
    with a warning for what it does not read as given.

    A text longer than ``limit`` tokens is cut by that truncation: the warning names the words left out, and
    the text returned is the part read (a pair for sentence pairs). Words the tokenizer reads as its unknown
    token are named in a warning too. Messages call the texts ``what #i`` from ``first_index``.
    """
    with no_length_notice():
        return [_read_text(tokenizer, parts, ids, limit, f"{what} #{index}", add_special_tokens, seconds is None)
                for index, (parts, ids) in enumerate(zip(_parts(firsts, seconds), tokenizer(
                    firsts, seconds, add_special_tokens=add_special_tokens)["input_ids"]), start=first_index)]


def _read_text(tokenizer: Any, parts: tuple[str, ...], ids: list[int], limit: int, name: str,
               add_special_tokens: bool, single: bool) -> Any:
    """One text (or pair) of :func:`read_texts`, tokenised as ``ids``."""
    if len(ids) > limit:
        parts, dropped = _cut(tokenizer, parts, limit, add_special_tokens)
        warn_cut(name, len(ids), limit, dropped)
    unknown = _unknown_words(tokenizer, parts)
    if unknown:
        warn(f"{name}: {', '.join(map(repr, unknown))} {'is' if len(unknown) == 1 else 'are'} not in the model's "
             f"vocabulary and read as {tokenizer.unk_token}: the model cannot tell "
             f"{'it' if len(unknown) == 1 else 'them'} from any other unknown word. Use words it knows.")
    return parts[0] if single else parts


def warn_cut(name: str, length: int, limit: int, dropped: str) -> None:
    """Warn that ``name``, ``length`` tokens long, is cut to the model's ``limit``, ``dropped`` being the words
    left out (quoted; empty when not known)."""
    warn(f"{name} is {length} tokens long but the model reads at most {limit}: it is cut to {limit} and "
         f"{dropped or 'its last tokens'} {'is' if dropped and not dropped.endswith(' words') else 'are'} left out "
         "(neither read nor explained). "
         "Shorten it to keep every word.")


def require_text(text: Any, name: str) -> None:
    """Refuse ``text`` unless it is a non-empty string; ``name`` says which argument it is."""
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{name} must be a non-empty string, got {text!r}.")


def no_length_notice() -> contextlib.AbstractContextManager:
    """Without transformers' "Token indices sequence length is longer than ..." log line: the toolkit tokenises
    texts in full on purpose, to measure them, and says itself what it cuts."""
    return quiet_logger("transformers.tokenization_utils_base")


def _quoted(words: str) -> str:
    """``words`` quoted, at most :data:`NAMED_DROPPED_WORDS` of them, then how many more there are."""
    split = words.split()
    if len(split) <= NAMED_DROPPED_WORDS:
        return repr(words)
    return f"{' '.join(split[:NAMED_DROPPED_WORDS]) + ' …'!r} and {len(split) - NAMED_DROPPED_WORDS:,} more words"


def _parts(firsts: list[str], seconds: list[str] | None) -> list[tuple[str, ...]]:
    return [(first,) for first in firsts] if seconds is None else list(zip(firsts, seconds))


def _cut(tokenizer: Any, parts: tuple[str, ...], limit: int, add_special_tokens: bool) -> tuple[tuple[str, ...], str]:
    """(the part of each text that the truncation keeps, the words it leaves out). A fast tokenizer's offsets
    give both from the original text; otherwise a single text is decoded from its tokens, and the words a pair
    loses are not known."""
    encoding = tokenizer(*parts, truncation=True, max_length=limit, add_special_tokens=add_special_tokens,
                         return_offsets_mapping=getattr(tokenizer, "is_fast", False))
    if "offset_mapping" in encoding:
        left = getattr(tokenizer, "truncation_side", "right") == "left"
        kept, dropped = [], []
        for sequence, text in enumerate(parts):
            spans = [span for span, owner in zip(encoding["offset_mapping"], encoding.sequence_ids())
                     if owner == sequence and span[1] > span[0]]
            edge = len(text) if left else 0
            start, end = (spans[0][0], spans[-1][1]) if spans else (edge, edge)
            kept.append(text[start:] if left else text[:end])
            dropped.append(" ".join(piece.strip() for piece in (text[:start], text[end:]) if piece.strip()))
        return tuple(kept), " / ".join(_quoted(words) for words in dropped if words)
    if len(parts) > 1:
        return parts, ""
    ids = tokenizer(parts[0], add_special_tokens=False)["input_ids"]
    kept_count = len(ids) - (len(tokenizer(parts[0], add_special_tokens=add_special_tokens)["input_ids"]) - limit)
    return (tokenizer.decode(ids[:kept_count]).strip(),), _quoted(tokenizer.decode(ids[kept_count:]).strip())


def _unknown_words(tokenizer: Any, parts: tuple[str, ...]) -> list[str]:
    """The words of ``parts`` that the tokenizer reads as (or with) its unknown token, named without the
    punctuation around them ('rhombus', not 'rhombus?') unless the punctuation is what it cannot read."""
    unknown_id = getattr(tokenizer, "unk_token_id", None)
    if unknown_id is None:
        return []

    def unknown(word: str) -> bool:
        return unknown_id in tokenizer(word, add_special_tokens=False)["input_ids"]

    words = []
    for text in parts:
        if unknown(text):
            for word in filter(unknown, text.split()):
                bare = word.strip(string.punctuation)
                words.append(bare if bare and unknown(bare) else word)
    return list(dict.fromkeys(words))
