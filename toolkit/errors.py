"""Errors raised by the toolkit: each says what went wrong and what to do instead; warnings when an input is
read differently from how it was given."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Iterator

_PACKAGE = str(Path(__file__).resolve().parent) + os.sep


class ToolkitError(Exception):
    """Base class of every error the toolkit raises on purpose."""


class InputError(ToolkitError, ValueError):
    """The input (text, image, tensor or target) cannot be explained as given."""


class UnsupportedModelError(ToolkitError, TypeError):
    """No adapter knows this model family, or the model cannot expose what a method needs."""


class UnknownMethodError(ToolkitError, KeyError):
    """No explanation method is registered under this name."""

    def __str__(self) -> str:  # KeyError would otherwise quote the whole message
        return str(self.args[0]) if self.args else ""


class ModelLoadError(ToolkitError, OSError):
    """A model or its processor could not be loaded (offline, unknown name, missing files)."""


class ConfigError(ToolkitError, ValueError):
    """A batch-run configuration or a model-family declaration is malformed."""


class FamilyError(ConfigError, UnsupportedModelError):
    """A family declaration (a YAML entry) does not fit the model: a path that matches nothing, a head that does
    not give the logits, a capture point the forward pass never calls. The message names the entry, what it
    expected and the module paths that do exist nearby."""


class ToolkitWarning(UserWarning):
    """Something was changed or read differently from what was given (text cut to the model's length, words
    outside its vocabulary, an image tensor resized): the result is still computed, but the user should know."""


def warn(message: str) -> None:
    """A ToolkitWarning attributed to the caller's own line: the first frame outside this package."""
    frame, level = sys._getframe(1), 2
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, ToolkitWarning, stacklevel=level)


@contextlib.contextmanager
def quiet_logger(name: str | None) -> Iterator[None]:
    """Inside the block, logger ``name`` (None: the root logger) passes on critical records only: for a library's
    log lines that a toolkit error or warning says better."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
