"""Loading stock models by name (Hugging Face Hub or local folder, timm), with errors that say what to do."""
from __future__ import annotations

import contextlib
import difflib
import functools
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

from .adapters import supported_families
from .errors import ModelLoadError, UnsupportedModelError, quiet_logger, warn

_OFFLINE_HINT = (
    "If this machine is offline, download the model once where there is network "
    "(`huggingface-cli download {name}`, or `model.save_pretrained(folder)` plus the processor's), "
    "copy the folder here and pass its path: Explainer.from_pretrained('/path/to/folder')."
)
_FOLDER_HINT = (
    "A model folder holds config.json, the weights (model.safetensors) and the processor's or tokenizer's "
    "files, as written by model.save_pretrained(folder) and processor.save_pretrained(folder)."
)
HUB_PROBE_TIMEOUT_S = 2.0


# --- the Hub: offline switches, and one quick probe per process ------------------------------------
def hub_offline_reason() -> str | None:
    """Why the Hugging Face Hub cannot be used (an offline switch, or no answer to a quick probe), or None."""
    from huggingface_hub import constants

    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(variable, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return f"{variable}={os.environ[variable]} is set"
    if constants.HF_HUB_OFFLINE:
        return "huggingface_hub's offline mode is on"
    return _probe_hub()


@functools.cache
def _probe_hub() -> str | None:
    """Ask the Hub once per process, with a short timeout, instead of letting every download retry for
    tens of seconds; None when it answers (any HTTP status counts), else what went wrong."""
    from huggingface_hub import constants

    request = urllib.request.Request(constants.ENDPOINT, method="HEAD")
    try:
        urllib.request.urlopen(request, timeout=HUB_PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return None
    except (OSError, ValueError) as error:
        return f"{constants.ENDPOINT} did not answer within {HUB_PROBE_TIMEOUT_S:g} s ({error})"
    return None


@contextlib.contextmanager
def hub_access() -> Iterator[str | None]:
    """Yields why the Hub cannot be reached (None when it can). Meanwhile, when it cannot, loads run in
    huggingface_hub's offline mode: cached files load at once and missing ones fail at once, instead of
    after tens of seconds of retries."""
    reason = hub_offline_reason()
    if reason is None:
        yield None
        return
    from huggingface_hub import constants

    previous, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, True
    try:
        yield reason
    finally:
        constants.HF_HUB_OFFLINE = previous


def _unreachable(offline: str | None) -> str:
    """The sentence that opens a download error when the Hub could not be reached."""
    if offline is None:
        return ""
    return f"the Hugging Face Hub can't be reached ({offline}) and the weights are not in the local cache. "


def _describe_hub_failure(name: str, error: BaseException, offline: str | None = None) -> str:
    chain, cause = [], error
    while cause is not None and len(chain) < 4:
        chain.append(f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}")
        cause = cause.__cause__ or cause.__context__
    text = " | ".join(chain)
    if "RepositoryNotFound" in text or "is not a local folder and is not a valid model identifier" in text:
        reason = f"there is no model called {name!r} on the Hugging Face Hub, nor a local folder of that name"
    elif offline is not None:
        reason = f"the Hugging Face Hub can't be reached ({offline}) and the model is not in the local cache"
    elif any(s in text for s in ("connect", "LocalEntryNotFound", "resolve", "Name or service", "offline")):
        reason = "the Hugging Face Hub cannot be reached (offline?) and the model is not in the local cache"
    else:
        reason = "its files could not be read"
    return f"Could not load {name!r}: {reason}. ({text})\n" + _OFFLINE_HINT.format(name=name)


# --- Hugging Face models ------------------------------------------------------------------------
def local_folder(name: str) -> Path | None:
    """The folder ``name`` names, or None for a Hub id; a name that can only be a path but leads to no
    folder is an error (rather than the Hub's "Repo id must be in the form ...")."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if not (name.startswith(("./", "../", "/", "~")) or os.sep in name):
        return None
    try:
        validate_repo_id(name)
        return None
    except HFValidationError:
        pass
    what = "is a file, not a folder" if path.exists() else "does not exist"
    raise ModelLoadError(f"No folder at {name!r}: {path.resolve()} {what}. Pass the folder that holds the "
                         f"model. {_FOLDER_HINT}")


def load_huggingface(name: str, **kwargs: Any):
    """A stock HF model loaded with eager attention, and its tokenizer or processor: a sequence or image
    classifier, or an image-text model one of the multimodal adapters knows. A local folder or a Hub id;
    when the Hub cannot be reached, the local cache is read without waiting for retries."""
    folder = local_folder(name)
    if folder is None:
        with hub_access() as offline:
            return _load_huggingface(name, kwargs, describe=functools.partial(_describe_hub_failure, offline=offline))
    return _load_huggingface(str(folder), kwargs, describe=_describe_folder_failure)


def _describe_folder_failure(name: str, error: BaseException) -> str:
    return f"Could not load the model folder {name!r}: {type(error).__name__}: {error}\n{_FOLDER_HINT}"


def _load_huggingface(name: str, kwargs: dict[str, Any], describe):
    from safetensors import SafetensorError
    from transformers import (AutoConfig, AutoModelForImageClassification, AutoModelForSequenceClassification,
                              AutoTokenizer)
    from transformers.models.auto.modeling_auto import (MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
                                                        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES)

    from .multimodal import IMAGE_TEXT_ADAPTERS

    try:
        config = AutoConfig.from_pretrained(name)
        multimodal = next((a for a in IMAGE_TEXT_ADAPTERS if config.model_type in a.model_types), None)
        if multimodal is not None:
            model, processor = multimodal.load(name, **kwargs)
            check_vocabulary(name, getattr(processor, "tokenizer", processor))
            return model, processor
        if config.model_type in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES and not (
                config.model_type in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES):
            model = _classifier(AutoModelForImageClassification, name, kwargs)
            return model, _image_processor(name, model.config)
        if config.model_type in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES:
            model = _classifier(AutoModelForSequenceClassification, name, kwargs)
            tokenizer = AutoTokenizer.from_pretrained(name)
            check_vocabulary(name, tokenizer)
            return model, tokenizer
        raise UnsupportedModelError(
            f"{name!r} is a {config.model_type!r} model, which is neither a sequence nor an image classifier "
            "nor an image-text model the toolkit knows. Supported families:\n  - "
            + "\n  - ".join(supported_families()))
    except (ModelLoadError, UnsupportedModelError, TypeError):
        raise
    except SafetensorError as error:
        raise ModelLoadError(_damaged_weights(name, error)) from error
    except (OSError, ValueError) as error:
        raise ModelLoadError(describe(name, error)) from error


def _damaged_weights(name: str, error: Exception) -> str:
    """What to say when a weights file cannot be read: the files, for a local folder."""
    folder = Path(name).expanduser()
    files = sorted(str(path) for path in folder.glob("*.safetensors")) if folder.is_dir() else []
    where = ", ".join(files) if files else f"the .safetensors weights of {name!r}"
    return (f"Could not read the weights in {where}: the file is damaged or incomplete ({error}). Copy or "
            "download it again, or save the model again with model.save_pretrained(folder).")


def _classifier(auto_class: Any, name: str, kwargs: dict[str, Any]):
    """The classifier, with a loud warning when its head was not in the checkpoint (a bare encoder such as
    a saved BertModel or ViTModel): transformers then initialises it at random."""
    model, info = auto_class.from_pretrained(name, attn_implementation="eager", output_loading_info=True, **kwargs)
    fresh = sorted(info.get("missing_keys") or ()) + sorted(str(key[0] if isinstance(key, tuple) else key)
                                                             for key in info.get("mismatched_keys") or ())
    if fresh:
        saved = ", ".join(model.config.architectures or []) or "an unnamed architecture"
        warn(f"RANDOM CLASSIFIER: {name!r} ({saved}) has no trained weights for {', '.join(fresh)}; transformers "
             f"initialised them at random, so {type(model).__name__}'s predictions, and every explanation of "
             "them, are meaningless. Load a checkpoint fine-tuned for classification, or fine-tune this one first.")
    return model


def _image_processor(name: str, config: Any):
    """The checkpoint's image processor; without one, ViT's default (resize to the config's image_size,
    mean = std = 0.5) and a warning."""
    from transformers import AutoImageProcessor, ViTImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(name)
    except OSError:
        pass
    size = config.image_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    processor = ViTImageProcessor(size={"height": height, "width": width})
    warn(f"{name!r} has no image processor (preprocessor_config.json): using ViTImageProcessor, resizing to "
         f"{height}x{width} and normalising with mean={processor.image_mean}, std={processor.image_std}. If the model "
         "was trained with other preprocessing, save its processor next to the weights: "
         "processor.save_pretrained(folder).")
    return processor


def check_vocabulary(name: str, tokenizer: Any) -> None:
    """Refuse a tokenizer with nothing but special tokens: what transformers builds for a folder saved
    without its tokenizer files. There is no default: the vocabulary belongs to the trained weights."""
    if hasattr(tokenizer, "all_special_tokens") and (
            len(tokenizer.get_vocab()) <= len(set(tokenizer.all_special_tokens))):
        raise ModelLoadError(
            f"{name!r} has the model's weights but no tokenizer (no vocabulary: tokenizer.json, vocab.txt, "
            "vocab.json, ...): a text model cannot be read without the vocabulary it was trained with, so there "
            "is no default. Save it next to the weights: tokenizer.save_pretrained(folder) (or the processor's).")


def load_timm(name: str, pretrained: bool = True, **kwargs: Any):
    """A timm model by name; ``pretrained=False`` gives random weights (no download)."""
    import timm

    if name not in timm.list_models(pretrained=False) and name.split(".")[0] not in timm.list_models():
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        raise ModelLoadError(f"Unknown timm model {name!r}." + (f" Did you mean {', '.join(close)}?" if close else ""))
    try:
        with hub_access() if pretrained else contextlib.nullcontext() as offline:
            return timm.create_model(name, pretrained=pretrained, **kwargs), None
    except (OSError, RuntimeError) as error:
        raise ModelLoadError(
            f"Could not load timm weights for {name!r}: {_unreachable(offline)}{type(error).__name__}: "
            f"{str(error).splitlines()[0]}\n"
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
    downloads = name.startswith("hf-hub:") or (pretrained and not Path(pretrained).is_file())
    try:
        # quiet: open_clip logs ERROR:root lines for what it then raises, which the ModelLoadError below says
        with hub_access() if downloads else contextlib.nullcontext() as offline, quiet_logger(None):
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, **kwargs)
            tokenizer = open_clip.get_tokenizer(name)
    except (OSError, RuntimeError) as error:
        raise ModelLoadError(
            f"Could not load open_clip {name!r} with pretrained={pretrained!r}: {_unreachable(offline)}"
            f"{type(error).__name__}: "
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
    if Path(name).expanduser().is_dir():
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
