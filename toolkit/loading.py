"""Loading stock models by name (Hugging Face Hub or local folder, timm), with errors that say what to do."""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

from .adapters import supported_families
from .errors import ModelLoadError, UnsupportedModelError

_OFFLINE_HINT = (
    "If this machine is offline, download the model once where there is network "
    "(`huggingface-cli download {name}`, or `model.save_pretrained(folder)` plus the processor's), "
    "copy the folder here and pass its path: Explainer.from_pretrained('/path/to/folder')."
)


def _describe_hub_failure(name: str, error: BaseException) -> str:
    chain, cause = [], error
    while cause is not None and len(chain) < 4:
        chain.append(f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}")
        cause = cause.__cause__ or cause.__context__
    text = " | ".join(chain)
    if "RepositoryNotFound" in text or "is not a local folder and is not a valid model identifier" in text:
        reason = f"there is no model called {name!r} on the Hugging Face Hub, nor a local folder of that name"
    elif os.environ.get("HF_HUB_OFFLINE") == "1":
        reason = "HF_HUB_OFFLINE=1 is set and the model is not in the local cache"
    elif any(s in text for s in ("connect", "LocalEntryNotFound", "resolve", "Name or service", "offline")):
        reason = "the Hugging Face Hub cannot be reached (offline?) and the model is not in the local cache"
    else:
        reason = "its files could not be read"
    return f"Could not load {name!r}: {reason}. ({text})\n" + _OFFLINE_HINT.format(name=name)


def load_huggingface(name: str, **kwargs: Any):
    """A stock HF model loaded with eager attention, and its tokenizer or processor: a sequence or image
    classifier, or an image-text model one of the multimodal adapters knows."""
    from transformers import (AutoConfig, AutoImageProcessor, AutoModelForImageClassification,
                              AutoModelForSequenceClassification, AutoTokenizer)
    from transformers.models.auto.modeling_auto import (MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
                                                        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES)

    from .multimodal import MULTIMODAL_ADAPTERS

    try:
        config = AutoConfig.from_pretrained(name)
        multimodal = next((a for a in MULTIMODAL_ADAPTERS if config.model_type in a.model_types), None)
        if multimodal is not None:
            return multimodal.load(name, **kwargs)
        if config.model_type in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES and not (
                config.model_type in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES):
            model = AutoModelForImageClassification.from_pretrained(name, attn_implementation="eager", **kwargs)
            processor = AutoImageProcessor.from_pretrained(name)
        elif config.model_type in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES:
            model = AutoModelForSequenceClassification.from_pretrained(name, attn_implementation="eager", **kwargs)
            processor = AutoTokenizer.from_pretrained(name)
        else:
            raise UnsupportedModelError(
                f"{name!r} is a {config.model_type!r} model, which is neither a sequence nor an image classifier "
                "nor an image-text model the toolkit knows. Supported families:\n  - "
                + "\n  - ".join(supported_families()))
    except (UnsupportedModelError, TypeError):
        raise
    except (OSError, ValueError) as error:
        raise ModelLoadError(_describe_hub_failure(name, error)) from error
    return model, processor


def load_timm(name: str, pretrained: bool = True, **kwargs: Any):
    """A timm model by name; ``pretrained=False`` gives random weights (no download)."""
    import timm

    if name not in timm.list_models(pretrained=False) and name.split(".")[0] not in timm.list_models():
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        raise ModelLoadError(f"Unknown timm model {name!r}." + (f" Did you mean {', '.join(close)}?" if close else ""))
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs), None
    except (OSError, RuntimeError) as error:
        raise ModelLoadError(
            f"Could not load timm weights for {name!r}: {type(error).__name__}: {str(error).splitlines()[0]}\n"
            "If this machine is offline, pass a local checkpoint: "
            "Explainer.from_pretrained(name, source='timm', pretrained=True, "
            "pretrained_cfg_overlay=dict(file='/path/to/weights.safetensors')), "
            "or pretrained=False for random weights."
        ) from error


def load_open_clip(name: str, pretrained: str | None = "openai", **kwargs: Any):
    """An open_clip model and its (eval transform, tokenizer); ``pretrained``: a tag, a local checkpoint
    file, or None for random weights (no download)."""
    import open_clip

    if not name.startswith(("hf-hub:", "local-dir:")):  # names with a schema bring their own weights
        builtin = name.replace("/", "-")
        if builtin not in open_clip.list_models():
            close = difflib.get_close_matches(builtin, open_clip.list_models(), n=3)
            raise ModelLoadError(f"Unknown open_clip model {name!r}."
                                 + (f" Did you mean {', '.join(close)}?" if close else ""))
        known = not pretrained or Path(pretrained).is_file() or open_clip.get_pretrained_cfg(builtin, pretrained)
        if not known:
            tags = ", ".join(open_clip.list_pretrained_tags_by_model(builtin)) or "none"
            what = (f"No checkpoint file at {pretrained!r}" if Path(pretrained).suffix or os.sep in pretrained
                    else f"{pretrained!r} is not a pretrained tag of open_clip's {name!r}")
            raise ModelLoadError(f"{what}. pretrained= takes a tag ({tags}), a local checkpoint file, "
                                 "or None for random weights.")
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, **kwargs)
        tokenizer = open_clip.get_tokenizer(name)
    except (OSError, RuntimeError) as error:
        raise ModelLoadError(
            f"Could not load open_clip {name!r} with pretrained={pretrained!r}: {type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}\n"
            "If this machine is offline, run open_clip.create_model(name, pretrained=tag) once where there is "
            "network (it caches the weights under ~/.cache/huggingface), copy the checkpoint file here and pass "
            f"its path: Explainer.from_pretrained({name!r}, source='open_clip', "
            "pretrained='/path/to/open_clip_model.safetensors') (a .bin or .pt file works too), "
            "or pretrained=None for random weights."
        ) from error
    return model.eval(), (preprocess, tokenizer)


def guess_source(name: str) -> str:
    """'hf' for local folders and hub ids, 'timm' for names timm knows, 'open_clip' for open_clip's."""
    if Path(name).is_dir():
        return "hf"
    try:
        import timm

        if "/" not in name and (name in timm.list_models() or name.split(".")[0] in timm.list_models()):
            return "timm"
    except ImportError:
        pass
    try:
        import open_clip

        if name in open_clip.list_models():
            return "open_clip"
    except ImportError:
        pass
    return "hf"
