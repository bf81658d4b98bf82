"""The ground-truth benchmark runs every requested method on scenes and writes its table."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torchvision import transforms

from toolkit import Explainer
from toolkit.evaluation.benchmark import METRICS, benchmark_image_classifier, format_table, save_rows
from toolkit.scenes import LABEL_VALUES, SceneConfig, SceneGenerator


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = VisionTransformer(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2, num_classes=4).eval()
    model.pretrained_cfg = {"input_size": (3, 64, 64), "mean": (0.5,) * 3, "std": (0.5,) * 3}
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,) * 3, (0.5,) * 3)])
    scenes = list(SceneGenerator(SceneConfig(size=64)).generate_scenes(4, seed=7))
    return Explainer(model, transform, name="tiny"), scenes


def test_benchmark_rows_and_files(setup, tmp_path):
    explainer, scenes = setup
    rows = benchmark_image_classifier(explainer, scenes, "largest_shape", LABEL_VALUES["largest_shape"],
                                      methods=("rollout", "generic"))
    assert [row.method for row in rows] == ["rollout", "generic"]
    for row in rows:
        assert row.scenes == 4 and 0.0 <= row.model_accuracy <= 1.0
        for metric in METRICS:
            mean, half_width = row.values[metric]
            assert np.isfinite(mean) and half_width >= 0
        for metric in ("mass_accuracy", "rank_accuracy", "pointing_game"):
            assert 0.0 <= row.values[metric][0] <= 1.0
    table = format_table(rows)
    assert "rollout" in table and "lerf_auc" in table and "accuracy" in table
    save_rows(rows, tmp_path)
    assert (tmp_path / "benchmark.csv").read_text().count("\n") == 3
    assert json.loads((tmp_path / "benchmark.json").read_text())[1]["method"] == "generic"


def test_mass_accuracy_matches_a_direct_computation(setup):
    explainer, scenes = setup
    row = benchmark_image_classifier(explainer, scenes, "largest_shape", LABEL_VALUES["largest_shape"],
                                     methods=("raw_attention",))[0]
    shares = []
    for scene in scenes:
        target = LABEL_VALUES["largest_shape"].index(scene.labels["largest_shape"].value)
        heatmap = explainer.explain(scene.image, method="raw_attention", target=target).heatmap.clip(min=0)
        pixels = np.kron(heatmap, np.ones((16, 16)))  # nearest upsampling of the 4x4 grid to 64x64
        shares.append(pixels[scene.labels["largest_shape"].mask].sum() / pixels.sum())
    assert row.values["mass_accuracy"][0] == pytest.approx(np.mean(shares), rel=1e-5)


def test_unknown_method_is_refused(setup):
    explainer, scenes = setup
    with pytest.raises(ValueError, match="Unknown methods"):
        benchmark_image_classifier(explainer, scenes, "largest_shape", LABEL_VALUES["largest_shape"],
                                   methods=("nope",))
