"""What a demo serves: the models of each tab and the serving limits, read from YAML and checked.

A config is a mapping; each tab's key holds a list of models (a name, or a mapping with ``model`` and its
options). A tab left out keeps its built-in model; an empty list hides the tab::

    title: Explain my classifiers
    text:
      - minilm-zero-shot
      - distilbert-base-uncased-finetuned-sst-2-english
    image: [vit, {model: vit_base_patch16_224, source: timm}]
    image_text: [clip, {model: ViT-B-32, source: open_clip, pretrained: openai}]
    vqa: [vilt, dandelin/vilt-b32-finetuned-vqa]
    captioning: [captioner, Salesforce/blip-image-captioning-base]
    serving: {concurrency_limit: 2, max_file_size: 50mb}
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import ConfigError

ZERO_SHOT = "minilm-zero-shot"
# The offline model of each tab: the zero-shot MiniLM from PyPI and the scene zoo (toolkit.zoo).
BUILTIN = {"text": ZERO_SHOT, "image": "vit", "image_text": "clip", "vqa": "vilt", "captioning": "captioner"}
TABS = tuple(BUILTIN)
TAB_TITLES = {"text": "Text classification", "image": "Image classification", "image_text": "Image–text (CLIP)",
              "vqa": "Visual question answering", "captioning": "Captioning"}
BUILTIN_TITLES = {ZERO_SHOT: "MiniLM zero-shot (built-in, editable labels)", "vit": "Scene ViT (built-in)",
                  "clip": "Scene CLIP (built-in)", "vilt": "Scene ViLT (built-in)",
                  "captioner": "Scene captioner (built-in)"}
Source = Literal["auto", "builtin", "hf", "timm", "open_clip"]


class ModelEntry(BaseModel):
    """One model of a tab. ``model``: a built-in name, a Hugging Face Hub id or local folder, a timm name, or an
    open_clip architecture (with ``pretrained``). ``labels``: the zero-shot model's label -> description."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1)
    source: Source = "auto"
    title: str | None = None
    pretrained: str | None = None
    labels: dict[str, str] | None = None

    @property
    def is_builtin(self) -> bool:
        return self.source == "builtin" or (self.source == "auto" and self.model in BUILTIN.values())

    @property
    def is_zero_shot(self) -> bool:
        return self.is_builtin and self.model == ZERO_SHOT

    @property
    def key(self) -> tuple[str, str, str | None]:
        """Entries with the same key share one loaded model (the zero-shot labels are chosen per request)."""
        return (self.resolved_source, self.model, self.pretrained)

    @property
    def display(self) -> str:
        """The name in the model selector."""
        if self.title:
            return self.title
        return BUILTIN_TITLES[self.model] if self.is_builtin else self.model

    @property
    def resolved_source(self) -> str:
        """builtin, hf, timm or open_clip (``auto`` resolved as Explainer.from_pretrained resolves it)."""
        if self.is_builtin:
            return "builtin"
        if self.source == "auto":
            from ..loading import guess_source

            return guess_source(self.model)
        return self.source

    @property
    def hub_id(self) -> str | None:
        """The Hugging Face Hub repository this entry downloads, if any (for a Space's ``models:``)."""
        source = self.resolved_source
        if source == "builtin" or Path(self.model).expanduser().exists():
            return None
        if source == "timm":
            return f"timm/{self.model}"
        if source == "open_clip":
            return self.model.removeprefix("hf-hub:") if self.model.startswith("hf-hub:") else None
        return self.model

    @model_validator(mode="after")
    def _options_fit(self) -> "ModelEntry":
        if self.labels is not None and not self.is_zero_shot:
            raise ValueError(f"labels apply only to the built-in {ZERO_SHOT!r}; {self.model!r} has its own labels")
        if self.labels is not None and not self.labels:
            raise ValueError("labels must name at least one label")
        if self.pretrained is not None and self.source != "open_clip":
            raise ValueError("pretrained applies only to source: open_clip")
        if self.source == "builtin" and self.model not in BUILTIN.values():
            raise ValueError(f"no built-in model {self.model!r}; built-in: {sorted(BUILTIN.values())}")
        return self


def _entries(value: Any) -> Any:
    """A tab's models: a name is shorthand for ``{model: name}``."""
    if value is None:
        raise ValueError("give a list of models, or [] to hide the tab")
    if isinstance(value, (str, dict)):
        value = [value]
    return [{"model": item} if isinstance(item, str) else item for item in value]


class Serving(BaseModel):
    """Limits that keep one server healthy under many users: per-endpoint concurrency, queue length,
    upload size, decoded image size and text length."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    concurrency_limit: int = Field(2, ge=1, le=64)
    queue_size: int = Field(64, ge=1)
    max_file_size: str | int = "50mb"
    max_image_pixels: int = Field(100_000_000, ge=1)
    max_text_chars: int = Field(100_000, ge=1)


class DemoConfig(BaseModel):
    """The whole demo: a title, the models of each tab (the first is selected), and the serving limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str = "Transformer explainability"
    text: list[ModelEntry] = [ModelEntry(model=BUILTIN["text"])]
    image: list[ModelEntry] = [ModelEntry(model=BUILTIN["image"])]
    image_text: list[ModelEntry] = [ModelEntry(model=BUILTIN["image_text"])]
    vqa: list[ModelEntry] = [ModelEntry(model=BUILTIN["vqa"])]
    captioning: list[ModelEntry] = [ModelEntry(model=BUILTIN["captioning"])]
    attention_views: bool = True
    serving: Serving = Serving()

    @field_validator(*TABS, mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _entries(value)

    @model_validator(mode="after")
    def _builtins_in_their_tabs(self) -> "DemoConfig":
        for tab in TABS:
            for entry in self.models(tab):
                home = next((t for t, name in BUILTIN.items() if name == entry.model), None)
                if entry.is_builtin and home != tab:
                    raise ValueError(f"{entry.model!r} is the built-in model of the {home!r} tab, not of {tab!r}")
            displays = [entry.display for entry in self.models(tab)]
            if len(set(displays)) != len(displays):
                raise ValueError(f"two models of the {tab!r} tab have the same title; give one a `title:`")
        if not any(self.models(tab) for tab in TABS):
            raise ValueError("every tab is empty: list at least one model")
        return self

    def models(self, tab: str) -> list[ModelEntry]:
        return getattr(self, tab)

    def entry(self, tab: str, display: str) -> ModelEntry:
        """The model of ``tab`` shown as ``display`` in its selector."""
        for entry in self.models(tab):
            if display in (entry.display, entry.model):
                return entry
        names = ", ".join(repr(e.display) for e in self.models(tab)) or "none"
        raise ConfigError(f"No model {display!r} in the {TAB_TITLES[tab]} tab; this demo serves {names}.")


def _describe(error: ValidationError, origin: str) -> str:
    """Pydantic's errors as one line each: where (``text[1].source``) and what is wrong."""
    lines = []
    for item in error.errors():
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in item["loc"]).lstrip(".")
        if item["type"] == "extra_forbidden":
            parent = DemoConfig if len(item["loc"]) == 1 else Serving if item["loc"][0] == "serving" else ModelEntry
            message = f"unknown key; valid keys: {', '.join(parent.model_fields)}"
        else:
            message = item["msg"].removeprefix("Value error, ")
        lines.append(f"  {where or '(top level)'}: {message}")
    return f"The demo config {origin} is not valid:\n" + "\n".join(lines)


def parse_config(data: Any, origin: str = "(given)") -> DemoConfig:
    """A checked DemoConfig from a mapping (as read from YAML), or a ConfigError that says what to fix."""
    if not isinstance(data, dict):
        raise ConfigError(f"The demo config {origin} must be a mapping of keys ({', '.join(DemoConfig.model_fields)}) "
                          f"to values; got {type(data).__name__}.")
    try:
        return DemoConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_describe(error, origin)) from None


def load_config(path: str | Path | None = None) -> DemoConfig:
    """The config in the YAML file ``path``; the built-in models without one."""
    if path is None:
        return DemoConfig()
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"Cannot read the demo config {path}: {error.strerror or error}.") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"The demo config {path} is not valid YAML: {error}") from None
    if data is None:
        raise ConfigError(f"The demo config {path} is empty; leave out --config to serve the built-in models.")
    return parse_config(data, str(path))


def to_yaml(config: DemoConfig) -> str:
    """The config as YAML that :func:`load_config` reads back to an equal config (for exported Spaces)."""
    import yaml

    return yaml.safe_dump(config.model_dump(mode="json", exclude_defaults=True), sort_keys=False, allow_unicode=True)
