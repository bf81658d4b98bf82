"""Where the work runs: in this process (``local``, the default) or on Ray (``ray``, an optional extra).

Both hand batches of items to a :class:`~.worker.Worker` and commit its rows through the same store, so a run
started on one resumes on the other. On Ray, Ray Data reads the items and ``map_batches`` runs a stateful class
holding one model replica per Ray worker (``concurrency`` replicas, each with ``num_cpus`` / ``num_gpus``); the
replicas write the per-item files into the run folder (shared storage on a cluster) and return the rows, which
the driver commits.
"""
from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm.auto import tqdm

from ..errors import ConfigError, ToolkitError
from .config import RunConfig
from .store import RunStore
from .worker import Worker

Progress = Callable[[int], None]


def run_local(config: RunConfig, items: list[dict[str, Any]], store: RunStore, progress: Progress) -> None:
    worker = Worker(config, store.folder)
    for start in range(0, len(items), config.batch_size):
        batch = items[start:start + config.batch_size]
        store.commit(worker(batch))
        progress(len(batch))


class RayReplica:
    """One model replica on a Ray worker: Ray Data calls it with a batch of pickled items."""

    def __init__(self, config_json: str, folder: str, threads: int):
        self.worker = Worker(RunConfig.model_validate_json(config_json), folder, threads=threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = [pickle.loads(blob) for blob in batch["item"]]
        rows = self.worker(items)
        return {"row": np.array([pickle.dumps(row) for row in rows], dtype=object)}


def _toolkit_path() -> str:
    """The folder holding this ``toolkit`` package, for Ray workers to import the same code."""
    return str(Path(__file__).resolve().parents[2])


def run_ray(config: RunConfig, items: list[dict[str, Any]], store: RunStore, progress: Progress) -> None:
    try:
        import ray
    except ImportError:
        raise ConfigError("executor: ray needs Ray: pip install 'transformer-explain-toolkit[ray]' (or "
                          "pip install 'ray[data]'), or use executor: local") from None
    spec = config.executor
    runtime = {"env_vars": {"PYTHONPATH": _toolkit_path()}}
    if not ray.is_initialized():
        ray.init(address=spec.address, runtime_env=runtime, include_dashboard=False, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the run's own bar counts finished items
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    dataset = ray.data.from_items([{"item": pickle.dumps(item)} for item in items])
    results = dataset.map_batches(
        RayReplica, fn_constructor_kwargs={"config_json": config.model_dump_json(), "folder": str(store.folder),
                                           "threads": max(1, int(spec.num_cpus))},
        batch_size=config.batch_size, batch_format="numpy", concurrency=spec.workers, num_cpus=spec.num_cpus,
        num_gpus=spec.num_gpus, runtime_env=runtime)
    try:
        for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
            rows = [pickle.loads(blob) for blob in batch["row"]]
            store.commit(rows)
            progress(len(rows) // len(config.methods))  # one row per item and method
    except ray.exceptions.RayError as error:
        cause = getattr(error, "cause", None)
        if isinstance(cause, ToolkitError):
            raise cause from None
        raise ConfigError(f"the Ray run failed: {error}") from None


EXECUTORS = {"local": run_local, "ray": run_ray}


def execute(config: RunConfig, items: list[dict[str, Any]], store: RunStore, label: str) -> None:
    """``items`` through the config's executor, with a progress bar (items per second and time left)."""
    with tqdm(total=len(items), desc=label, unit="item", dynamic_ncols=True) as bar:
        EXECUTORS[config.executor.kind](config, items, store, bar.update)
