"""The ground-truth benchmark runs every requested method on scenes and writes its table."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torchvision import transforms

from toolkit import ConfigError, Explainer
from toolkit.cli import main
from toolkit.errors import ToolkitWarning
from toolkit.evaluation.benchmark import (IMAGE_METHODS, METRICS, BenchmarkRow, BenchmarkSettings,
                                          benchmark_image_classifier, compare_methods, default_task, format_table,
                                          run_benchmark, run_task, save_rows)
from toolkit.scenes import LABEL_VALUES, SceneConfig, SceneGenerator
from toolkit.zoo.common import BENCHMARK_SEED, scenes


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
            if metric.startswith("token_"):  # an image classifier has no text to ground
                assert np.isnan(mean)
            else:
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


# --- the built-in models and batch runs -----------------------------------------------------------

EXPECTED_METHODS = {
    "vit": IMAGE_METHODS,
    "clip": IMAGE_METHODS,  # every method: the LRP rules pass through each tower and ViLT's single stream
    "vilt": IMAGE_METHODS,
    "captioner": ("raw_attention", "attention_gradcam", "generic"),
}
TOKEN_TRUTH = {"vit": False, "clip": True, "vilt": True, "captioner": False}


@pytest.mark.parametrize("model", list(EXPECTED_METHODS))
def test_every_zoo_model_is_benchmarked_with_its_methods(model, tmp_path):
    rows = run_task(default_task(model, BENCHMARK_SEED), scenes(2, BENCHMARK_SEED), IMAGE_METHODS)
    assert tuple(row.method for row in rows) == EXPECTED_METHODS[model]
    for row in rows:
        assert row.scenes == 2 and row.cases == (8 if model == "captioner" else 2)
        assert 0 <= row.model_accuracy <= 1 and len(row.per_case["morf_auc"]) == row.cases
        assert np.isfinite(row.values["lerf_auc"][0]) and np.isfinite(row.values["morf_auc"][0])
        pointing = row.values["pointing_game"][0]
        assert 0 <= pointing <= 1 if row.empty_maps < row.cases else np.isnan(pointing)
    # token metrics where the text's grounding words are known (a map may lack positive relevance: gradcam)
    by_method = {row.method: row for row in rows}
    assert np.isfinite(by_method["generic"].values["token_mass_accuracy"][0]) == TOKEN_TRUTH[model]
    save_rows(rows, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"benchmark.csv", "benchmark.json", "benchmark.txt",
                                                    "comparisons.csv"}


def test_command_runs_a_config_and_flags_win(tmp_path, capsys):
    config = tmp_path / "bench.yaml"
    config.write_text(f"scenes: {{vit: 3}}\nmodels: [vit]\nmethods: [rollout, generic]\nout: {tmp_path / 'x'}\n")
    assert main(["benchmark", "--config", str(config), "--out", str(tmp_path / "y")]) == 0
    table = (tmp_path / "y" / "benchmark.txt").read_text()
    assert "scene-vit" in table and "generic" in table and "vs rollout" in table
    assert "accuracy" in capsys.readouterr().out and not (tmp_path / "x").exists()


@pytest.mark.parametrize("text,message", [
    ("scenes: 5\nbogus: 1\n",
     r"unknown keys \['bogus'\].*valid keys: \['scenes', 'out', 'models', 'methods', 'seed'\]"),
    ("scenes: 1\n", "scenes must be an int >= 2"),
    ("scenes: {vit: 5}\nmodels: [vit, clip]\n", r"no number for \['clip'\]"),
    ("models: [vit, bert]\n", r"Unknown models \['bert'\]"),
    ("methods: rollout,nope\n", r"Unknown methods \['nope'\]"),
    ("- scenes\n", "must be a mapping"),
    ("42\n", "must be a mapping of keys to values .*not a int"),
    ("", "is empty: give some of the keys"),
    ("# models: [vit]\n", "is empty"),
])
def test_config_errors_say_what_is_valid(tmp_path, text, message):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message):
        BenchmarkSettings.from_yaml(config)
    assert main(["benchmark", "--config", str(config)]) == 2


def test_a_benchmark_that_computes_nothing_is_refused(tmp_path, capsys):
    nothing = (r"Nothing to compute: none of the methods \['lrp'\] applies to scene-captioner \(scene-captioner "
               r"supports attention_gradcam, attnlrp, .*raw_attention\)")
    with pytest.raises(ConfigError, match=nothing):
        run_benchmark(BenchmarkSettings(scenes=2, models=("captioner",), methods=("lrp",), out=str(tmp_path / "api")))
    with pytest.raises(ConfigError, match=nothing):
        run_task(default_task("captioner", BENCHMARK_SEED), scenes(2, BENCHMARK_SEED), ("lrp",))
    assert main(["benchmark", "--models", "captioner", "--methods", "lrp", "--out", str(tmp_path / "cli")]) == 2
    assert "Nothing to compute" in capsys.readouterr().err
    assert not (tmp_path / "api").exists() and not (tmp_path / "cli").exists()


def test_models_no_method_applies_to_are_left_out_with_a_warning(tmp_path):
    settings = BenchmarkSettings(scenes=2, models=("vit", "captioner"), methods=("lrp",), out=str(tmp_path))
    with pytest.warns(ToolkitWarning, match=r"Left out: none of the methods \['lrp'\] applies to scene-captioner"):
        rows = run_benchmark(settings)
    assert [(row.model, row.method) for row in rows] == [("scene-vit", "lrp")]


def test_comparisons_are_paired_and_signed_so_that_positive_is_better():
    def row(method, morf, lerf):
        return BenchmarkRow("m", method, 3, 3, 1.0, {}, {"morf_auc": morf, "lerf_auc": lerf})

    rows = [row("generic", [0.1, 0.2, 0.3], [0.9, 0.8, 0.7]), row("rollout", [0.2, 0.3, 0.4], [0.8, 0.8, 0.8])]
    morf, lerf = compare_methods(rows)
    assert (morf.method, morf.baseline, morf.metric) == ("generic", "rollout", "morf_auc")
    assert morf.gain == pytest.approx(0.1) and morf.ci95 == pytest.approx(0.0, abs=1e-9)
    assert lerf.gain == pytest.approx(0.0, abs=1e-12) and lerf.ci95 > 0
