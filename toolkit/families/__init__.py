"""Model families as data: the built-in classifier families live in ``families.yaml`` beside this file, users add
their own as YAML entries of the same form (``Explainer(model, processor, family="my.yaml")``, or
:func:`register_family` for every model that matches). See :mod:`toolkit.families.declaration` for the keys.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch.nn as nn

from ..errors import FamilyError
from .declaration import KEYS, Family, Layout

BUILT_IN = Path(__file__).with_name("families.yaml")
_registered: list[Family] = []


def _read_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise FamilyError(f"Cannot read the family file {str(path)!r}: {error.strerror or error}.") from error
    except yaml.YAMLError as error:
        raise FamilyError(f"The family file {str(path)!r} is not valid YAML: {error}") from error


def parse(declarations: Any, origin: str, default_name: str = "custom") -> list[Family]:
    """The families of a YAML document or dict: one entry (it has ``layers``), or a mapping of names to entries."""
    if not isinstance(declarations, Mapping) or not declarations:
        raise FamilyError(f"{origin} declares no family: give one entry (a mapping with layers, probs, ...) or a "
                          f"mapping of family names to entries. Keys of an entry: {', '.join(KEYS)}.")
    if "layers" in declarations:
        return [Family.parse(default_name, dict(declarations), origin)]
    return [Family.parse(str(name), entry, origin) for name, entry in declarations.items()]


def load(source: str | Path | Mapping) -> list[Family]:
    """The families declared in a YAML file (a path) or a dict."""
    if isinstance(source, Mapping):
        return parse(source, "a family dict")
    path = Path(source).expanduser()
    if not path.is_file():
        raise FamilyError(f"No family file at {str(source)!r} ({path.resolve()} "
                          f"{'is a folder' if path.is_dir() else 'does not exist'}): pass the path of a YAML file, "
                          "or the entry itself as a dict.")
    return parse(_read_yaml(path), str(path), default_name=path.stem)


@functools.lru_cache(maxsize=1)
def built_in() -> tuple[Family, ...]:
    return tuple(parse(_read_yaml(BUILT_IN), BUILT_IN.name))


def all_families() -> list[Family]:
    """Registered families first (the most recent first), then the built-in ones."""
    return [*_registered, *built_in()]


def register_family(source: str | Path | Mapping) -> list[Family]:
    """Add the families of a YAML file or dict to the lookup, before the built-in ones: every model their
    ``match`` fits is then explained through them."""
    families = load(source)
    for family in families:
        if not family.get("match"):
            raise family.error("a registered family needs a match (model_type, class or config) to know its models")
    _registered[:0] = families
    return families


def find(model: nn.Module, layout_only: bool = False) -> Family | None:
    """The family that explains ``model``: of the entries that match, the one whose class pattern is nearest to
    the model's own class; registered families before built-in ones on a tie."""
    best, best_score = None, None
    for family in all_families():
        score = family.specificity(model, layout_only)
        if score is not None and (best_score is None or score < best_score):
            best, best_score = family, score
    return best


def select(source: str | Path | Mapping | Family, model: nn.Module) -> Family:
    """The family a user names for ``model``: the only entry of a file or dict, or the one whose match fits."""
    if isinstance(source, Family):
        return source
    families = load(source)
    if len(families) == 1:
        return families[0]
    fitting = [family for family in families if family.specificity(model) is not None]
    if not fitting:
        raise FamilyError(f"None of the families in {families[0].origin} ({', '.join(f.name for f in families)}) "
                          f"matches {type(model).__name__}: pass a file with one entry, or fix their match.")
    return min(fitting, key=lambda family: family.specificity(model))


def layout_for(model: nn.Module) -> Layout | None:
    """The declared layout of ``model`` for the attention views (any model of a declared type), or None."""
    family = find(model, layout_only=True)
    return None if family is None else family.bind(model)


__all__ = ["Family", "Layout", "all_families", "built_in", "find", "layout_for", "load", "register_family", "select"]
