"""Ground-truth benchmark: every method on a built-in model over N generated scenes.

For each scene the model's decision has a known cause (the largest object decides "largest
shape"), so an explanation can be scored against that object's mask, and by the perturbation
tests of Chefer et al. (CVPR 2021): MoRF (remove most relevant first; lower AUC is better) and
LeRF (least relevant first; higher is better), tracking the target's probability.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..explainer import Explainer
from ..methods import list_methods
from .metrics import (mean_confidence_interval, perturbation_auc, pointing_game, relevance_mass_accuracy,
                      relevance_rank_accuracy)

METRICS = ("mass_accuracy", "rank_accuracy", "pointing_game", "morf_auc", "lerf_auc")
IMAGE_METHODS = ("raw_attention", "rollout", "attention_gradcam", "generic", "transformer_attribution",
                 "partial_lrp", "lrp")


@dataclass
class BenchmarkRow:
    model: str
    method: str
    scenes: int
    model_accuracy: float
    values: dict[str, tuple[float, float]]  # metric -> (mean, 95% CI half-width)


def benchmark_image_classifier(explainer: Explainer, scenes: list, task: str, classes: tuple[str, ...],
                               methods: tuple[str, ...] = IMAGE_METHODS, batch_size: int = 32) -> list[BenchmarkRow]:
    """Explain each scene's true label with every method and score it against the label's mask."""
    unknown = set(methods) - set(list_methods())
    if unknown:
        raise ValueError(f"Unknown methods {sorted(unknown)}; available: {list_methods()}")
    model = explainer.model
    images = [scene.image for scene in scenes]
    targets = [classes.index(scene.labels[task].value) for scene in scenes]
    masks = [scene.labels[task].mask for scene in scenes]
    pixels = explainer.adapter.preprocess(images).to(explainer.adapter.device)
    with torch.no_grad():
        predictions = torch.cat([model(pixels[i:i + batch_size]).argmax(-1) for i in range(0, len(pixels), batch_size)])
    accuracy = float((predictions.cpu() == torch.tensor(targets)).float().mean())
    rows = []
    for method in tqdm(methods, desc="methods"):
        explanations = explainer.explain(images, method=method, target=targets, batch_size=batch_size,
                                         progress=False)
        per_scene = {metric: [] for metric in METRICS}
        for exp, mask, x, target in zip(explanations, masks, pixels, targets):
            def predict(batch, target=target):
                with torch.no_grad():
                    return model(batch).softmax(-1)[:, target].cpu().numpy()

            per_scene["mass_accuracy"].append(relevance_mass_accuracy(exp.heatmap, mask))
            per_scene["rank_accuracy"].append(relevance_rank_accuracy(exp.heatmap, mask))
            per_scene["pointing_game"].append(pointing_game(exp.heatmap, mask))
            per_scene["morf_auc"].append(perturbation_auc(predict, x, exp.heatmap, order="positive"))
            per_scene["lerf_auc"].append(perturbation_auc(predict, x, exp.heatmap, order="negative"))
        values = {metric: mean_confidence_interval(np.asarray(v, dtype=np.float64)[~np.isnan(v)])
                  for metric, v in per_scene.items()}
        rows.append(BenchmarkRow(explainer.name, method, len(scenes), accuracy, values))
    return rows


def format_table(rows: list[BenchmarkRow]) -> str:
    header = f"{'model':12s} {'method':24s} " + " ".join(f"{m:>17s}" for m in METRICS)
    lines = [header, "-" * len(header)]
    for row in rows:
        cells = " ".join(f"{mean:8.3f} ± {ci:6.3f}" for mean, ci in (row.values[m] for m in METRICS))
        lines.append(f"{row.model:12s} {row.method:24s} {cells}")
    models = {(row.model, row.model_accuracy, row.scenes) for row in rows}
    lines += [f"{name}: accuracy {acc:.3f} on {n} scenes" for name, acc, n in sorted(models)]
    lines.append("mass/rank/pointing: higher is better; morf_auc: lower is better; lerf_auc: higher is better "
                 "(mean ± 95% CI)")
    return "\n".join(lines)


def save_rows(rows: list[BenchmarkRow], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "benchmark.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model", "method", "scenes", "model_accuracy"]
                        + [f"{m}_{part}" for m in METRICS for part in ("mean", "ci95")])
        for row in rows:
            writer.writerow([row.model, row.method, row.scenes, f"{row.model_accuracy:.4f}"]
                            + [f"{x:.5f}" for m in METRICS for x in row.values[m]])
    (folder / "benchmark.json").write_text(json.dumps([row.__dict__ for row in rows], indent=2))
    (folder / "benchmark.txt").write_text(format_table(rows) + "\n")
