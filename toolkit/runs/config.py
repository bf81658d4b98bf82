"""The schema of a batch run's YAML file: validated, with every value overridable, before any model loads.

Each key is a field below; its description is the documentation (``python -m toolkit run --keys`` prints it, the
README lists it). Shorthands: ``model: vit`` is ``model: {name: vit}``, ``executor: ray`` is ``executor: {kind: ray}``,
``target: predicted`` is ``target: {}``, and a method may be a name or ``{name, options, label}``. Relative paths in
the file are read from the file's folder; paths given with ``--set`` from the current folder.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import ConfigError
from ..evaluation.metrics import DEFAULT_STEPS
from ..methods import get_method, list_methods
from ..zoo import MODULES

ZERO_SHOT = "minilm-zero-shot"
BUILTIN_MODELS = (*MODULES, ZERO_SHOT)
TASKS = ("image-classification", "text-classification", "image-text-similarity", "vqa", "captioning")
# What each task reads from an item (a data role), and what it may read.
NEEDS = {"image-classification": ("image",), "text-classification": ("text",),
         "image-text-similarity": ("image", "caption"), "vqa": ("image", "question"), "captioning": ("image",)}
ROLES = ("id", "image", "text", "text_pair", "question", "caption")
SCENE_COLUMNS = ("image", "label", "caption", "question", "answer")
# Options of Explainer.explain beyond a method's own: CLIP's text tower, a language model's first position.
EXPLAIN_OPTIONS = ("start_layer_text", "keep_sink")


class Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(Schema):
    """The model to explain."""

    name: str = Field(min_length=1, description="a built-in model (vit, clip, vilt, captioner, minilm-zero-shot), "
                                                "a Hugging Face Hub name, a local folder, a timm or open_clip name")
    source: Literal["auto", "builtin", "hf", "timm", "open_clip"] = Field(
        "auto", description="where `name` comes from; auto: built-in, else as Explainer.from_pretrained guesses")
    pretrained: str | None = Field(None, description="open_clip: the pretrained tag or a local checkpoint file")
    family: str | dict[str, Any] | None = Field(
        None, description="a new architecture's family declaration: a YAML file or an inline mapping "
                          "(README: 'A model the toolkit does not know')")
    labels: dict[str, str] | None = Field(None, description="minilm-zero-shot: label -> description")

    @property
    def builtin(self) -> bool:
        return self.source == "builtin" or (self.source == "auto" and self.name in BUILTIN_MODELS)

    @model_validator(mode="after")
    def _fits(self) -> "ModelConfig":
        if self.source == "builtin" and self.name not in BUILTIN_MODELS:
            raise ValueError(f"no built-in model {self.name!r}; built-in: {', '.join(BUILTIN_MODELS)}")
        if self.labels is not None and self.name != ZERO_SHOT:
            raise ValueError(f"labels apply only to {ZERO_SHOT}")
        if self.pretrained is not None and self.source != "open_clip":
            raise ValueError("pretrained applies only to source: open_clip")
        return self


class MethodConfig(Schema):
    """One explanation method and its options; ``label`` names it in the outputs (default: the method's name)."""

    name: str = Field(description="a method of `python -m toolkit methods`")
    options: dict[str, Any] = Field(default_factory=dict, description="e.g. {start_layer: 1, keep_identity: true}")
    label: str | None = Field(None, description="the name in tables and the report (two entries of one method "
                                                "with different options need different labels)")

    @property
    def key(self) -> str:
        return self.label or self.name

    @model_validator(mode="after")
    def _known(self) -> "MethodConfig":
        known = ["auto", *list_methods()]  # auto: each model's default (Explainer.default_method)
        if self.name not in known:
            close = difflib.get_close_matches(self.name, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"unknown method {self.name!r}; {hint}methods: {', '.join(known)}")
        valid = [*(get_method(self.name).option_names() if self.name != "auto" else []), *EXPLAIN_OPTIONS]
        for option in self.options:
            if option not in valid:
                close = difflib.get_close_matches(option, valid, n=1)
                raise ValueError(f"{self.name} has no option {option!r}; "
                                 + (f"did you mean {close[0]!r}? " if close else "") + f"options: {', '.join(valid)}")
        return self


class DataConfig(Schema):
    """Where the items come from."""

    kind: Literal["images", "table", "scenes"] = Field(
        description="images: a folder of image files; table: a CSV, JSONL or Parquet file or a Hugging Face "
                    "`datasets` folder (save_to_disk); scenes: the built-in scene world, with ground truth")
    path: str | None = Field(None, description="images and table: the folder or file")
    pattern: str = Field("**/*", description="images: which files of the folder (glob; **/ descends)")
    columns: dict[str, str] = Field(default_factory=dict,
                                    description=f"table: role -> column, roles {', '.join(ROLES)} (an image column "
                                                "holds paths relative to the table, or image bytes); a role "
                                                "left out reads the column of its own name")
    split: str | None = Field(None, description="a `datasets` DatasetDict folder: the split (default: the first)")
    count: int | None = Field(None, ge=1, description="scenes: how many")
    seed: int = Field(3, ge=0, description="scenes: the seed of the scene world (3 is held out from the zoo's training)")
    limit: int | None = Field(None, ge=1, description="only the first `limit` items")

    @model_validator(mode="after")
    def _complete(self) -> "DataConfig":
        if self.kind == "scenes":
            if self.count is None:
                raise ValueError("scenes need `count`, the number of scenes (e.g. count: 100)")
            if self.path is not None:
                raise ValueError("scenes are generated: leave out `path`")
        elif self.path is None:
            raise ValueError(f"{self.kind} need `path`, the {'folder' if self.kind == 'images' else 'file or folder'}")
        unknown = sorted(set(self.columns) - set(ROLES))
        if unknown:
            raise ValueError(f"unknown roles {unknown} in columns; roles: {', '.join(ROLES)}")
        return self


class TargetConfig(Schema):
    """What each item is explained for: the prediction (neither key), a column's value, or one fixed class."""

    column: str | None = Field(None, description="the column (of a table or a scene: label, answer) holding the "
                                                 "class index or name, or the VQA answer")
    fixed: int | str | None = Field(None, description="one class index or name for every item")

    @model_validator(mode="after")
    def _one(self) -> "TargetConfig":
        if self.column is not None and self.fixed is not None:
            raise ValueError("give `column` or `fixed`, not both")
        return self


class EvaluationConfig(Schema):
    """How each explanation is scored."""

    perturbation: bool = Field(True, description="deletion test: remove the most relevant patches (or words) "
                                                 "first and track the explained score; AUC, lower is better")
    least_relevant_first: bool = Field(False, description="also the deletion test least relevant first (lerf_auc: the "
                                                          "score should hold; higher is better)")
    steps: tuple[float, ...] = Field(DEFAULT_STEPS, description="the shares removed")
    ground_truth: bool = Field(True, description="scenes: relevance mass, rank accuracy and pointing game against "
                                                 "the objects' masks (and the words that name them)")

    @model_validator(mode="after")
    def _shares(self) -> "EvaluationConfig":
        if len(self.steps) < 2 or any(not 0 <= s < 1 for s in self.steps) or list(self.steps) != sorted(self.steps):
            raise ValueError("steps must be at least two increasing shares in [0, 1), e.g. [0, 0.1, 0.2]")
        return self


class OutputConfig(Schema):
    """What is written, and where."""

    folder: str | None = Field(None, description="the run folder (default: runs/<config file name>)")
    overlays: bool = Field(True, description="per item and method: the heatmap over the image (PNG)")
    arrays: bool = Field(True, description="per item and method: the explanation (npz, Explanation.load)")
    html: bool = Field(True, description="per item and method: the highlighted text (HTML), where there is text")


class ExecutorConfig(Schema):
    """Where the work runs."""

    kind: Literal["local", "ray"] = Field("local", description="local (this process) or ray (Ray Data)")
    workers: int = Field(1, ge=1, description="ray: model replicas (map_batches concurrency)")
    num_cpus: float = Field(1, gt=0, description="ray: CPUs per replica")
    num_gpus: float = Field(0, ge=0, description="ray: GPUs per replica")
    address: str | None = Field(None, description="ray: a cluster's address (default: the one running, or local)")


class RunConfig(Schema):
    """A batch run: a model, a task, methods, data, targets, evaluation, and how and where it runs."""

    model: ModelConfig
    task: Literal["image-classification", "text-classification", "image-text-similarity", "vqa", "captioning"] = Field(
        description="what is explained: image-classification (column image), text-classification (text, optional "
                    "text_pair), image-text-similarity (image, caption), vqa (image, question), captioning (image; "
                    "a caption column is explained by teacher forcing, else the generated caption)")
    methods: list[MethodConfig] = Field(min_length=1, description="names, or {name, options, label}")
    data: DataConfig
    target: TargetConfig = Field(default_factory=TargetConfig, description="predicted, {column: c} or {fixed: v}")
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    batch_size: int = Field(16, ge=1, description="items per batch (and per commit to the run folder)")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    precision: Literal["float32", "float16", "bfloat16"] = Field("float32", description="the model's weights")
    seed: int = Field(0, ge=0, description="torch, numpy and random seed")
    output: OutputConfig = Field(default_factory=OutputConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)

    @model_validator(mode="after")
    def _consistent(self) -> "RunConfig":
        keys = [m.key for m in self.methods]
        if len(set(keys)) != len(keys):
            raise ValueError(f"two methods share the label {[k for k in keys if keys.count(k) > 1][0]!r}: "
                             "give one a `label`")
        if self.data.kind == "images" and self.task != "image-classification" and self.task != "captioning":
            raise ValueError(f"a folder of images gives images only; {self.task} also needs "
                             f"{', '.join(r for r in NEEDS[self.task] if r != 'image')}: use a table (kind: table)")
        if self.data.kind == "images" and self.target.column is not None:
            raise ValueError("a folder of images has no columns for target.column: use a table, or target.fixed")
        if self.data.kind == "scenes" and self.target.column not in (None, *SCENE_COLUMNS):
            raise ValueError(f"scenes have the columns {', '.join(SCENE_COLUMNS)}; target.column "
                             f"{self.target.column!r} is none of them")
        if self.data.kind == "scenes" and self.task == "text-classification":
            raise ValueError("scenes are images: text-classification needs a table of texts")
        if not self.device.startswith(("auto", "cpu", "cuda", "mps")):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N; got {self.device!r}")
        return self

    def fingerprint(self) -> str:
        """What the results depend on: a changed fingerprint refuses to resume into an old run's folder. How many
        items (``data.limit``, ``data.count``) is left out: a run grows or stops early under the same ids."""
        relevant = self.model_dump(mode="json", include=FINGERPRINTED, exclude={"data": {"limit", "count"}})
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


FINGERPRINTED = {"model", "task", "methods", "data", "target", "evaluation", "precision", "seed"}
SECTIONS: dict[str, type[Schema]] = {"": RunConfig, "model": ModelConfig, "methods": MethodConfig,
                                     "data": DataConfig, "target": TargetConfig, "evaluation": EvaluationConfig,
                                     "output": OutputConfig, "executor": ExecutorConfig}
SHORTHANDS = {"model": "name", "executor": "kind"}  # a plain value of these sections is this key's value
PATH_KEYS = (("data", "path"), ("model", "family"))


# --- reading --------------------------------------------------------------------------------------

def _expanded(raw: dict[str, Any]) -> dict[str, Any]:
    """The shorthands of the module docstring written out, so that --set and the schema see one form."""
    raw = dict(raw)
    for section, key in SHORTHANDS.items():
        if section in raw and not isinstance(raw[section], dict):
            raw[section] = {key: raw[section]}
    if raw.get("target") in ("predicted", None) and "target" in raw:
        raw["target"] = {}
    if isinstance(raw.get("methods"), str):
        raw["methods"] = [part.strip() for part in raw["methods"].split(",") if part.strip()]
    if isinstance(raw.get("methods"), list):
        raw["methods"] = [{"name": m} if isinstance(m, str) else m for m in raw["methods"]]
    return raw


def parse_override(assignment: str) -> tuple[list[str], Any]:
    """``a.b=value`` as (["a", "b"], value), the value read as YAML (a number, true, [x, y], ...)."""
    dotted, sign, text = assignment.partition("=")
    keys = [k.strip() for k in dotted.split(".")]
    if not sign or not all(keys):
        raise ConfigError(f"--set {assignment!r}: write KEY=VALUE with a dotted key, e.g. --set data.limit=500 or "
                          "--set methods=[generic,rollout]")
    try:
        return keys, yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {assignment!r}: the value is not valid YAML ({error})") from None


def apply_override(raw: dict[str, Any], keys: list[str], value: Any) -> None:
    node = raw
    for depth, key in enumerate(keys[:-1]):
        if key in SHORTHANDS and depth == 0 and key in node and not isinstance(node[key], dict):
            node[key] = {SHORTHANDS[key]: node[key]}
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {'.'.join(keys)}: {'.'.join(keys[:depth + 1])} is {node!r}, not a section")
    node[keys[-1]] = value


def _line_of(document: yaml.Node | None, location: tuple) -> int | None:
    """The line of ``location`` (a pydantic error's loc) in the YAML file, or None (a --set value, a default)."""
    node, line = document, None
    for part in location:
        if isinstance(node, yaml.MappingNode):
            found = next(((k, v) for k, v in node.value if k.value == part), None)
            if found is None:
                return None
            line, node = found[0].start_mark.line + 1, found[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return None
    return line


def _describe(error: ValidationError, origin: str, document: yaml.Node | None, overridden: set[str]) -> str:
    lines = []
    for item in error.errors():
        location = tuple(part for part in item["loc"] if not (isinstance(part, str) and part[:1].isupper()))
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in location).lstrip(".") or "(top level)"
        line = _line_of(document, location)
        from_set = any(where == key or where.startswith(key + ".") or where.startswith(key + "[")
                       for key in overridden)
        at = f"{where} (from --set)" if from_set else f"{where} (line {line})" if line else where
        if item["type"] == "extra_forbidden":
            section = SECTIONS.get(next((p for p in location[:-1] if isinstance(p, str)), ""), RunConfig)
            valid = list(section.model_fields)
            close = difflib.get_close_matches(str(location[-1]), valid, n=1, cutoff=0.5)
            parent = ".".join(p for p in location[:-1] if isinstance(p, str))
            suggestion = f"did you mean {(parent + '.' if parent else '') + close[0]!r}? " if close else ""
            message = f"unknown key; {suggestion}valid keys here: {', '.join(valid)}"
        elif item["type"] == "missing":
            message = "missing: this key is required"
        else:
            message = item["msg"].removeprefix("Value error, ")
            if "input" in item and item["type"] not in ("value_error",) and not isinstance(item["input"], dict):
                message += f" (got {item['input']!r})"
        lines.append(f"  {at}: {message}")
    return f"The run config {origin} is not valid:\n" + "\n".join(lines)


def _absolute(raw: dict[str, Any], base: Path) -> None:
    """Relative paths (data.path, a model.family file, a model folder) read from ``base``."""
    for section, key in PATH_KEYS:
        value = raw.get(section, {}).get(key) if isinstance(raw.get(section), dict) else None
        if isinstance(value, str) and not Path(value).expanduser().is_absolute():
            raw[section][key] = str((base / Path(value).expanduser()).resolve())
    model = raw.get("model")
    if isinstance(model, dict) and isinstance(model.get("name"), str) and model["name"].startswith((".", "/", "~")):
        model["name"] = str((base / Path(model["name"]).expanduser()).resolve())


def _check_files(config: RunConfig, origin: str) -> None:
    """Files the config names exist, reported with their key and path before anything loads."""
    missing = []
    if config.data.path is not None:
        path = Path(config.data.path)
        if not path.exists():
            missing.append(f"data.path: {path} does not exist")
        elif config.data.kind == "images" and not path.is_dir():
            missing.append(f"data.path: {path} is a file; kind: images reads a folder (kind: table reads a file)")
    if isinstance(config.model.family, str) and not Path(config.model.family).is_file():
        missing.append(f"model.family: {config.model.family} is not a file (give a YAML file or an inline mapping)")
    if config.model.name.startswith("/") and not Path(config.model.name).is_dir():
        missing.append(f"model.name: the folder {config.model.name} does not exist")
    if missing:
        raise ConfigError(f"The run config {origin} names files that are not there:\n  " + "\n  ".join(missing))


def load_config(path: str | os.PathLike, overrides: list[str] = ()) -> RunConfig:
    """The checked config of the YAML file ``path`` with ``--set`` ``overrides`` applied, or a ConfigError saying
    where and what to fix. Reads no model."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        document = yaml.compose(text)
        raw = yaml.safe_load(text)
    except OSError as error:
        raise ConfigError(f"Cannot read the run config {path}: {error.strerror or error}.") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"The run config {path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"The run config {path} must be a mapping of keys ({', '.join(RunConfig.model_fields)}) "
                          f"to values; got {type(raw).__name__}. See configs/ for examples.")
    raw = _expanded(raw)
    _absolute(raw, path.parent.resolve())
    for assignment in overrides:
        keys, value = parse_override(assignment)
        if keys[0] not in RunConfig.model_fields:
            close = difflib.get_close_matches(keys[0], list(RunConfig.model_fields), n=1, cutoff=0.5)
            raise ConfigError(f"--set {assignment!r}: unknown key {keys[0]!r}"
                              + (f"; did you mean {close[0]!r}?" if close else "")
                              + f" Valid keys: {', '.join(RunConfig.model_fields)}")
        apply_override(raw, keys, value)
        raw = _expanded(raw)
        _absolute({keys[0]: raw[keys[0]]} if keys[0] in ("data", "model") else {}, Path.cwd())
    if raw.get("output", {}).get("folder") is None:
        raw.setdefault("output", {})["folder"] = str(Path("runs") / path.stem)
    try:
        config = RunConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_describe(error, str(path), document,
                                    {assignment.partition("=")[0].strip() for assignment in overrides})) from None
    _check_files(config, str(path))
    return config


def to_yaml(config: RunConfig) -> str:
    """The resolved config (every default written out), as saved beside a run's outputs; load_config reads it."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def documentation() -> str:
    """Every key with its type, default and description, from the schema (for `run --keys` and the README)."""
    lines = []
    for section, schema in SECTIONS.items():
        for name, field in schema.model_fields.items():
            if section == "" and name in SECTIONS:
                lines.append(f"- `{name}`: {SECTIONS[name].__doc__.splitlines()[0]}"
                             + (f" Shorthand: {name}: <{SHORTHANDS[name]}>." if name in SHORTHANDS else ""))
                continue
            default = "required" if field.is_required() else f"default {field.get_default(call_default_factory=True)!r}"
            key = f"{section}.{name}" if section else name
            if section == "methods":
                key = f"methods[].{name}"
            lines.append(f"- `{key}` ({default}): {field.description or ''}")
    return "\n".join(lines)
