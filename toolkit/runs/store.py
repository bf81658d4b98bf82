"""A run folder: the resolved config, the finished rows and the manifest, written so that a kill loses nothing.

Layout::

    RUN/config.yaml                    the resolved config (every default written out)
    RUN/run.json                       its fingerprint: a changed config refuses to resume here without --restart
                                   (both written with the first finished rows)
    RUN/parts/<shard>-<n>-<uuid>.parquet   finished rows (one row per item x method), one file per committed batch
    RUN/manifest/<shard>.json          per shard: every finished "<item id>/<method>" -> its part file
    RUN/items/<item id>/<method>.png|.npz|.html   per item and method: overlay, arrays, highlighted text
    RUN/report.html                    python -m toolkit report RUN

Every file is written to a temporary name in its folder and moved into place (``os.replace``, atomic), so a file
under its real name is always complete. A batch counts as finished when its part file is in place: the manifest
is rewritten after it, and a part the manifest does not name yet (a kill between the two writes) is adopted when
the run reopens. Shards write their own parts and manifest, so several may run at once into one folder.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..paths import output_folder
from .config import FINGERPRINTED, RunConfig, to_yaml

TMP_PREFIX = ".tmp-"
METRICS = ("morf_auc", "lerf_auc", "mass_accuracy", "rank_accuracy", "pointing_game", "token_mass_accuracy",
           "token_rank_accuracy", "token_pointing_game")
RESULTS = ("parts", "manifest", "items", "report.html", "run.json", "config.yaml")


def schema():
    """The columns of the results table (pyarrow), one row per item x method."""
    import pyarrow as pa

    text, number = pa.string(), pa.float64()
    return pa.schema([("key", text), ("item_id", text), ("item", text), ("index", pa.int64()), ("shard", text),
                      ("inputs", text), ("method", text), ("method_name", text), ("options", text),
                      ("prediction", text), ("target", text), ("probability", number), ("score", number),
                      ("seconds", number), ("status", text), ("error", text),
                      *[(m, number) for m in METRICS],
                      ("curve_fractions", pa.list_(number)), ("curve_scores", pa.list_(number)),
                      ("overlay", text), ("arrays", text), ("html", text)])


def atomic_write(path: Path, data: bytes | str) -> None:
    """``data`` into ``path``, all or nothing: written beside it under a temporary name, then moved into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
    with open(tmp, "wb") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def shard_name(index: int, count: int) -> str:
    return f"shard-{index}-of-{count}"


class RunStore:
    """One shard's view of a run folder: what is finished (in every shard), and committing more."""

    def __init__(self, folder: Path, shard: str, config: RunConfig):
        self.folder, self.shard, self.config = folder, shard, config
        self.manifest_path = folder / "manifest" / f"{shard}.json"
        self.done: dict[str, str] = {}  # "<item id>/<method>" -> part file, every shard's
        self.own: dict[str, str] = {}  # this shard's manifest
        self.failed = 0  # failed rows committed by this process
        self._reload()

    @classmethod
    def open(cls, config: RunConfig, shard: str, mode: str = "auto") -> "RunStore":
        """The run folder of ``config``, made ready for ``shard``. ``mode``: ``auto`` starts a new run or resumes
        one of the same config; ``resume`` insists on one to resume; ``restart`` deletes an old run's results
        first. A folder holding a run of another config is refused unless restarted."""
        folder = output_folder(config.output.folder, "output.folder")
        stamp = folder / "run.json"
        if mode == "restart":
            for name in RESULTS:
                target = folder / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
        elif stamp.is_file():
            old = json.loads(stamp.read_text())
            if old["fingerprint"] != config.fingerprint():
                raise ConfigError(f"{folder} holds a run of another config ({_changes(folder, config)}). Pass "
                                  "--restart to delete its results and start over there, or give another "
                                  "output.folder (e.g. --set output.folder=runs/new).")
        elif mode == "resume":
            raise ConfigError(f"Nothing to resume in {folder}: no run was started there. Run without --resume.")
        elif any(folder.iterdir()):
            leftovers = ", ".join(sorted(p.name for p in folder.iterdir())[:5])
            raise ConfigError(f"output.folder {folder} is not empty ({leftovers}) and holds no run: name a new or "
                              "empty folder, or pass --restart to write there anyway.")
        return cls(folder, shard, config)

    def _reload(self) -> None:
        """Every shard's manifest, plus parts no manifest names yet (adopted into this shard's)."""
        for manifest in sorted((self.folder / "manifest").glob("shard-*.json")):
            entries = json.loads(manifest.read_text())
            self.done.update(entries)
            if manifest == self.manifest_path:
                self.own = dict(entries)
        named = set(self.done.values())
        for part in sorted((self.folder / "parts").glob("*.parquet")):
            if part.name not in named and not part.name.startswith(TMP_PREFIX):
                keys = read_rows([part], columns=["key"])
                adopted = {row["key"]: part.name for row in keys if row["key"] not in self.done}
                self.done.update(adopted)
                self.own.update(adopted)

    def finished(self, item_id: str, methods: list[str]) -> bool:
        return all(f"{item_id}/{method}" in self.done for method in methods)

    def commit(self, rows: list[dict[str, Any]]) -> None:
        """Rows of finished items into a new part file, then into the manifest; rows already finished (by a
        shard running at the same time) are dropped, so each item x method is kept once."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = [row for row in rows if row["key"] not in self.done]
        if not rows:
            return
        if not (self.folder / "run.json").is_file():  # stamped with the first rows: a model that fails to load
            atomic_write(self.folder / "config.yaml", to_yaml(self.config))  # leaves the folder free to reuse
            atomic_write(self.folder / "run.json", json.dumps({"fingerprint": self.config.fingerprint()}))
        for row in rows:
            row["shard"] = self.shard
        name = f"{self.shard}-{len(self.own):07d}-{uuid.uuid4().hex[:8]}.parquet"
        table = pa.Table.from_pylist(rows, schema=schema())
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        atomic_write(self.folder / "parts" / name, sink.getvalue().to_pybytes())
        self.failed += sum(row["status"] != "ok" for row in rows)
        entries = {row["key"]: name for row in rows}
        self.done.update(entries)
        self.own.update(entries)
        atomic_write(self.manifest_path, json.dumps(self.own))


def item_file(folder: Path, item_id: str, method: str, suffix: str) -> Path:
    """Where an item's file for ``method`` goes (the method's label made safe for a file name)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in method)
    return Path(folder) / "items" / item_id / f"{safe}{suffix}"


def _changes(folder: Path, config: RunConfig) -> str:
    """Which keys differ between the run in ``folder`` and ``config``."""
    try:
        old = yaml.safe_load((folder / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return "its config.yaml is unreadable"
    new = config.model_dump(mode="json")
    changed = []

    def walk(a: Any, b: Any, where: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key), b.get(key), f"{where}.{key}" if where else key)
        elif a != b:
            changed.append(f"{where}: {a!r} -> {b!r}")

    walk(old, new, "")
    relevant = [c for c in changed if c.split(".")[0].split(":")[0] in FINGERPRINTED
                and not c.startswith(("data.limit:", "data.count:"))]
    return "changed: " + "; ".join(relevant[:6]) if relevant else "a different fingerprint"


def part_files(folder: Path) -> list[Path]:
    """The committed parts of every shard: those a manifest names, and complete ones it does not yet."""
    return sorted(p for p in (Path(folder) / "parts").glob("*.parquet") if not p.name.startswith(TMP_PREFIX))


def read_rows(parts: list[Path], columns: list[str] | None = None) -> list[dict[str, Any]]:
    """The rows of ``parts``, each item x method once (the first part that holds it wins)."""
    import pyarrow.parquet as pq

    rows, seen = [], set()
    for part in parts:
        for row in pq.read_table(part, columns=columns).to_pylist():
            if row["key"] not in seen:
                seen.add(row["key"])
                rows.append(row)
    return rows


def load_run(folder: str | os.PathLike) -> tuple[RunConfig, list[dict[str, Any]]]:
    """A run folder's config and every finished row, all shards merged."""
    folder = Path(folder)
    if not (folder / "run.json").is_file():
        raise ConfigError(f"{folder} is not a run folder (no run.json): give the output.folder of "
                          "`python -m toolkit run`.")
    config = RunConfig.model_validate(yaml.safe_load((folder / "config.yaml").read_text()))
    return config, read_rows(part_files(folder))
