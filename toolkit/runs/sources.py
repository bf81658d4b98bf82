"""Where a run's items come from: a folder of images, a table (CSV, JSONL, Parquet, a `datasets` folder), or scenes.

Listing is cheap and happens before any model loads: each item is a small dict of plain values (it travels to Ray
workers) with a stable ``id``, a hash of its source and content, which keys it in the manifest. Reading an item
(:func:`read_item`) decodes its image and checks its texts; what cannot be read fails that item alone.
"""
from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, InputError
from .config import NEEDS, RunConfig

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
TABLE_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet")
# Optional roles: read when the table has the column, never required.
OPTIONAL = {"captioning": ("caption",), "text-classification": ("text_pair",)}


def _digest(*parts: Any) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
        hasher.update(b"\0")
    return hasher.hexdigest()[:16]


def _file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "unreadable"


# --- tables ---------------------------------------------------------------------------------------

def _arrow_rows(folder: Path, split: str | None) -> list[dict[str, Any]]:
    """The rows of a `datasets` save_to_disk folder: with `datasets` when installed, else its Arrow files read
    with pyarrow (a Dataset folder lists them in state.json; a DatasetDict folder holds one per split)."""
    import pyarrow as pa

    if (folder / "dataset_dict.json").is_file():
        splits = json.loads((folder / "dataset_dict.json").read_text())["splits"]
        if split is not None and split not in splits:
            raise ConfigError(f"data.split: {folder} has no split {split!r}; splits: {', '.join(splits)}")
        folder = folder / (split or splits[0])
    state = folder / "state.json"
    if not state.is_file():
        raise ConfigError(f"data.path: {folder} is not a Hugging Face `datasets` folder (no state.json or "
                          "dataset_dict.json; write one with Dataset.save_to_disk)")
    tables = []
    for entry in json.loads(state.read_text())["_data_files"]:
        with pa.memory_map(str(folder / entry["filename"])) as source:
            tables.append(pa.ipc.open_stream(source).read_all())
    return pa.concat_tables(tables).to_pylist()


def _read_table(path: Path, split: str | None) -> list[dict[str, Any]]:
    """Every row as a dict; a JSONL line that is not JSON becomes a row that fails with that reason."""
    if path.is_dir():
        return _arrow_rows(path, split)
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as handle:
                return list(csv.DictReader(handle))
        if suffix in (".jsonl", ".json"):
            rows = []
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    row = {"__error__": f"line {number} is not valid JSON ({error.msg})"}
                rows.append(row if isinstance(row, dict) else {"__error__": f"line {number} is not an object"})
            return rows
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ConfigError(f"data.path: cannot read {path} ({error})") from None
    raise ConfigError(f"data.path: {path} is not a table; kind: table reads {', '.join(TABLE_SUFFIXES)} files or a "
                      "`datasets` folder")


def _column_of(role: str, config: RunConfig) -> str:
    return config.data.columns.get(role, role)


def _check_columns(rows: list[dict[str, Any]], config: RunConfig, roles: tuple[str, ...]) -> None:
    """A column no row has is a mistake in the config (caught before the model loads); a value missing from
    some rows fails those items only."""
    present = {key for row in rows for key in row if key != "__error__"}
    if not present:
        return
    wanted = [(f"columns.{role}", _column_of(role, config)) for role in roles]
    if config.target.column is not None:
        wanted.append(("target.column", config.target.column))
    for key, column in wanted:
        if column not in present:
            close = difflib.get_close_matches(column, sorted(present), n=1)
            raise ConfigError(f"data: no column {column!r} in {config.data.path} (needed as {key}"
                              + (f"; did you mean {close[0]!r}?" if close else "")
                              + f"). Columns: {', '.join(sorted(present))}; map roles with data.columns, e.g. "
                              f"columns: {{{key.split('.')[-1]}: {close[0] if close else 'my_column'}}}")


def _image_digest(value: Any, base: Path) -> Any:
    if isinstance(value, dict) and value.get("bytes") is not None:
        return hashlib.sha256(value["bytes"]).hexdigest()
    if isinstance(value, bytes):
        return hashlib.sha256(value).hexdigest()
    if isinstance(value, str):
        return _file_digest(base / value)
    return value


def _table_items(config: RunConfig) -> list[dict[str, Any]]:
    path = Path(config.data.path)
    rows = _read_table(path, config.data.split)
    roles = NEEDS[config.task]
    _check_columns(rows, config, roles)
    optional = OPTIONAL.get(config.task, ())
    base = path if path.is_dir() else path.parent
    items = []
    for index, row in enumerate(rows):
        values = {role: row.get(_column_of(role, config)) for role in (*roles, *optional)}
        item = {"index": index, "error": row.get("__error__"), "base": str(base),
                "target": row.get(config.target.column) if config.target.column else None,
                "missing": [f"{_column_of(role, config)!r}" for role in roles if _blank(values[role])], **values}
        key = row.get(_column_of("id", config), index)
        item["key"] = str(key)
        digest = {role: _image_digest(v, base) if role == "image" else v for role, v in values.items()}
        item["id"] = _digest("table", str(path), item["key"], digest, item["target"])
        items.append(item)
    return items


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


# --- folders and scenes ---------------------------------------------------------------------------

def _folder_items(config: RunConfig) -> list[dict[str, Any]]:
    folder = Path(config.data.path)
    files = sorted(p for p in folder.glob(config.data.pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"data.path: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) matching "
                          f"{config.data.pattern!r} in {folder}")
    return [{"index": index, "key": str(p.relative_to(folder)), "image": str(p.relative_to(folder)),
             "base": str(folder), "missing": [], "error": None, "target": None,
             "id": _digest("images", str(p.relative_to(folder)), _file_digest(p))} for index, p in enumerate(files)]


def _scene_items(config: RunConfig) -> list[dict[str, Any]]:
    seed = config.data.seed
    return [{"index": i, "key": f"scene {seed}/{i}", "scene": [seed, i], "missing": [], "error": None,
             "id": _digest("scenes", seed, i)} for i in range(config.data.count)]


def list_items(config: RunConfig) -> list[dict[str, Any]]:
    """Every item of the run (after ``data.limit``), in a stable order, with ids that do not depend on it."""
    reader = {"images": _folder_items, "table": _table_items, "scenes": _scene_items}[config.data.kind]
    items = reader(config)
    items = items[:config.data.limit] if config.data.limit else items
    ids = [item["id"] for item in items]
    if len(set(ids)) != len(ids):
        _disambiguate(items)
    return items


def _disambiguate(items: list[dict[str, Any]]) -> None:
    """Rows with the same content (a duplicated line) are distinct items: the repeat count joins their id."""
    seen: dict[str, int] = {}
    for item in items:
        count = seen.get(item["id"], 0)
        seen[item["id"]] = count + 1
        if count:
            item["id"] = _digest(item["id"], count)


def shard(items: list[dict[str, Any]], shard_index: int, shards: int) -> list[dict[str, Any]]:
    """Shard ``shard_index`` (1-based) of ``shards``: every shards-th item, so shards are of equal size and mix."""
    return items[shard_index - 1::shards]


# --- reading one item -----------------------------------------------------------------------------

@dataclass
class Loaded:
    """One item ready for a model: the decoded image, its texts, its target and, for scenes, the scene."""

    item: dict[str, Any]
    image: Any = None
    text: str | None = None
    text_pair: str | None = None
    question: str | None = None
    caption: str | None = None
    target: Any = None
    scene: Any = None
    scene_question: Any = None


def _image(value: Any, base: str) -> Any:
    from ..images import to_rgb

    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, bytes):
        from PIL import Image

        try:
            return to_rgb(Image.open(io.BytesIO(value)))
        except OSError as error:
            raise InputError(f"the image bytes cannot be decoded ({error})") from None
    if isinstance(value, str):
        return to_rgb(str(Path(base) / value))
    raise InputError(f"the image is neither a path nor bytes but {type(value).__name__}")


def _text(value: Any, role: str) -> str | None:
    if value is None:
        return None
    text = str(value)
    if not text.strip():
        raise InputError(f"the {role} is empty")
    return text


def read_item(item: dict[str, Any], config: RunConfig) -> Loaded:
    """The item's inputs, decoded and checked; an InputError says why an item cannot be explained."""
    if item.get("error"):
        raise InputError(item["error"])
    if item.get("missing"):
        raise InputError(f"no value in column {', '.join(item['missing'])}")
    if "scene" in item:
        return _scene(item, config)
    loaded = Loaded(item, target=item.get("target"))
    if item.get("image") is not None:
        loaded.image = _image(item["image"], item["base"])
    for role in ("text", "text_pair", "question", "caption"):
        setattr(loaded, role, _text(item.get(role), role))
    if config.target.fixed is not None:
        loaded.target = config.target.fixed
    elif isinstance(loaded.target, float) and np.isnan(loaded.target):
        raise InputError(f"no value in the target column {config.target.column!r}")
    return loaded


def _scene(item: dict[str, Any], config: RunConfig) -> Loaded:
    """A scene of the scene world: its image, first caption, one question (drawn per scene) and their truth."""
    from ..zoo.common import scene_generator

    scene = scene_generator().generate(tuple(item["scene"]))
    question = scene.questions[int(np.random.default_rng(item["scene"]).integers(len(scene.questions)))]
    from ..zoo.scene_vit import TASK

    columns = {"label": scene.labels[TASK].value, "caption": scene.captions[0], "question": question.text,
               "answer": question.answer}
    target = config.target.fixed if config.target.fixed is not None else columns.get(config.target.column)
    return Loaded(item, image=scene.image, caption=columns["caption"], question=question.text, target=target,
                  scene=scene, scene_question=question)
