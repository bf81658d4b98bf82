"""Errors raised by the toolkit: each says what went wrong and what to do instead."""


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
    """A batch-run configuration is malformed."""
