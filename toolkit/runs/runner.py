"""``python -m toolkit run CONFIG``: validate, list the items, open the run folder, explain what is not finished."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .config import load_config
from .executors import execute
from .models import device_note, resolve_device
from .report import write_report
from .sources import list_items, shard
from .store import RunStore, shard_name


@dataclass
class RunSummary:
    folder: Path
    shard: str
    items: int  # in this shard
    skipped: int  # finished before this start
    seconds: float


def parse_shard(text: str | None) -> tuple[int, int]:
    """``3/8`` -> (3, 8): the third of eight shards (1-based); None -> the whole run (1, 1)."""
    if text is None:
        return 1, 1
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise ConfigError(f"--shard {text!r}: write I/N with 1 <= I <= N, e.g. --shard 3/8 (the third of eight)")
    return int(match[1]), int(match[2])


def run(config_path: str | Path, overrides: list[str] = (), shard_spec: str | None = None,
        mode: str = "auto") -> RunSummary:
    """Run (or resume) the config's items of one shard; the config, the data's columns and the run folder are
    checked before the model loads. A whole run (no shards) ends with its report."""
    config = load_config(config_path, list(overrides))
    index, count = parse_shard(shard_spec)
    items = shard(list_items(config), index, count)
    store = RunStore.open(config, shard_name(index, count), mode)
    methods = [m.key for m in config.methods]
    todo = [item for item in items if not store.finished(item["id"], methods)]
    device = resolve_device(config.device)
    label = f"shard {index}/{count}" if count > 1 else Path(config_path).stem
    print(f"{label}: {len(todo)} of {len(items)} items to explain with {', '.join(methods)}; {device_note(device)}; "
          f"executor: {config.executor.kind}; folder: {store.folder}", flush=True)
    start = time.perf_counter()
    if todo:
        execute(config, todo, store, label)
    seconds = time.perf_counter() - start
    rate = f", {len(todo) / seconds:.2f} items/s ({len(todo) * len(methods) / seconds:.2f} explanations/s)" \
        if todo and seconds > 0 else ""
    failed = f"; {store.failed} rows failed (their reasons are in the table and the report)" if store.failed else ""
    print(f"{label} finished: {len(items)} items x {len(methods)} methods in {store.folder} ({len(todo)} new in "
          f"{seconds:.1f} s{rate}){failed}", flush=True)
    if count == 1:
        print(f"Report: {write_report(store.folder)}")
    else:
        print(f"When every shard has finished: python -m toolkit report {store.folder}")
    return RunSummary(store.folder, store.shard, len(items), len(items) - len(todo), seconds)

