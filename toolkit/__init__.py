"""Explain transformer models: attention-based and relevancy-propagation explanations of stock
Hugging Face and timm models, batched and faithful to the papers' equations."""

__version__ = "0.1.0"

from .adapters import register_adapter, supported_families
from .errors import (ConfigError, FamilyError, InputError, ModelLoadError, ToolkitError, ToolkitWarning,
                     UnknownMethodError, UnsupportedModelError)
from .explainer import Explainer
from .explanation import Explanation
from .families import register_family
from .methods import get_method, list_methods

__all__ = [
    "ConfigError", "Explainer", "Explanation", "FamilyError", "InputError", "ModelLoadError", "ToolkitError", "ToolkitWarning",
    "UnknownMethodError", "UnsupportedModelError", "get_method", "list_methods", "register_adapter",
    "register_family", "supported_families",
]
