"""One model replica turning batches of items into result rows, and their per-item files: the same code serves the
local executor (in this process) and Ray (one replica per Ray worker)."""
from __future__ import annotations

import io
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ToolkitError
from .config import MethodConfig, RunConfig
from .models import load_explainer, resolve_device
from .sources import Loaded, read_item
from .store import METRICS, TMP_PREFIX, atomic_write, item_file
from .tasks import Outcome, make_task


def _inputs(item: dict[str, Any]) -> str:
    """The item's inputs as the table shows them: paths, texts, the scene's seed (image bytes are not copied)."""
    keys = ("image", "text", "text_pair", "question", "caption", "scene", "target")
    return json.dumps({k: item[k] for k in keys if isinstance(item.get(k), (str, int, float, list))}, default=str)


def _base_row(item: dict[str, Any], method: MethodConfig) -> dict[str, Any]:
    return {"key": f"{item['id']}/{method.key}", "item_id": item["id"], "item": item["key"], "index": item["index"],
            "inputs": _inputs(item), "method": method.key, "method_name": method.name,
            "options": json.dumps(method.options, sort_keys=True, default=str)}


def failed_row(item: dict[str, Any], method: MethodConfig, error: BaseException) -> dict[str, Any]:
    reason = str(error) if isinstance(error, ToolkitError) else f"{type(error).__name__}: {error}"
    return {**_base_row(item, method), "status": "failed", "error": reason}


class Worker:
    """Loads the model once, then explains batches: ``worker(items) -> rows`` (one per item x method)."""

    def __init__(self, config: RunConfig, folder: str | Path, threads: int | None = None):
        random.seed(config.seed)
        np.random.seed(config.seed)
        torch.manual_seed(config.seed)
        if threads:
            torch.set_num_threads(threads)
        self.config = config
        self.folder = Path(folder)
        self.device = resolve_device(config.device)
        self.explainer = load_explainer(config, self.device)
        self.task = make_task(self.explainer, config)

    def __call__(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows, ready = [], []
        for item in items:
            try:
                ready.append(read_item(item, self.config))
            except ToolkitError as error:
                rows += [failed_row(item, method, error) for method in self.config.methods]
        for method in self.config.methods:
            if ready:
                rows += self._explained(ready, method)
        return rows

    def _explained(self, ready: list[Loaded], method: MethodConfig) -> list[dict[str, Any]]:
        """Rows of one method over the batch; when the batch fails, each item alone, so one bad item fails alone."""
        start = time.perf_counter()
        try:
            outcomes = self.task.run(ready, method)
        except Exception as error:  # any failure of one item is recorded, and the run goes on
            if len(ready) == 1:
                return [failed_row(ready[0].item, method, error)]
            return [row for loaded in ready for row in self._explained([loaded], method)]
        seconds = (time.perf_counter() - start) / len(ready)
        return [self._row(loaded, method, outcome, seconds) for loaded, outcome in zip(ready, outcomes)]

    def _row(self, loaded: Loaded, method: MethodConfig, outcome: Outcome, seconds: float) -> dict[str, Any]:
        exp, curve = outcome.explanation, outcome.curve
        row = {**_base_row(loaded.item, method), "method_name": exp.method,  # what auto resolved to
               "prediction": outcome.prediction, "target": outcome.target,
               "probability": outcome.probability, "score": outcome.score,
               "seconds": seconds, "status": "ok", "error": None,
               **{m: _finite(outcome.metrics.get(m)) for m in METRICS},
               "curve_fractions": None if curve is None else curve.fractions.tolist(),
               "curve_scores": None if curve is None else [float(s) for s in curve.scores]}
        row.update(self._save_files(loaded.item["id"], method.key, exp))
        return row

    def _save_files(self, item_id: str, method: str, exp) -> dict[str, str | None]:
        """The overlay (PNG), the arrays (npz) and the highlighted text (HTML) the config asks for, where they
        exist; paths relative to the run folder."""
        output, paths = self.config.output, {"overlay": None, "arrays": None, "html": None}
        if output.overlays and exp.heatmap is not None and exp.image is not None:
            buffer = io.BytesIO()
            exp.overlay().save(buffer, format="PNG")
            paths["overlay"] = self._write(item_id, method, ".png", buffer.getvalue())
        if output.arrays:
            path = item_file(self.folder, item_id, method, ".npz")
            tmp = path.with_name(f"{TMP_PREFIX}{path.name}")
            exp.save(tmp)  # complete before it takes its name
            os.replace(tmp, path)
            paths["arrays"] = str(path.relative_to(self.folder))
        if output.html and (exp.text is not None or exp.caption is not None or exp.words is not None):
            paths["html"] = self._write(item_id, method, ".html", exp.to_html())
        return paths

    def _write(self, item_id: str, method: str, suffix: str, data: bytes | str) -> str:
        path = item_file(self.folder, item_id, method, suffix)
        atomic_write(path, data)
        return str(path.relative_to(self.folder))


def _finite(value: float | None) -> float | None:
    """NaN (a metric that does not apply to this item) is stored as null."""
    return None if value is None or not np.isfinite(value) else float(value)
