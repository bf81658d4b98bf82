"""The registry of explanation methods, by name."""
from __future__ import annotations

import difflib

from ..errors import UnknownMethodError

_METHODS: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: make a :class:`~toolkit.methods.base.Method` available by its ``name``."""
    _METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type:
    if name not in _METHODS:
        close = difflib.get_close_matches(str(name), list(_METHODS), n=3, cutoff=0.4)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownMethodError(f"Unknown method {name!r}.{hint} Available methods: {', '.join(sorted(_METHODS))}.")
    return _METHODS[name]


def list_methods(details: bool = False) -> list[str] | dict[str, str]:
    """Registered method names (or name -> one-line summary with ``details=True``)."""
    if details:
        return {name: cls.summary for name, cls in sorted(_METHODS.items())}
    return sorted(_METHODS)
