"""Finding a class or an answer by name: case-insensitively, and by any of its comma-separated synonyms
(ImageNet-style names such as "tabby, tabby cat" answer to "tabby" and to "Tabby Cat")."""
from __future__ import annotations

import difflib

from .errors import InputError

SHOWN_CLOSE_NAMES = 20


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def synonyms(label: str) -> list[str]:
    """The comma-separated names of ``label``, normalised (lower case, single spaces)."""
    return [part for part in (_normalise(piece) for piece in label.split(",")) if part]


def find_label(name: str, labels: dict[int, str], kind: str = "label") -> int:
    """The index of ``name`` among ``labels``: a whole label first, else one of its synonyms; an unknown or
    ambiguous name raises :class:`InputError` listing close names and how to see them all."""
    wanted = _normalise(name)
    for candidates in (lambda label: [_normalise(label)], synonyms):
        hits = sorted(index for index, label in labels.items() if wanted in candidates(label))
        if len(hits) == 1:
            return hits[0]
        if hits:
            listed = ", ".join(f"{index}: {labels[index]!r}" for index in hits)
            raise InputError(f"{kind.capitalize()} {name!r} names {len(hits)} {kind}s ({listed}); "
                             "pass the index of the one you mean.")
    raise InputError(unknown_label_message(name, labels, kind))


def unknown_label_message(name: str, labels: dict[int, str], kind: str = "label") -> str:
    """Says how many names the model has, lists at most :data:`SHOWN_CLOSE_NAMES` of those closest to
    ``name`` (all of them when there are few), and how to list them all."""
    if not labels:
        return f"Unknown {kind} {name!r}: this model's {kind}s have no names; pass an index instead."
    if len(labels) <= SHOWN_CLOSE_NAMES:
        shown, what = sorted(labels), f"its {kind}s"
    else:
        shown, what = close_labels(name, labels), f"close {kind}s"
    listing = "; ".join(f"{index}: {labels[index]!r}" for index in shown)
    found = f"{what}: {listing}" if shown else f"none is close to {name!r}"
    article = "an" if kind[0] in "aeiou" else "a"
    return (f"Unknown {kind} {name!r}: this model has {len(labels)} {kind}s; {found}. Pass {article} {kind} name "
            f"(any of its comma-separated names, in any case) or an index; Explainer.labels lists them all "
            f"(index -> name).")


def close_labels(name: str, labels: dict[int, str], limit: int = SHOWN_CLOSE_NAMES) -> list[int]:
    """Indices of the labels with ``name`` as a word of a name (e.g. "cat" in "tiger cat"), then of those
    spelled like it (best first), then of those containing it; at most ``limit``."""
    wanted = _normalise(name)
    owners: dict[str, list[int]] = {}
    for index, label in sorted(labels.items()):
        for text in dict.fromkeys([_normalise(label), *synonyms(label)]):
            owners.setdefault(text, []).append(index)
    as_word = [text for text in owners if wanted and f" {wanted} " in f" {text} "]
    spelled = difflib.get_close_matches(wanted, list(owners), n=limit, cutoff=0.6)
    containing = [text for text in owners if wanted and wanted in text]
    found = [index for text in as_word + spelled + containing for index in owners[text]]
    return list(dict.fromkeys(found))[:limit]


def ranked_labels(probabilities: list[float], top_k: int, labels: dict[int, str]) -> list[tuple[str, float]]:
    """(label, probability) of the ``top_k`` highest probabilities (one per class index), highest first."""
    order = sorted(range(len(probabilities)), key=lambda index: -probabilities[index])[:top_k]
    return [(labels.get(index, str(index)), float(probabilities[index])) for index in order]
