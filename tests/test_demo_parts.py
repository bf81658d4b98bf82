"""The demo's parts in-process: its config, the model cache under concurrent requests, the warning relay, what
it draws, the Space export and the CLI entries; and the library functions the demo added (predict,
caption_step, caption_word_objects)."""
from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio")

from toolkit import ConfigError, Explainer, InputError, UnsupportedModelError, list_methods, zoo  # noqa: E402
from toolkit.cli import build_parser, main  # noqa: E402
from toolkit.demo import display  # noqa: E402
from toolkit.demo.config import TABS, DemoConfig, load_config, parse_config, to_yaml  # noqa: E402
from toolkit.demo.handlers import Handlers, parse_labels  # noqa: E402
from toolkit.demo.models import LoadedModel, ModelCache  # noqa: E402
from toolkit.demo.scenes import SceneBook, caption_step_truths, caption_truth, question_truth  # noqa: E402
from toolkit.demo.serving import collect_warnings, install_warning_relay  # noqa: E402
from toolkit.demo.space import export_space  # noqa: E402
from toolkit.evaluation.metrics import pointing_game, relevance_mass_accuracy  # noqa: E402
from toolkit.zoo.common import caption_word_objects, scene_generator  # noqa: E402


@pytest.fixture(scope="module")
def scenes():
    generator = scene_generator()
    return [generator.generate(seed) for seed in range(6)]


@pytest.fixture(scope="module")
def vit():
    model, processor = zoo.load("vit")
    return Explainer(model, processor, name="scene-vit")


# --- config ---------------------------------------------------------------------------------------------
def test_config_defaults_serve_the_builtin_models():
    config = DemoConfig()
    assert [config.models(tab)[0].model for tab in TABS] == ["minilm-zero-shot", "vit", "clip", "vilt", "captioner"]
    assert all(config.models(tab)[0].is_builtin for tab in TABS)


def test_config_reads_yaml_shorthands_and_round_trips(tmp_path):
    path = tmp_path / "demo.yaml"
    path.write_text("title: Mine\ntext: [minilm-zero-shot, distilbert-base-uncased-finetuned-sst-2-english]\n"
                    "image:\n  - vit\n  - {model: vit_base_patch16_224, source: timm}\nvqa: []\n"
                    "serving: {concurrency_limit: 3}\n")
    config = load_config(path)
    assert config.title == "Mine" and config.serving.concurrency_limit == 3 and config.vqa == []
    assert [e.model for e in config.text] == ["minilm-zero-shot", "distilbert-base-uncased-finetuned-sst-2-english"]
    assert config.image[1].hub_id == "timm/vit_base_patch16_224" and config.text[1].hub_id == config.text[1].model
    assert config.captioning == DemoConfig().captioning  # a tab left out keeps its built-in model
    assert parse_config(__import__("yaml").safe_load(to_yaml(config))) == config


@pytest.mark.parametrize("data, message", [
    ({"txt": []}, "txt: unknown key; valid keys: title, text"),
    ({"text": [{"model": "minilm-zero-shot", "sorce": "hf"}]}, "text[0].sorce: unknown key; valid keys: model"),
    ({"serving": {"max_files": 3}}, "serving.max_files: unknown key"),
    ({"image": ["clip"]}, "'clip' is the built-in model of the 'image_text' tab"),
    ({"image": [{"model": "vit", "labels": {"a": "b"}}]}, "labels apply only to the built-in 'minilm-zero-shot'"),
    ({"text": None}, "text: give a list of models"),
    ({"serving": {"concurrency_limit": 0}}, "serving.concurrency_limit"),
    ({tab: [] for tab in TABS}, "every tab is empty"),
    (["vit"], "must be a mapping"),
])
def test_config_errors_say_what_to_fix(data, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "demo.yaml")
    assert message in str(caught.value)


def test_config_files_that_cannot_be_read(tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "broken.yaml").write_text("text: [a\n")
    cases = (("empty.yaml", "is empty"), ("broken.yaml", "not valid YAML"), ("missing.yaml", "Cannot read"))
    for name, message in cases:
        with pytest.raises(ConfigError, match=message):
            load_config(tmp_path / name)


def test_unknown_model_name_is_refused():
    with pytest.raises(ConfigError, match="No model 'bert' in the Image classification tab"):
        DemoConfig().entry("image", "bert")


def test_a_model_in_the_wrong_tab_is_refused_when_loaded(tmp_path, wordpiece):
    from conftest import make_bert

    from toolkit.demo.models import load_entry

    make_bert(wordpiece.vocab_size).save_pretrained(tmp_path / "bert")
    wordpiece.save_pretrained(tmp_path / "bert")
    config = parse_config({"image": [str(tmp_path / "bert")]})
    with pytest.raises(ConfigError, match="is a bert model \\(text\\).*list it under the Text classification tab"):
        load_entry("image", config.image[0])
    assert load_entry("text", config.image[0]).explainer.adapter.modality == "text"


def test_zero_shot_labels_are_parsed_line_by_line():
    assert parse_labels("sport: a text about sport\npolitics\n\n") == {"sport": "a text about sport",
                                                                          "politics": "politics"}
    assert parse_labels("a = one; b = two") == {"a": "one", "b": "two"}
    with pytest.raises(InputError, match="at least one label"):
        parse_labels(" \n ")


# --- the model cache under concurrent requests ---------------------------------------------------------------
def test_each_model_loads_once_under_concurrent_first_requests(vit):
    calls = []

    def loader(tab, entry):
        calls.append(entry.model)
        threading.Event().wait(0.2)  # a slow load, so that the other requests arrive meanwhile
        return LoadedModel(entry, tab, vit.model, vit.adapter.processor, vit)

    cache = ModelCache(DemoConfig(), loader)
    name = DemoConfig().image[0].display
    got = []
    threads = [threading.Thread(target=lambda: got.append(cache.get("image", name))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == ["vit"] and len(got) == 8 and all(g is got[0] for g in got)


def test_concurrent_requests_on_one_model_do_not_see_each_others_captures(vit, scenes):
    """Eight threads explain eight scenes at once through one cached model: each gets exactly what it gets
    alone. (Without the model's lock they do not: the Recorder's hooks sit on the shared modules, so calls
    interleave their captures and autograd fails or the maps mix.)"""
    loaded = LoadedModel(DemoConfig().image[0], "image", vit.model, vit.adapter.processor, vit)
    alone = [vit.explain(scene.image, method="generic").heatmap for scene in scenes]
    barrier = threading.Barrier(len(scenes))
    results: dict[int, list[np.ndarray]] = {}

    def request(index: int) -> None:
        barrier.wait()
        for _ in range(3):
            with loaded.session() as explainer:
                results.setdefault(index, []).append(explainer.explain(scenes[index].image, method="generic").heatmap)

    threads = [threading.Thread(target=request, args=(i,)) for i in range(len(scenes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, expected in enumerate(alone):
        assert len(results[index]) == 3
        for heatmap in results[index]:
            np.testing.assert_allclose(heatmap, expected, rtol=1e-5, atol=1e-7)


def test_zero_shot_sessions_use_each_requests_labels():
    handlers = Handlers(DemoConfig())
    loaded = handlers.cache.get("text", DemoConfig().text[0].display)
    outcomes = {}

    def request(labels):
        with loaded.session(labels) as explainer:
            outcomes[tuple(labels)] = (explainer.labels, explainer.predict("the match ended in a draw", top_k=3))

    threads = [threading.Thread(target=request, args=(labels,)) for labels in
               ({"sport": "a text about sport", "cooking": "a text about cooking"},
                {"happy": "a happy text", "sad": "a sad text", "angry": "an angry text"})]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sport, mood = outcomes[("sport", "cooking")], outcomes[("happy", "sad", "angry")]
    assert sorted(sport[0].values()) == ["cooking", "sport"] and sport[1][0][0] == "sport"
    assert sorted(mood[0].values()) == ["angry", "happy", "sad"] and len(mood[1]) == 3


# --- warnings reach the request that raised them ---------------------------------------------------------
def test_warnings_are_relayed_to_the_thread_that_raised_them():
    install_warning_relay()
    seen: dict[int, list[str]] = {}
    barrier = threading.Barrier(4)

    def request(number: int) -> None:
        with collect_warnings() as messages:
            barrier.wait()
            for _ in range(2):
                warnings.warn(f"request {number}", UserWarning)
            barrier.wait()
        seen[number] = list(messages)

    threads = [threading.Thread(target=request, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {n: [f"request {n}"] for n in range(4)}


# --- what the demo draws -----------------------------------------------------------------------------------
def test_small_images_are_enlarged_block_by_block():
    image = np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3)
    assert display.enlargement(image) == 4 and display.enlargement(np.zeros((224, 300, 3))) == 1
    big = display.enlarge(image, 4)
    assert big.shape == (256, 256, 3) and (big[::4, ::4] == image).all() and (big[3::4, 3::4] == image).all()


def test_outline_follows_the_mask_border():
    image = np.zeros((256, 256, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), dtype=bool)
    mask[16:32, 16:32] = True
    drawn = display.draw_outline(image, mask)
    white = (drawn == 255).all(axis=-1)
    assert white[64:128, 63:66].any() and white[63:66, 64:128].any()  # on the square's border (x4)
    assert not white[80:112, 80:112].any() and not white[:40].any()  # not inside it, not far away


def test_overlay_image_is_the_librarys_overlay_enlarged(vit, scenes):
    exp = vit.explain(scenes[0].image, method="generic")
    picture = np.asarray(display.overlay_image(exp))
    assert picture.shape[1] == 256 and picture.shape[0] > 256  # the enlarged view, its colour bar below
    from dataclasses import replace

    expected = np.asarray(replace(exp, image=display.enlarge(exp.image, 4)).overlay(colour_bar=True))
    assert np.array_equal(picture, expected)
    raw = np.asarray(display.raw_map_image(exp)).reshape(8, 32, 8, 32, 3)
    assert (raw == raw[:, :1, :, :1]).all() and np.ptp(raw) > 0


def test_ground_truth_report_matches_the_metrics(vit, scenes):
    from toolkit.demo.scenes import largest_object_truth

    scene = scenes[1]
    exp = vit.explain(scene.image, method="generic")
    truth = largest_object_truth(scene)
    mass, hit = truth.scores(exp.heatmap)
    assert mass == relevance_mass_accuracy(exp.heatmap, truth.mask) and hit == pointing_game(exp.heatmap, truth.mask)
    report = display.map_report(exp, truth)
    assert f"{mass:.0%} of the positive relevance" in report and f"{truth.chance:.0%}" in report


def test_scene_book_recognises_drawn_scenes_by_their_pixels(scenes):
    book = SceneBook(capacity=2)
    drawn = book.draw(5)
    assert book.find(drawn.image.copy()).seed == 5
    assert book.find(scenes[0].image) is None
    book.draw(6), book.draw(7)
    assert book.find(drawn.image) is None  # bounded: the oldest is forgotten


def test_ground_truth_of_captions_questions_and_caption_words(scenes):
    scene = scenes[2]
    caption = scene.captions[0]
    truth = caption_truth(scene, caption.upper())
    words = caption.split()
    assert truth is not None and truth.mask.sum() > 0
    assert caption_truth(scene, "a dog on the grass") is None
    question = scene.questions[0]
    assert question_truth(scene, f"  {question.text.upper()} ").mask is question.mask
    assert question_truth(scene, "what is this?") is None
    steps = caption_step_truths(scene, caption, words)
    objects = caption_word_objects(scene, caption)
    assert sorted(steps) == sorted(objects) == [1, 2, len(words) - 2, len(words) - 1]
    assert objects[1].colour == words[1] and objects[2].shape == words[2]
    assert objects[len(words) - 1].shape == words[-1]
    assert caption_step_truths(scene, caption, words[:-1]) == {}


# --- library additions used by the demo -----------------------------------------------------------------
def test_predict_ranks_the_classes_explain_reports(vit, scenes):
    top = vit.predict(scenes[0].image, top_k=3)
    assert len(top) == 3 and [p for _, p in top] == sorted((p for _, p in top), reverse=True)
    exp = vit.explain(scenes[0].image, method="raw_attention")
    assert top[0] == (exp.label, pytest.approx(exp.probability, abs=1e-6))
    assert sum(p for _, p in vit.predict(scenes[0].image, top_k=10)) == pytest.approx(1, abs=1e-5)
    with pytest.raises(InputError, match="top_k"):
        vit.predict(scenes[0].image, top_k=0)
    with pytest.raises(InputError, match="one input"):
        vit.predict([scenes[0].image, scenes[1].image])


def test_vilt_predict_ranks_answers_by_the_explained_probability(scenes):
    model, processor = zoo.load("vilt")
    explainer = Explainer(model, processor)
    scene = scenes[0]
    question = scene.questions[0].text
    top = explainer.predict(image=scene.image, question=question, top_k=5)
    exp = explainer.explain(image=scene.image, question=question, method="raw_attention")
    assert top[0] == (exp.answer, pytest.approx(exp.probability, abs=1e-5))
    second = explainer.explain(image=scene.image, question=question, method="raw_attention", target=top[1][0])
    assert second.probability == pytest.approx(top[1][1], abs=1e-5)
    model, processor = zoo.load("clip")
    with pytest.raises(UnsupportedModelError, match="no fixed set of answers"):
        Explainer(model, processor).predict(image=scene.image, text="a red circle")


def test_caption_step_is_one_tokens_explanation(scenes):
    model, processor = zoo.load("captioner")
    scene = scenes[0]
    caption = scene.captions[0]
    exp = Explainer(model, processor).explain(image=scene.image, caption=caption, method="generic")
    step = exp.caption_step(2)
    assert step.label == caption.split()[2] and step.heatmap is exp.steps[2].heatmap
    assert step.tokens == exp.steps[2].text_tokens and np.array_equal(step.scores, exp.steps[2].text_scores)
    assert step.probability == pytest.approx(np.exp(exp.steps[2].log_prob))
    assert step.overlay().size == exp.overlay().size and "<span" in step.to_html(level="tokens")
    with pytest.raises(InputError, match="Unknown caption step 99"):
        exp.caption_step(99)


def test_caption_gallery_draws_every_step_on_one_scale(scenes, tmp_path):
    handlers = Handlers(DemoConfig(), outputs=display.OutputFolders(tmp_path))
    scene = scenes[0]
    state = handlers.explain_caption(DemoConfig().captioning[0].display, scene.image, True, scene.captions[0],
                                     "generic", "(none)")[-1]
    [exp], [pictures] = state["exps"], state["steps"]
    scale = exp.caption_scale()
    differs = 0
    for index, shown in enumerate(pictures):
        step, truth = exp.caption_step(index), state["truths"].get(index)
        drawn = np.asarray(Image.open(shown.picture))
        np.testing.assert_array_equal(drawn, np.asarray(display.overlay_image(step, truth, scale)))
        differs += not np.array_equal(drawn, np.asarray(display.overlay_image(step, truth)))
    assert differs >= len(pictures) - 1  # each but the strongest step is drawn weaker than on its own scale


# --- the Space export and the CLI entries ---------------------------------------------------------------
def test_export_space_writes_a_complete_space(tmp_path):
    config = parse_config({"text": ["minilm-zero-shot", "distilbert-base-uncased-finetuned-sst-2-english"],
                           "image": ["vit", {"model": "vit_base_patch16_224", "source": "timm"}]})
    folder = export_space(tmp_path / "space", config)
    import yaml

    readme = (folder / "README.md").read_text()
    card = yaml.safe_load(readme.split("---")[1])
    import gradio

    assert card["sdk"] == "gradio" and card["sdk_version"] == gradio.__version__ and card["app_file"] == "app.py"
    assert card["models"] == card["preload_from_hub"] == ["distilbert-base-uncased-finetuned-sst-2-english",
                                                          "timm/vit_base_patch16_224"]
    assert {"title", "emoji", "python_version", "suggested_hardware"} <= set(card)
    from importlib import metadata

    pins = dict(line.split("==") for line in (folder / "requirements.txt").read_text().split())
    assert pins["torch"] == metadata.version("torch") and pins["transformers"] == metadata.version("transformers")
    assert "gradio" not in pins
    assert load_config(folder / "demo.yaml") == config
    assert (folder / "toolkit" / "zoo" / "weights" / "scene_vit.safetensors").is_file()
    assert not list(folder.rglob("__pycache__")) and not list(folder.rglob("*.pyi"))
    with pytest.raises(ConfigError, match="not empty"):
        export_space(folder, config)
    builtin = yaml.safe_load((export_space(tmp_path / "plain")).joinpath("README.md").read_text().split("---")[1])
    assert "models" not in builtin and builtin["suggested_hardware"] == "cpu-basic"


def test_cli_has_demo_and_export_space(tmp_path, capsys):
    args = build_parser().parse_args(["demo", "--config", "x.yaml", "--server-name", "0.0.0.0", "--server-port",
                                      "7000", "--share", "--preload"])
    assert (args.config, args.server_name, args.server_port, args.share, args.preload) == (
        "x.yaml", "0.0.0.0", 7000, True, True)
    assert main(["export-space", str(tmp_path / "space")]) == 0
    assert (tmp_path / "space" / "app.py").is_file() and "python app.py" in capsys.readouterr().out
    (tmp_path / "bad.yaml").write_text("text: [minilm-zero-shot]\nimage: []\nvqa: {model: 3}\n")
    assert main(["demo", "--config", str(tmp_path / "bad.yaml")]) == 2
    assert "vqa" in capsys.readouterr().err


# --- models a config names (a local folder stands in for the Hub) -------------------------------------------
@pytest.fixture(scope="module")
def local_models(tmp_path_factory, wordpiece):
    from conftest import _image_processor, make_bert, make_hf_vit

    folder = tmp_path_factory.mktemp("local")
    make_bert(wordpiece.vocab_size).save_pretrained(folder / "bert")
    wordpiece.save_pretrained(folder / "bert")
    make_hf_vit().save_pretrained(folder / "vit")
    _image_processor().save_pretrained(folder / "vit")
    config = parse_config({"text": ["minilm-zero-shot", {"model": str(folder / "bert"), "title": "tiny BERT"}],
                           "image": [{"model": str(folder / "vit"), "title": "tiny ViT"}]})
    return Handlers(config)


def test_a_configured_text_classifier_is_served(local_models, tmp_path):
    settings = local_models.model_settings("text", "tiny BERT")
    assert settings["methods"] == list_methods()  # every registered method applies to BERT
    assert settings["method"] == "generic_attnlrp" and not settings["builtin"] and settings["layers"] == 3
    label, page, page_b, table, files = local_models.explain_text("tiny BERT", "the movie was surprisingly good",
                                                                  "", "lrp", "(none)", 0, settings["labels"][2])
    assert set(label) == set(settings["labels"]) and page_b is None
    assert all(f">{word}</span>" in page for word in ("movie", "surprisingly"))
    assert len(table["data"]) == 5 and len(files) == 2


def test_a_configured_image_classifier_is_served_without_ground_truth(local_models, tmp_path):
    local_models.book.draw(0).image.save(tmp_path / "scene.png")
    label, overlay, overlay_b, raw, report, files = local_models.explain_image(
        "tiny ViT", str(tmp_path / "scene.png"), "generic", "rollout", 1, "(predicted)")
    assert len(label) == 4
    assert np.asarray(Image.open(overlay)).shape[1] == 256  # the 32x32 model view, enlarged 8 times
    assert "Ground truth" not in report  # a scene, but not a built-in model: its view is not the scene
    assert "rollout" in report and len(files) == 6


def test_image_report_gives_each_maps_deletion_test(local_models, tmp_path):
    from toolkit.evaluation.faithfulness import faithfulness_of

    local_models.book.draw(1).image.save(tmp_path / "scene.png")
    *_, report, _ = local_models.explain_image("tiny ViT", str(tmp_path / "scene.png"), "generic", "rollout", 0,
                                               "(predicted)")
    with local_models.cache.get("image", "tiny ViT").session() as explainer:
        for method in ("generic", "rollout"):
            image = Image.open(tmp_path / "scene.png").convert("RGB")
            result = faithfulness_of(explainer.explain(image, method=method), explainer, image)[0]
            assert (f"keeps an area of {result.values['morf_auc']:.3f}" in report
                    and f"and {result.values['lerf_auc']:.3f} least relevant first" in report)
    assert report.count("Deletion test") == 2


def test_output_folders_are_removed_after_their_time(tmp_path):
    import os
    import time

    outputs = display.OutputFolders(tmp_path / "out", keep_seconds=3600)
    old, new = outputs.fresh(), outputs.fresh()
    (old / "overlay.png").write_bytes(b"png")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    outputs.prune()
    assert not old.exists() and new.is_dir()


# --- every request ends in a result or a readable message ----------------------------------------------------
def test_user_facing_turns_errors_into_messages_and_relays_warnings(monkeypatch):
    import gradio as gr

    from toolkit.demo.serving import user_facing

    shown = []
    monkeypatch.setattr(gr, "Warning", shown.append)
    install_warning_relay()

    def explain(kind):
        warnings.warn("the text was cut", UserWarning)
        if kind == "toolkit":
            raise InputError("Enter a question first.")
        if kind == "bug":
            raise KeyError("pixel_values")
        return "done"

    handler = user_facing(explain)
    assert handler("ok") == "done" and shown == ["the text was cut"]
    with pytest.raises(gr.Error) as caught:
        handler("toolkit")
    assert caught.value.message == "Enter a question first."
    with pytest.raises(gr.Error) as caught:
        handler("bug")
    assert "KeyError" in caught.value.message and "the app keeps running" in caught.value.message
    assert shown == ["the text was cut"] * 3


def test_the_app_starts_when_a_configured_hub_model_cannot_load(monkeypatch):
    """Offline, a hub model of the config cannot load: the app is built anyway (every method listed for it),
    and a request for it gets the loader's message."""
    from toolkit.demo import build_app
    from toolkit.errors import ToolkitError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = parse_config({"text": ["someone/no-such-sentiment-model"], "image": [], "image_text": [], "vqa": [],
                           "captioning": [], "attention_views": False})
    handlers = Handlers(config)
    app = build_app(config, handlers=handlers)
    assert {"explain_text"} <= {fn.api_name for fn in app.fns.values()}
    with pytest.raises(ToolkitError, match="no-such-sentiment-model"):
        handlers.explain_text("someone/no-such-sentiment-model", "fine", "", "generic", "(none)", 0, None)
