"""The faithfulness suite: the scene language model's ground truth, the built-in data, user data, the CLI."""
from __future__ import annotations

import csv
import json
import math
import random
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from toolkit.cli import main
from toolkit.errors import InputError
from toolkit.evaluation.faithfulness import evaluate
from toolkit.evaluation.suite import read_data, relative_cost, run_suite, scene_items, similarity_evaluation
from toolkit.zoo.scene_lm import SceneText, scene_lm_tokenizer, scene_texts


def test_scene_lm_ground_truth_of_one_caption():
    scene = SimpleNamespace(captions=("a red circle left of a blue square",))
    context = "a red circle left of a blue square ."
    assert scene_texts(scene, random.Random(0)) == [
        SceneText(f"{context} the circle is", "red", (2, 3)),
        SceneText(f"{context} the red object is a", "circle", (2, 3)),
        SceneText(f"{context} the square is", "blue", (7, 8)),
        SceneText(f"{context} the blue object is a", "square", (7, 8)),
    ]
    mask = scene_texts(scene, random.Random(0))[0].evidence_mask()
    assert mask.tolist() == [False, False, True, True] + [False] * 9  # [CLS] + 12 words


def test_scene_lm_ground_truth_follows_every_mention_and_skips_ambiguous_statements():
    scene = SimpleNamespace(captions=("a red circle left of a blue square", "a green circle above a blue square"))
    tokenizer = scene_lm_tokenizer()
    texts = scene_texts(scene, random.Random(1))
    assert not any(text.prompt.endswith("the circle is") for text in texts)  # two circles: the colour is not determined
    assert sorted((text.prompt.split(" . ")[-1], text.answer) for text in texts) == [
        ("the blue object is a", "square"), ("the green object is a", "circle"), ("the red object is a", "circle"),
        ("the square is", "blue")]
    for text in texts:
        tokens = tokenizer.convert_ids_to_tokens(tokenizer(text.prompt)["input_ids"])
        assert tokens[0] == "[CLS]" and len(tokens) == text.evidence_mask().size
        named = [tokens[position] for position in text.evidence]
        if text.answer in ("square", "blue"):
            assert named == ["blue", "square", "blue", "square"]  # both mentions of the blue square
        else:
            assert named in (["red", "circle"], ["green", "circle"]) and text.answer == "circle"


def test_scene_lm_decisions_are_scored_against_their_ground_truth():
    explainer, items = scene_items("lm", 3)
    assert all(item.truth.size == len(item.inputs.split()) + 1 for item in items)
    assert [explainer.predict(item.inputs, top_k=1)[0][0] for item in items] == [item.target for item in items]
    evaluation = evaluate(explainer, items, ["raw_attention", "generic"],
                          metrics=("morf_auc", "comprehensiveness", "mass_accuracy", "rank_accuracy"))
    assert len(evaluation.rows) == 6
    for row in evaluation.rows:
        assert 0 <= row["mass_accuracy"] <= 1 and 0 <= row["rank_accuracy"] <= 1
        assert row["morf_auc"] < 0  # log-probabilities
    explanation = explainer.explain(items[0].inputs, method="generic", target=items[0].target)
    content = ~explanation.special_tokens
    content[-1] = False  # the read-out position is kept out, as a classifier's [CLS]
    scores = np.clip(explanation.scores[content], 0, None)
    expected = scores[items[0].truth[content]].sum() / scores.sum()
    assert math.isclose(evaluation.values("generic", "mass_accuracy")[(0, 0)], expected, rel_tol=1e-5)


@pytest.mark.parametrize("name", ["clip", "vilt", "captioner"])
def test_scene_image_text_items_evaluate_with_ground_truth(name):
    explainer, items = scene_items(name, 2)
    evaluation = evaluate(explainer, items, ["raw_attention"], metrics=("morf_auc", "lerf_auc", "mass_accuracy"))
    with_truth = [row for row in evaluation.rows if "mass_accuracy" in row]
    assert with_truth and all(np.isfinite(row["morf_auc"]) for row in evaluation.rows)
    if name == "captioner":  # one decision per caption token; the colour and shape words have a mask
        assert len(evaluation.rows) > len(items) and len(with_truth) == 4 * len(items)


def test_read_data_reads_images_texts_and_csv(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(2):
        Image.new("RGB", (8, 8), (index * 100, 0, 0)).save(folder / f"{index}.png")
    (folder / "notes.txt").write_text("not an image")
    assert [item.inputs for item in read_data(folder)] == [str(folder / "0.png"), str(folder / "1.png")]
    assert read_data(folder, {"text": "a red square"})[1].keywords == {"image": str(folder / "1.png"),
                                                                       "text": "a red square"}
    (tmp_path / "texts.txt").write_text("first text\n\n second one \n")
    assert [item.inputs for item in read_data(tmp_path / "texts.txt")] == ["first text", "second one"]
    with open(tmp_path / "data.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["text", "label"], ["good film", "positive"], ["bad film", ""]])
    assert [(item.inputs, item.target) for item in read_data(tmp_path / "data.csv")] == [
        ("good film", "positive"), ("bad film", None)]
    (tmp_path / "empty").mkdir()
    for wrong in (tmp_path / "empty", tmp_path / "missing.txt"):
        with pytest.raises(InputError):
            read_data(wrong)


def test_cli_evaluates_scenes_and_refuses_missing_data(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["evaluate", "--model", "vit", "--data", "scenes", "--count", "2", "--methods",
                 "raw_attention,rollout", "--metrics", "morf_auc,mass_accuracy", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "rollout - raw_attention morf_auc" in printed
    saved = json.loads((out / "faithfulness.json").read_text())["scene-vit"]
    assert len(saved["rows"]) == 4 and set(saved["summary"]) == {"raw_attention", "rollout"}
    assert main(["evaluate", "--model", "vit"]) == 2
    assert "Give --data" in capsys.readouterr().err


def test_suite_prints_one_table_with_costs(tmp_path, capsys):
    evaluations = run_suite(2, ["raw_attention", "generic"], tmp_path, models=("vit",), progress=False)
    assert math.isclose(relative_cost(evaluations["vit"], "generic"), 1.0)
    table = (tmp_path / "faithfulness.txt").read_text()
    assert "vit" in table and "raw_attention" in table and "cost" in table
    saved = json.loads((tmp_path / "faithfulness.json").read_text())
    assert saved["vit"]["comparisons_with_generic"][0]["method_b"] == "generic"


def test_sentence_similarity_evaluates_both_sides():
    evaluation = similarity_evaluation(["raw_attention"], 1, metrics=("morf_auc", "lerf_auc", "comprehensiveness"))
    assert [row["item"] for row in evaluation.rows] == [0, 1]
    assert all(np.isfinite(row["comprehensiveness"]) for row in evaluation.rows)
    # one logit: the cosine is tracked (its softmax probability would be 1 whatever is deleted)
    assert all(row["morf_auc"] != row["lerf_auc"] for row in evaluation.rows)
