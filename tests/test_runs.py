"""Batch runs (toolkit.runs): the config schema and its messages, the data sources, every task family on the built-in
models, the outputs, failed items, and the deletion AUC against an independent computation."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from toolkit import ConfigError, Explanation
from toolkit.cli import main
from toolkit.runs import load_config, run
from toolkit.runs.config import RunConfig, documentation, to_yaml
from toolkit.runs.sources import list_items, read_item, shard
from toolkit.runs.store import load_run, schema

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SCENES = CONFIGS / "data" / "scenes"
FAST = {"evaluation": {"steps": [0.0, 0.25, 0.5, 0.75]}}


def write_config(folder: Path, name: str = "run.yaml", **values) -> Path:
    values.setdefault("output", {"folder": str(folder / "out")})
    path = folder / name
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def vit_scenes(folder: Path, count: int = 3, **extra) -> Path:
    values = dict(model="vit", task="image-classification", methods=["rollout"], data={"kind": "scenes", "count": count},
                  target={"column": "label"}, batch_size=2, **FAST)
    return write_config(folder, **{**values, **extra})


# --- the config --------------------------------------------------------------------------------------------------------

def test_unknown_key_names_the_closest_valid_one_and_its_line(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("model: vit\ntask: image-classification\nmethods: [generic]\ndata:\n  kind: scenes\n"
                    "  count: 4\n  lmit: 10\nbatchsize: 3\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "data.lmit (line 7): unknown key; did you mean 'data.limit'?" in message
    assert "batchsize (line 8): unknown key; did you mean 'batch_size'?" in message


def test_wrong_types_missing_keys_and_files_are_reported_with_their_path(tmp_path):
    path = write_config(tmp_path, model="vit", task="image-classification", methods=["generc"],
                        data={"kind": "table", "path": "no_such.csv"}, batch_size="many")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert re.search(r"batch_size \(line \d+\): .*integer.*'many'", message)
    assert re.search(r"methods\[0\] \(line \d+\): unknown method 'generc'; did you mean 'generic'\?", message)
    path = write_config(tmp_path, model="vit", methods=["generic"], data={"kind": "table", "path": "no_such.csv"})
    with pytest.raises(ConfigError, match=r"task: missing"):
        load_config(path)
    path = write_config(tmp_path, model="vit", task="vqa", methods=["generic"],
                        data={"kind": "table", "path": "no_such.csv"})
    with pytest.raises(ConfigError, match=f"data.path: {re.escape(str(tmp_path / 'no_such.csv'))} does not exist"):
        load_config(path)


def test_set_overrides_any_value_read_as_yaml(tmp_path):
    path = vit_scenes(tmp_path)
    config = load_config(path, ["methods=[generic,rollout]", "data.limit=2", "evaluation.perturbation=false",
                                "executor=ray", "executor.workers=3", "model=clip", "task=image-text-similarity"])
    assert [m.name for m in config.methods] == ["generic", "rollout"]
    assert config.data.limit == 2 and config.evaluation.perturbation is False
    assert config.executor.kind == "ray" and config.executor.workers == 3 and config.model.name == "clip"
    with pytest.raises(ConfigError, match="unknown key 'dta'; did you mean 'data'"):
        load_config(path, ["dta.limit=2"])
    with pytest.raises(ConfigError, match=r"data.limit \(from --set\): .*greater than or equal to 1.*\(got 0\)"):
        load_config(path, ["data.limit=0"])
    with pytest.raises(ConfigError, match="write KEY=VALUE"):
        load_config(path, ["data.limit"])


def test_a_relative_data_path_is_read_from_the_config_file_and_a_set_path_from_here(tmp_path, monkeypatch):
    config = load_config(CONFIGS / "vit_folder.yaml")
    assert Path(config.data.path) == SCENES
    monkeypatch.chdir(CONFIGS)
    assert Path(load_config(CONFIGS / "vit_folder.yaml", ["data.path=data"]).data.path) == CONFIGS / "data"


def test_every_example_config_validates():
    for path in sorted(CONFIGS.glob("*.yaml")):
        if path.name in ("benchmark.yaml", "local_vit_folder.yaml"):
            continue
        assert isinstance(load_config(path), RunConfig), path
    with pytest.raises(ConfigError, match="model.name: the folder .*my-vit does not exist"):
        load_config(CONFIGS / "local_vit_folder.yaml")


def test_the_readme_lists_every_key_of_the_schema():
    readme = (CONFIGS.parent / "README.md").read_text()
    section = readme[readme.index("## Batch runs"):]
    for line in documentation().splitlines():
        key = line.split("`")[1]
        assert f"`{key}`" in section, key


def test_the_config_is_checked_before_any_model_loads(tmp_path, monkeypatch):
    import toolkit.runs.worker as worker

    monkeypatch.setattr(worker, "load_explainer", lambda *a: pytest.fail("a model was loaded"))
    (tmp_path / "texts.csv").write_text("review,label\ngood,positive\n")
    path = write_config(tmp_path, model="minilm-zero-shot", task="text-classification", methods=["generic"],
                        data={"kind": "table", "path": "texts.csv", "columns": {"text": "reviw"}})
    with pytest.raises(ConfigError, match="no column 'reviw'.*did you mean 'review'"):
        run(path)
    with pytest.raises(ConfigError, match="unknown method"):
        run(vit_scenes(tmp_path), ["methods=[generic,rolout]"])
    with pytest.raises(ConfigError, match=r"methods\[0\].*generic has no option 'start_layr'; did you mean 'start_layer'"):
        run(vit_scenes(tmp_path), ["methods=[{name: generic, options: {start_layr: 1}}]"])


def test_cli_prints_config_errors_and_exits_2(tmp_path, capsys):
    assert main(["run", str(vit_scenes(tmp_path)), "--set", "data.cont=3"]) == 2
    assert "data.cont (from --set): unknown key; did you mean 'data.count'?" in capsys.readouterr().err
    assert main(["run", str(vit_scenes(tmp_path)), "--shard", "9/8"]) == 2
    assert "--shard '9/8'" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


# --- data sources ------------------------------------------------------------------------------------------------------

def _rows() -> list[dict]:
    return [{"image": f"scenes/scene_{i}.png", "question": q, "answer": a}
            for i, (q, a) in enumerate([("what colour is the cross?", "blue"), ("what shape is the red object?", "cross")])]


def _vqa(tmp_path: Path, path: str, **data) -> RunConfig:
    return load_config(write_config(tmp_path, model="vilt", task="vqa", methods=["generic"],
                                    data={"kind": "table", "path": path, **data}, target={"column": "answer"}))


def test_tables_csv_jsonl_parquet_and_datasets_folder_give_the_same_items(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "data"
    (data / "scenes").mkdir(parents=True)
    for i in range(2):
        (data / "scenes" / f"scene_{i}.png").write_bytes((SCENES / f"scene_{i}.png").read_bytes())
    rows = _rows()
    (data / "pairs.csv").write_text("image,question,answer\n" + "".join(f"{r['image']},{r['question']},{r['answer']}\n"
                                                                       for r in rows))
    (data / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), data / "pairs.parquet")
    # A `datasets` save_to_disk folder (Arrow stream files listed in state.json), the image stored as bytes.
    with_bytes = [{**r, "image": {"bytes": (data / r["image"]).read_bytes(), "path": None}} for r in rows]
    table = pa.Table.from_pylist(with_bytes)
    for folder in (data / "hf", data / "hf_dict" / "test"):
        folder.mkdir(parents=True)
        with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink:
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
        (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
        (folder / "dataset_info.json").write_text("{}")
    (data / "hf_dict" / "dataset_dict.json").write_text(json.dumps({"splits": ["test"]}))

    read = {}
    for path in ("data/pairs.csv", "data/pairs.jsonl", "data/pairs.parquet", "data/hf", "data/hf_dict"):
        config = _vqa(tmp_path, path)
        loaded = [read_item(item, config) for item in list_items(config)]
        read[path] = [(np.asarray(x.image).tobytes(), x.question, x.target) for x in loaded]
    assert all(value == read["data/pairs.csv"] for value in read.values())
    assert read["data/pairs.csv"][1][1:] == ("what shape is the red object?", "cross")
    with pytest.raises(ConfigError, match="no split 'train'.*test"):
        list_items(_vqa(tmp_path, "data/hf_dict", split="train"))


def test_image_folder_items_have_stable_ids_keyed_by_content(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.png").write_bytes((SCENES / f"scene_{i}.png").read_bytes())
    config = load_config(write_config(tmp_path, model="vit", task="image-classification", methods=["generic"],
                                      data={"kind": "images", "path": "images"}))
    first = {item["key"]: item["id"] for item in list_items(config)}
    (folder / "00.png").write_bytes((SCENES / "scene_4.png").read_bytes())  # sorts first: positions shift
    second = {item["key"]: item["id"] for item in list_items(config)}
    assert all(second[key] == first[key] for key in first) and len(set(second.values())) == 4
    (folder / "1.png").write_bytes((SCENES / "scene_5.png").read_bytes())  # new content: a new item
    assert {item["key"]: item["id"] for item in list_items(config)}["1.png"] != first["1.png"]


def test_scenes_give_their_columns_and_ground_truth(tmp_path):
    config = load_config(vit_scenes(tmp_path, count=4))
    items = list_items(config)
    assert [item["index"] for item in shard(items, 2, 2)] == [1, 3]
    loaded = read_item(items[0], config)
    assert loaded.target == loaded.scene.labels["largest_shape"].value and loaded.image.size == (64, 64)
    assert loaded.scene_question in loaded.scene.questions and loaded.caption == loaded.scene.captions[0]


# --- task families and outputs -----------------------------------------------------------------------------------------

def _finished(folder: Path) -> tuple[RunConfig, list[dict]]:
    config, rows = load_run(folder)
    assert all(row["status"] == "ok" for row in rows), [row["error"] for row in rows]
    return config, rows


@pytest.mark.parametrize("model, task, target, truth", [
    ("clip", "image-text-similarity", None, "token_mass_accuracy"),
    ("vilt", "vqa", {"column": "answer"}, "token_pointing_game"),
    ("captioner", "captioning", None, "mass_accuracy"),
])
def test_image_text_task_families_on_the_zoo(tmp_path, model, task, target, truth):
    values = dict(model=model, task=task, methods=["generic", "raw_attention"], data={"kind": "scenes", "count": 2},
                  **FAST)
    if target:
        values["target"] = target
    run(write_config(tmp_path, **values))
    config, rows = _finished(tmp_path / "out")
    assert len(rows) == 4
    for row in rows:
        assert 0 <= row["morf_auc"] <= 1 and row[truth] is not None and row["seconds"] > 0
        exp = Explanation.load(tmp_path / "out" / row["arrays"])
        assert exp.method == row["method"] and Image.open(tmp_path / "out" / row["overlay"]).size == (64, 64)
        assert "<" in (tmp_path / "out" / row["html"]).read_text()
    if task == "captioning":
        assert all(row["prediction"] == row["target"] for row in rows)  # the scene's caption, teacher-forced


def test_text_classification_on_a_csv_with_the_zero_shot_model(tmp_path):
    run(CONFIGS / "text_reviews.yaml", ["data.limit=3", f"output.folder={tmp_path / 'out'}",
                                        "evaluation.steps=[0, 0.5]", "methods=[generic]"])
    _, rows = _finished(tmp_path / "out")
    assert [row["item"] for row in rows] == ["r1", "r2", "r3"]
    assert [row["prediction"] for row in rows] == [row["target"] for row in rows] == ["positive", "negative", "positive"]
    assert all(row["overlay"] is None and row["curve_scores"][0] == pytest.approx(row["probability"]) for row in rows)
    assert "gripping" in (tmp_path / "out" / rows[0]["html"]).read_text()


def test_precision_and_device_are_applied_and_said(tmp_path, capsys):
    from toolkit.runs.models import load_explainer, resolve_device

    config = load_config(vit_scenes(tmp_path), ["precision=bfloat16", "device=cpu"])
    explainer = load_explainer(config, resolve_device(config.device))
    assert {p.dtype for p in explainer.model.parameters()} == {torch.bfloat16}
    run(vit_scenes(tmp_path, count=1), ["precision=bfloat16", "evaluation.perturbation=false"])
    expected = "cuda" if torch.cuda.is_available() else "cpu (no CUDA device found)"
    assert f"device: {expected}" in capsys.readouterr().out
    assert load_run(tmp_path / "out")[1][0]["status"] == "ok"


def test_vit_run_writes_the_table_files_and_report(tmp_path):
    run(vit_scenes(tmp_path, methods=["generic", {"name": "rollout", "options": {"start_layer": 1}, "label": "r1"}]))
    folder = tmp_path / "out"
    import pyarrow.parquet as pq

    table = pq.read_table(next((folder / "parts").glob("*.parquet")))
    assert table.schema.names == schema().names
    _, rows = _finished(folder)
    assert sorted(row["key"] for row in rows) == sorted(f"{i}/{m}" for i in {r["item_id"] for r in rows}
                                                        for m in ("generic", "r1"))
    assert {row["options"] for row in rows} == {"{}", '{"start_layer": 1}'}
    for row in rows:
        assert row["prediction"] in ("circle", "square", "triangle", "cross") and row["target"]
        assert all(row[m] is not None for m in ("morf_auc", "mass_accuracy", "rank_accuracy", "pointing_game"))
        assert row["token_mass_accuracy"] is None and row["html"] is None
        exp = Explanation.load(folder / row["arrays"])
        assert exp.heatmap.shape == (8, 8) and exp.label == row["prediction"]
    saved = RunConfig.model_validate(yaml.safe_load((folder / "config.yaml").read_text()))
    assert saved == load_run(folder)[0] and to_yaml(saved) == (folder / "config.yaml").read_text()
    report = (folder / "report.html").read_text()
    assert "<svg" in report and "data:image/png;base64," in report and "r1" in report


def test_the_deletion_auc_equals_an_independent_computation(tmp_path):
    """The MoRF AUC recomputed from the saved map with the stock timm model: patches of the 64x64 scene replaced by
    the scene's mean colour, most relevant first, the true class's probability read by the model itself."""
    from toolkit import zoo
    from toolkit.zoo.common import scene_generator

    config = vit_scenes(tmp_path, count=2, methods=["generic"])
    evaluation = {**FAST["evaluation"], "least_relevant_first": True}
    run(write_config(tmp_path, **{**yaml.safe_load(config.read_text()), "evaluation": evaluation}))
    _, rows = _finished(tmp_path / "out")
    model, transform = zoo.load("vit")
    for row in rows:
        exp = Explanation.load(tmp_path / "out" / row["arrays"])
        scene = scene_generator().generate(tuple(json.loads(row["inputs"])["scene"]))
        image = np.asarray(scene.image, dtype=np.float64)
        for order, column in ((np.argsort(-exp.heatmap.ravel(), kind="stable"), "morf_auc"),
                              (np.argsort(exp.heatmap.ravel(), kind="stable"), "lerf_auc")):
            scores = []
            for share in (0.0, 0.25, 0.5, 0.75):
                removed = np.zeros(64, dtype=bool)
                removed[order[:int(np.floor(share * 64 + 0.5))]] = True
                pixels = np.where(np.kron(removed.reshape(8, 8), np.ones((8, 8)))[..., None].astype(bool),
                                  image.mean(axis=(0, 1)), image)
                picture = Image.fromarray(np.round(pixels).clip(0, 255).astype(np.uint8))
                with torch.no_grad():
                    scores.append(model(transform(picture)[None]).softmax(-1)[0, exp.target].item())
            if column == "morf_auc":
                assert row["curve_scores"] == pytest.approx(scores, abs=1e-5)
            assert row[column] == pytest.approx(np.trapezoid(scores, [0, 0.25, 0.5, 0.75]), abs=1e-5)


# --- bad data ----------------------------------------------------------------------------------------------------------

def test_bad_items_fail_alone_with_their_reason(tmp_path, capsys):
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    (tmp_path / "good.png").write_bytes((SCENES / "scene_0.png").read_bytes())
    (tmp_path / "pairs.jsonl").write_text(
        json.dumps({"image": "good.png", "question": "what colour is the triangle?"}) + "\n"
        + json.dumps({"image": "broken.png", "question": "what colour is the cross?"}) + "\n"
        + json.dumps({"image": "good.png", "question": "   "}) + "\n"
        + json.dumps({"image": "good.png"}) + "\n"
        + "{not json\n"
        + json.dumps({"image": "missing.png", "question": "what shape is it?"}) + "\n")
    run(write_config(tmp_path, model="vilt", task="vqa", methods=["generic"],
                     data={"kind": "table", "path": "pairs.jsonl"}, **FAST))
    _, rows = load_run(tmp_path / "out")
    by_index = {row["index"]: row for row in rows}
    assert sorted(by_index) == [0, 1, 2, 3, 4, 5]
    assert by_index[0]["status"] == "ok" and by_index[0]["morf_auc"] is not None
    reasons = {i: by_index[i]["error"] for i in range(1, 6)}
    assert all(by_index[i]["status"] == "failed" for i in reasons)
    assert "broken.png" in reasons[1] and "question is empty" in reasons[2]
    assert "no value in column 'question'" in reasons[3] and "line 5 is not valid JSON" in reasons[4]
    assert "missing.png" in reasons[5]
    assert "6 items x 1 methods" in (printed := capsys.readouterr().out) and "5 rows failed" in printed
    report = (tmp_path / "out" / "report.html").read_text()
    assert "Failed items" in report and "question is empty" in report and "line 5 is not valid JSON" in report


def test_an_empty_text_fails_its_row_and_the_others_run(tmp_path):
    (tmp_path / "texts.csv").write_text('text,label\nreally good,positive\n"",negative\nawful,negative\n')
    run(write_config(tmp_path, model="minilm-zero-shot", task="text-classification", methods=["rollout"],
                     data={"kind": "table", "path": "texts.csv"}, target={"column": "label"}, **FAST))
    _, rows = load_run(tmp_path / "out")
    assert [row["status"] for row in sorted(rows, key=lambda r: r["index"])] == ["ok", "failed", "ok"]
    assert "the text is empty" in next(r["error"] for r in rows if r["status"] == "failed")


# --- models from elsewhere, offline ------------------------------------------------------------------------------------

def test_a_local_folder_model_runs_the_example_config(tmp_path):
    """configs/local_vit_folder.yaml with its placeholder replaced by a saved Hugging Face ViT and image processor."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(image_size=64, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                                num_attention_heads=4, intermediate_size=48, num_labels=4,
                                                initializer_range=0.3))
    model.save_pretrained(tmp_path / "my-vit")
    ViTImageProcessor(size={"height": 64, "width": 64}).save_pretrained(tmp_path / "my-vit")
    run(CONFIGS / "local_vit_folder.yaml", [f"model.name={tmp_path / 'my-vit'}", "data.limit=2",
                                            f"output.folder={tmp_path / 'out'}"])
    _, rows = _finished(tmp_path / "out")
    assert sorted(row["method"] for row in rows) == ["generic", "generic", "transformer_attribution",
                                                     "transformer_attribution"]
    assert {row["item"] for row in rows} == {"scene_0.png", "scene_1.png"}
    assert all(row["prediction"].startswith("LABEL_") and row["morf_auc"] is not None for row in rows)


def test_a_new_architecture_declared_inline_in_the_config(tmp_path, wordpiece):
    """configs/data2vec_text_family.yaml: no built-in family covers Data2Vec text; its inline declaration does."""
    from transformers import Data2VecTextConfig, Data2VecTextForSequenceClassification

    torch.manual_seed(27)
    model = Data2VecTextForSequenceClassification(Data2VecTextConfig(
        vocab_size=wordpiece.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=48, num_labels=2, max_position_embeddings=128, type_vocab_size=1, initializer_range=0.3))
    model.save_pretrained(tmp_path / "d2v")
    wordpiece.save_pretrained(tmp_path / "d2v")
    run(CONFIGS / "data2vec_text_family.yaml", [f"model.name={tmp_path / 'd2v'}", "data.limit=2",
                                                f"output.folder={tmp_path / 'out'}"])
    _, rows = _finished(tmp_path / "out")
    assert sorted(row["method"] for row in rows) == ["rollout", "rollout", "transformer_attribution",
                                                     "transformer_attribution"]
    exp = Explanation.load(tmp_path / "out" / rows[0]["arrays"])
    assert exp.text == "a gripping, beautifully shot film" and rows[0]["morf_auc"] is not None


def test_auto_runs_each_models_default_and_the_table_names_it(tmp_path):
    run(vit_scenes(tmp_path, count=2, methods=["auto"], evaluation={**FAST["evaluation"], "perturbation": False}))
    _, rows = _finished(tmp_path / "out")
    from toolkit import Explainer, zoo

    default = Explainer(*zoo.load("vit")).default_method
    assert {(row["method"], row["method_name"], row["status"]) for row in rows} == {("auto", default, "ok")}
