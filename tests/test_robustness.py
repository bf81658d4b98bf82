"""What a new user may pass by mistake ends in a clear ToolkitError (the CLI: ``error: ...`` and exit 2) or in the
right result, never in a traceback from inside torch, PIL, numpy or transformers (review of trial 9, items A-O).
Each right result is compared with the same input given in the form the toolkit always read correctly."""
from __future__ import annotations

import contextlib
import logging
import re
import warnings
import zipfile
from types import SimpleNamespace
from typing import Iterator

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image, ImageOps
from transformers import BertConfig, BertForSequenceClassification, ViTImageProcessor

from toolkit import (Explainer, Explanation, InputError, ModelLoadError, ToolkitWarning, UnsupportedModelError,
                     render, zoo)
from toolkit.cli import main
from toolkit.evaluation.benchmark import BenchmarkSettings, format_report
from toolkit.explainer import _warn_if_uninformative
from toolkit.images import image_size, to_rgb
from toolkit.views import head_view, image_attention_view
from toolkit.zoo.common import scene_tokenizer, scenes
from toolkit.zoo.sentence_similarity import explain_similarity

POSITIONS = 16


@pytest.fixture(scope="module")
def scene():
    return scenes(1, 5)[0].image.convert("RGB")


@pytest.fixture(scope="module")
def vit():
    return Explainer(*zoo.load("vit"), name="vit")


@pytest.fixture(scope="module")
def clip():
    return Explainer(*zoo.load("clip"), name="clip")


@pytest.fixture(scope="module")
def tokenizer():
    return scene_tokenizer()


def make_classifier(tokenizer) -> nn.Module:
    """A tiny BERT classifier on the scene vocabulary, reading at most POSITIONS tokens."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, initializer_range=0.3, num_labels=3, max_position_embeddings=POSITIONS,
                        id2label={0: "red", 1: "green", 2: "blue"}, label2id={"red": 0, "green": 1, "blue": 2})
    return BertForSequenceClassification(config).eval()


@pytest.fixture(scope="module")
def bert(tokenizer):
    return Explainer(make_classifier(tokenizer), tokenizer)


@contextlib.contextmanager
def forward_count(model: nn.Module) -> Iterator[list]:
    """A list that grows by one at every forward pass of ``model`` inside the block."""
    calls: list = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        yield calls
    finally:
        handle.remove()


def toolkit_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, ToolkitWarning)]


# --- A: a float [0, 1] tensor of the model's size (torchvision's ToTensor()) is an image -------------------
def test_to_tensor_output_of_the_model_size_is_read_as_the_image(vit, scene):
    array = np.asarray(scene)
    from_pil = vit.explain(scene, method="generic")
    to_tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255
    assert to_tensor.shape[-2:] == (64, 64)
    with pytest.warns(ToolkitWarning, match=r'Image #0: the float tensor has no negative value.*\{"pixel_values"'):
        from_tensor = vit.explain(to_tensor, method="generic")
    assert from_tensor.probability == pytest.approx(from_pil.probability, abs=1e-6) and from_pil.probability > 0.9
    np.testing.assert_allclose(from_tensor.heatmap, from_pil.heatmap, rtol=1e-5, atol=1e-7)
    with pytest.warns(ToolkitWarning) as record:
        batch = vit.explain(torch.stack([to_tensor, to_tensor]), method="generic")
    assert [message[:30] for message in toolkit_warnings(record)] == [f"Image #{i}: the float tensor has"
                                                                      for i in (0, 1)]
    assert batch[1].probability == pytest.approx(from_pil.probability, abs=1e-6)
    processed = vit.adapter.processor(scene)  # normalised pixel_values: read as they are, without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", ToolkitWarning)
        assert vit.explain(processed, method="generic").probability == pytest.approx(from_pil.probability, abs=1e-6)
        explicit = vit.explain({"pixel_values": to_tensor}, method="generic")  # the old reading, asked for
    with torch.no_grad():
        direct = vit.model(to_tensor[None]).softmax(-1)[0]
    assert explicit.probability == pytest.approx(float(direct.max()), abs=1e-6)
    assert explicit.probability < from_pil.probability - 0.1


def test_pixel_values_given_by_name_are_checked(vit):
    with pytest.raises(InputError, match="pixel_values are 32x32 but this model reads 64x64"):
        vit.explain({"pixel_values": torch.zeros(1, 3, 32, 32)})
    with pytest.raises(InputError, match="NaN or infinite"):
        vit.explain({"pixel_values": torch.full((3, 64, 64), float("nan"))})
    with pytest.raises(InputError, match="takes {'pixel_values': tensor}"):
        vit.explain({"pixels": torch.zeros(1, 3, 64, 64)})


# --- K: image tensors in the layouts arrays have; NaN pixels ---------------------------------------------
def test_image_tensors_are_read_in_every_layout_arrays_are(vit, scene):
    rgb = np.asarray(scene)
    grey = np.asarray(scene.convert("L"))
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    cases = {
        "HxW": (grey, torch.from_numpy(grey.copy())),
        "HxWx3": (rgb, torch.from_numpy(rgb.copy())),
        "HxWx3 float": (rgb, torch.from_numpy(rgb.copy()).float() / 255),
        "1xHxW": (grey, torch.from_numpy(grey.copy())[None]),
        "4xHxW": (rgba, torch.from_numpy(rgba.copy()).permute(2, 0, 1)),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error", ToolkitWarning)
        for name, (array, tensor) in cases.items():
            expected = vit.explain(array, method="rollout")
            got = vit.explain(tensor, method="rollout")
            assert isinstance(got, Explanation), name
            np.testing.assert_allclose(got.heatmap, expected.heatmap, rtol=1e-5, atol=1e-7, err_msg=name)
        batch = torch.from_numpy(np.stack([rgb, rgb[::-1].copy()]))  # B x H x W x C
        expected = [vit.explain(rgb, method="rollout"), vit.explain(rgb[::-1].copy(), method="rollout")]
        for explained in (vit.explain(batch, method="rollout", batch_size=1),
                          vit.explain(list(batch), method="rollout"), vit.explain(batch.numpy(), method="rollout")):
            assert len(explained) == 2
            for got, want in zip(explained, expected):
                np.testing.assert_allclose(got.heatmap, want.heatmap, rtol=1e-5, atol=1e-7)
    with pytest.raises(InputError, match=r"Image #0 has NaN or infinite pixels"):
        vit.explain(torch.full((3, 64, 64), float("nan")))
    with pytest.raises(InputError, match=r"Image #1 has NaN or infinite pixels"):
        vit.explain([rgb, np.full((64, 64, 3), np.nan)])
    with pytest.raises(InputError, match=r"shape \(1, 1, 3, 64, 64\).*HxW, HxWxC or CxHxW"):
        vit.explain(torch.zeros(1, 1, 3, 64, 64))


def test_image_text_models_take_image_batches_as_classifiers_do(clip, scene):
    rgb = np.asarray(scene)
    batch = torch.from_numpy(np.stack([rgb, rgb[:, ::-1].copy()])).permute(0, 3, 1, 2)  # B x C x H x W, uint8
    from_batch = clip.explain(image=batch, text="a red circle")
    from_list = clip.explain(image=[rgb, rgb[:, ::-1].copy()], text="a red circle")
    assert len(from_batch) == 2
    for got, want in zip(from_batch, from_list):
        np.testing.assert_allclose(got.heatmap, want.heatmap, rtol=1e-5, atol=1e-7)
    with pytest.raises(InputError, match="Image #1 is of type NoneType"):
        clip.explain(image=[scene, None], text="a red circle")


# --- L: EXIF orientation -------------------------------------------------------------------------------
def test_exif_orientation_is_applied_to_files_and_pil_images(tmp_path, vit):
    generator = np.random.default_rng(0)
    upright = Image.fromarray(generator.integers(0, 256, (40, 64, 3), dtype=np.uint8))
    sideways = upright.transpose(Image.Transpose.ROTATE_90)  # as stored by a camera held sideways
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view"
    path = tmp_path / "sideways.jpg"
    sideways.save(path, exif=exif, quality=95)
    with Image.open(path) as opened:
        expected = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
        assert opened.size == (40, 64) and image_size(opened) == (64, 40)
        assert np.array_equal(np.asarray(to_rgb(opened)), expected)
    assert image_size(path) == (64, 40)
    read = to_rgb(path)
    assert read.size == (64, 40) and np.array_equal(np.asarray(read), expected)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ToolkitWarning)  # the scene model's note on a 64x40 photo
        explained = vit.explain(str(path), method="rollout")
        upright_explained = vit.explain(expected, method="rollout")
    np.testing.assert_allclose(explained.heatmap, upright_explained.heatmap, rtol=1e-5, atol=1e-7)
    assert explained.original_image.shape == (40, 64, 3)


# --- B: the command line checks what it writes, and its numbers ------------------------------------------
def test_cli_checks_the_output_folder_before_loading_anything(tmp_path, capsys, monkeypatch):
    import toolkit.cli

    monkeypatch.setattr(toolkit.cli, "_load", lambda args: pytest.fail("the model was loaded"))
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    for out, message in ((a_file, "is a file, not a folder"), (a_file / "inside", "cannot create the folder")):
        assert main(["explain", "--text", "hi", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --out: ") and message in err and "Traceback" not in err


def test_benchmark_checks_its_folder_and_seed_before_computing(tmp_path, capsys, monkeypatch):
    import toolkit.evaluation.benchmark as benchmark

    monkeypatch.setattr(benchmark, "run_task", lambda *args: pytest.fail("scenes were explained"))
    a_file = tmp_path / "taken"
    a_file.write_text("")
    config = tmp_path / "run.yaml"
    config.write_text(f"models: vit\nmethods: generic\nscenes: 2\nout: {a_file / 'results'}\n")
    assert main(["benchmark", "--config", str(config)]) == 2
    assert "error: the benchmark's out folder: cannot create the folder" in capsys.readouterr().err
    assert main(["benchmark", "--models", "vit", "--scenes", "2", "--seed", "-4"]) == 2
    assert "error: seed must be a whole number >= 0, got -4" in capsys.readouterr().err
    with pytest.raises(Exception, match="seed"):
        BenchmarkSettings(seed=-1)


def test_a_truncated_weights_file_is_named(tmp_path, tokenizer):
    make_classifier(tokenizer).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5])
    with pytest.raises(ModelLoadError, match=f"Could not read the weights in {weights}: the file is damaged"):
        Explainer.from_pretrained(str(tmp_path))


# --- C: views read images as the explainer does, and refuse what they cannot show ------------------------
def test_image_attention_view_reads_any_image_and_refuses_other_models(tmp_path, vit, clip, scene):
    model, processor = vit.model, vit.adapter.processor
    reference = image_attention_view(model, scene, processor).html
    path = tmp_path / "scene.png"
    scene.save(path)
    for image in (str(path), path, np.asarray(scene), scene.convert("RGBA")):
        assert image_attention_view(model, image, processor).html == reference
    grey = scene.convert("L")
    assert image_attention_view(model, grey, processor).html == image_attention_view(
        model, grey.convert("RGB"), processor).html
    with pytest.raises(UnsupportedModelError, match=r"CLIPModel is not one\. Pass its vision tower: "
                                                    r"image_attention_view\(model\.vision_model"):
        image_attention_view(clip.model, scene, clip.adapter.processor)
    image_attention_view(clip.model.vision_model, scene, clip.adapter.processor)  # as the message says


def test_text_views_need_a_tokenizer_and_a_text_model(clip, bert, tokenizer):
    with pytest.raises(UnsupportedModelError, match=r"CLIPModel reads images.*head_view\(model\.text_model"):
        head_view(clip.model, clip.adapter.processor, "a red circle")
    text_tower = head_view(clip.model.text_model, clip.adapter.processor, "a red circle")  # a processor's tokenizer
    assert text_tower.html == head_view(clip.model.text_model, clip.adapter.processor.tokenizer, "a red circle").html
    with pytest.raises(InputError, match="need the model's tokenizer.*got None"):
        head_view(bert.model, None, "a red circle")
    with pytest.raises(UnsupportedModelError, match="image_attention_view shows the attention of image models"):
        head_view(zoo.load("vit")[0], tokenizer, "a red circle")


# --- D: preprocessed input_ids ------------------------------------------------------------------------
def test_input_ids_are_checked_before_the_model_sees_them(bert, tokenizer):
    ids = tokenizer(["a red circle"], return_tensors="pt")["input_ids"]
    with forward_count(bert.model) as calls:
        for bad, message in ((ids.float(), r"integers; got torch.float32"),
                             (torch.tensor([[2, 9999, 3]]), r"input_ids\[0, 1\] is 9999, outside the vocabulary"),
                             (torch.tensor([[2, -1, 3]]), r"input_ids\[0, 1\] is -1, outside the vocabulary"),
                             (torch.randint(5, 40, (1, 40)), rf"40 tokens long but this model reads at most "
                                                             rf"{POSITIONS}"),
                             (ids[None], r"shaped \(N,\) or \(B, N\); got \(1, 1, 5\)")):
            with pytest.raises(InputError, match=message):
                bert.explain({"input_ids": bad, "attention_mask": torch.ones(1, bad.shape[-1], dtype=torch.long)})
        with pytest.raises(InputError, match="attention_mask has shape"):
            bert.explain({"input_ids": ids, "attention_mask": torch.ones(1, 3, dtype=torch.long)})
    assert not calls


# --- E: the shapes texts, questions and sentence pairs may not take ------------------------------------------
def test_text_arguments_of_the_wrong_shape_are_refused(bert, clip, scene):
    with pytest.raises(InputError, match="Text #0 is a tuple of 3 items.*Pass several texts as a list"):
        bert.explain(("a", "b", "c"))
    with pytest.raises(InputError, match=r"text must be a string or a list of strings; got 5 \(int\)"):
        clip.explain(image=scene, text=5)
    vilt = Explainer(*zoo.load("vilt"), name="vilt")
    with pytest.raises(InputError, match=r"question must be a string or a list of strings; got 5 \(int\)"):
        vilt.explain(image=scene, question=5)
    with pytest.raises(InputError, match="second must be a non-empty string, got None"):
        explain_similarity("a red circle", None)


# --- F: a processor of the wrong kind ----------------------------------------------------------------------
def test_a_processor_of_the_wrong_kind_is_refused_when_the_explainer_is_built(tokenizer, vit):
    from conftest import make_hf_vit

    with pytest.raises(InputError, match=r"BertForSequenceClassification \(bert\) takes its tokenizer.*got a "
                                         r"ViTImageProcessor"):
        Explainer(make_classifier(tokenizer), ViTImageProcessor())
    with pytest.raises(InputError, match=r"ViTForImageClassification \(hf-vit\) takes its image processor.*got a "
                                         r"BertTokenizer"):
        Explainer(make_hf_vit(), tokenizer)
    with pytest.raises(InputError, match=r"VisionTransformer \(timm-vit\) takes an image transform.*got a "
                                         r"ViTImageProcessor"):
        Explainer(vit.model, ViTImageProcessor())


# --- G: inference mode ----------------------------------------------------------------------------------
def test_gradient_methods_work_under_inference_mode(bert, vit, scene):
    expected = bert.explain("a red circle", method="transformer_attribution")
    pixels = vit.adapter.processor(scene)
    image_expected = vit.explain(pixels, method="generic")
    with torch.inference_mode():
        text = bert.explain("a red circle", method="transformer_attribution")
        inference_pixels = vit.adapter.processor(scene)
        image = vit.explain(inference_pixels, method="generic")
    assert inference_pixels.is_inference()
    later = vit.explain(inference_pixels, method="generic")  # made in inference mode, explained outside it
    np.testing.assert_allclose(text.scores, expected.scores, rtol=1e-6)
    for got in (image, later):
        np.testing.assert_allclose(got.heatmap, image_expected.heatmap, rtol=1e-6)


def test_a_model_made_in_inference_mode_is_refused_for_gradient_methods(tokenizer, bert):
    with torch.inference_mode():
        model = make_classifier(tokenizer)
    explainer = Explainer(model, tokenizer)
    with pytest.raises(UnsupportedModelError, match=r"made under torch.inference_mode\(\), and 'generic' needs "
                                                    r"gradients.*without gradients: lrp, lrp_plain, partial_lrp, "
                                                    r"partial_lrp_plain, raw_attention"):
        explainer.explain("a red circle", method="generic")
    np.testing.assert_allclose(explainer.explain("a red circle", method="rollout").scores,
                               bert.explain("a red circle", method="rollout").scores, rtol=1e-6)


# --- H: saving and loading ----------------------------------------------------------------------------
def test_explanation_files_are_checked(tmp_path, bert):
    explanation = bert.explain("a red circle", method="generic")
    with pytest.raises(InputError, match=r"is a folder; save\(\) writes one file: give its name, e\.g\. .*"
                                         r"explanation\.npz"):
        explanation.save(tmp_path)
    nested = explanation.save(tmp_path / "new" / "deeper" / "one")
    assert nested == tmp_path / "new" / "deeper" / "one.npz"
    np.testing.assert_array_equal(Explanation.load(nested).scores, explanation.scores)
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(InputError, match="is a file, not a folder"):
        explanation.save(a_file / "x.npz")
    np.savez(tmp_path / "foreign.npz", weights=np.zeros(3))
    (tmp_path / "text.npz").write_text("hello")
    for name, message in (("foreign.npz", "without the 'meta' entry save\\(\\) writes \\(it holds weights\\)"),
                          ("text.npz", "not a .npz archive at all"), ("missing.npz", "No explanation file at")):
        with pytest.raises(InputError, match=message):
            Explanation.load(tmp_path / name)
    with zipfile.ZipFile(tmp_path / "broken.npz", "w") as archive:
        archive.writestr("meta.npy", b"not an array")
    with pytest.raises(InputError, match="damaged or from an incompatible version"):
        Explanation.load(tmp_path / "broken.npz")


# --- I: a long text's warning quotes a bounded number of words -------------------------------------------------
def test_the_cut_warning_names_how_many_words_it_leaves_out(bert):
    with pytest.warns(ToolkitWarning) as record:
        bert.explain(" ".join(["red"] * 3000), method="generic")
    [message] = toolkit_warnings(record)
    kept = POSITIONS - 2  # [CLS] and [SEP]
    assert f"and {3000 - kept - 30:,} more words are left out" in message
    assert message.count("red") == 30 and len(message) < 600


# --- J: the toolkit's warnings are ToolkitWarnings; the CLI prints them as lines ------------------------------
def test_every_warning_is_a_toolkit_warning(bert, vit, tokenizer):
    from conftest import make_hf_vit

    zeros = Explanation(method="m", model="x", target=0, label="a", probability=1.0, scores=np.zeros(4))
    with pytest.warns(ToolkitWarning, match="zero everywhere"):
        _warn_if_uninformative(zeros, 0, "no reason")
    with pytest.warns(ToolkitWarning, match="trained on 64x64 synthetic scenes"):
        vit.explain(np.zeros((375, 500, 3), np.uint8), method="rollout")
    with pytest.warns(ToolkitWarning, match="without an attention_mask"):
        bert.explain(tokenizer("a red circle", return_tensors="pt")["input_ids"], method="generic")
    with pytest.warns(ToolkitWarning, match="No image processor given"):
        Explainer(make_hf_vit()).explain(np.zeros((40, 40, 3), np.uint8), method="rollout")
    with pytest.warns(ToolkitWarning, match="flat"):
        render.heatmap_overlay(np.zeros((8, 8, 3), np.uint8), np.zeros((2, 2)))


def test_an_unreadable_photo_gets_its_error_without_the_scene_note(tmp_path, vit):
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(photo)
    data = photo.read_bytes()
    photo.write_bytes(data[:len(data) // 2])
    with Image.open(photo) as opened:
        assert opened.size == (500, 375)  # its header is whole: only decoding finds the file cut
    assert image_size(photo) is None
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with pytest.raises(InputError, match="is not a readable image"):
            vit.explain(str(photo))
    assert not [str(w.message) for w in record if "trained on" in str(w.message)]


def test_cli_prints_toolkit_warnings_as_lines(tmp_path, capsys):
    assert main(["explain", "--labels", "positive", "--text", "a fine film", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "warning: --labels gives one label ('positive'): a zero-shot classifier compares" in err
    assert "ToolkitWarning" not in err and "runpy" not in err


# --- M: inputs and targets are checked before the first batch runs ---------------------------------------
def test_bad_inputs_and_targets_are_found_before_any_batch(bert, vit, scene, tmp_path):
    texts = [f"a red circle left of {i}" for i in range(30)]
    with forward_count(bert.model) as calls:
        with pytest.raises(InputError, match=r"Input #25: Unknown label 'nope'"):
            bert.explain(texts, target=[0] * 25 + ["nope"] + [0] * 4, batch_size=8, method="generic")
        with pytest.raises(InputError, match=r"Input #27: target 3 is out of range: targets are class indices 0..2"):
            bert.explain(texts, target=[0] * 27 + [3, 0, 0], batch_size=8, method="generic")
        with pytest.raises(InputError, match="Text #25 is empty"):
            bert.explain(texts[:25] + ["  "] + texts[:4], batch_size=8, method="generic")
        with pytest.raises(InputError, match="Text #12 is of type int, not a string"):
            bert.explain(texts[:12] + [5], batch_size=8, method="generic")
    assert not calls
    with forward_count(vit.model) as calls:
        with pytest.raises(InputError, match=r"Image #9: no file at"):
            vit.explain([scene] * 9 + [str(tmp_path / "missing.png")], batch_size=4, method="rollout")
        with pytest.raises(InputError, match=r"Image #5: .* is a URL, and images are not downloaded here"):
            vit.explain([scene] * 5 + ["https://example.com/cat.jpg"], batch_size=2, method="rollout")
    assert not calls
    assert bert.explain("a red circle", target=" 2 ").target == 2


# --- N: the command line's odds and ends ---------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["--labels", ";;"], "--labels ';;' holds no label"),
    (["--labels", "good=I liked it;Good=great"], "--labels names 'Good' twice"),
    (["--labels", "=nameless;bad"], "has no label name before '='"),
    (["--target", "-1"], r"target -1 is out of range: targets are class indices 0\.\.1"),
])
def test_cli_refuses_bad_labels_and_targets(argv, message, capsys, tmp_path):
    assert main(["explain", "--text", "a fine film", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert "error: " in err and re.search(message, err)


def test_cli_refuses_urls_counts_and_says_an_image_classifier(capsys, tmp_path):
    with pytest.raises(SystemExit) as exited:
        main(["explain", "--text", "hi", "--top", "-3"])
    assert exited.value.code == 2 and "--top: must be a whole number of at least 1" in capsys.readouterr().err
    assert main(["explain", "--model", "vit", "--image", "https://example.com/cat.jpg", "--out", str(tmp_path)]) == 2
    assert "is a URL, and images are not downloaded here: save the file first" in capsys.readouterr().err
    image = tmp_path / "scene.png"
    scenes(1, 5)[0].image.save(image)
    assert main(["explain", "--model", "vit", "--image", str(image), "--question", "what?", "--out",
                 str(tmp_path)]) == 2
    assert "vit is an image classifier." in capsys.readouterr().err


def test_benchmark_report_leaves_out_an_empty_comparison_section():
    assert "Paired gain" not in format_report([], [])


def test_library_log_lines_are_left_to_the_toolkits_own_messages(tokenizer, caplog, monkeypatch):
    import open_clip

    from toolkit.loading import load_open_clip

    explainer = Explainer(make_classifier(tokenizer), scene_tokenizer())  # a fresh tokenizer logs once
    with caplog.at_level(logging.INFO), pytest.warns(ToolkitWarning, match="is cut"):
        explainer.explain(" ".join(["red"] * 600), method="generic")

    def failing(*args, **kwargs):
        logging.error("Failed to download weights for tag 'openai'")
        raise RuntimeError("Failed to download weights for tag 'openai'")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", failing)
    with caplog.at_level(logging.INFO), pytest.raises(ModelLoadError, match="Could not load open_clip"):
        load_open_clip("ViT-B-32", pretrained=None)
    assert not [record for record in caplog.records if "Token indices" in record.getMessage()
                or "Failed to download" in record.getMessage()]


# --- O: wrapped models, and a name instead of a model ----------------------------------------------------
def test_wrapped_models_are_explained_as_the_model_inside(bert, tokenizer):
    from transformers import pipeline

    expected = bert.explain("a red circle", method="generic").scores
    pipe = pipeline("text-classification", model=bert.model, tokenizer=tokenizer)
    for wrapped, processor in ((nn.DataParallel(bert.model), tokenizer), (torch.compile(bert.model), tokenizer),
                               (pipe, None)):
        explainer = Explainer(wrapped, processor)
        assert explainer.model is bert.model
        np.testing.assert_allclose(explainer.explain("a red circle", method="generic").scores, expected, rtol=1e-6)
    with pytest.raises(UnsupportedModelError, match=r"not its name 'bert-base-uncased': use "
                                                    r"Explainer\.from_pretrained\('bert-base-uncased'\)"):
        Explainer("bert-base-uncased")
    with pytest.raises(UnsupportedModelError, match="a torch.nn.Module.*got a SimpleNamespace"):
        Explainer(SimpleNamespace())
