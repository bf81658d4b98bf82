"""The command line reaches the built-in models by name and the image-text tasks (--text / --question /
--caption with --image, --source open_clip), saves what it prints, and refuses bad combinations with exit 2."""
from __future__ import annotations

import re

import numpy as np
import pytest

from PIL import Image

from toolkit import Explainer, Explanation, zoo
from toolkit.cli import _strongest_context, main
from toolkit.explanation import CaptionStep
from toolkit.scenes import generate_scenes


@pytest.fixture(scope="module")
def scene_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scenes")
    paths = []
    for index, scene in enumerate(generate_scenes(2, seed=11, size=64)):
        path = folder / f"scene{index}.png"
        scene.image.save(path)
        paths.append(str(path))
    return paths


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["explain", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def saved(out, count: int) -> list[Explanation]:
    assert (out / "index.html").is_file()
    return [Explanation.load(out / f"explanation_{index:03d}.npz") for index in range(count)]


def test_vqa_prints_and_saves_the_answer(capsys, tmp_path, scene_files):
    question = "what colour is the cross?"
    code, printed, _ = run(capsys, "--model", "vilt", "--image", scene_files[0], "--question", question,
                           "--out", str(tmp_path))
    assert code == 0
    [exp] = saved(tmp_path, 1)
    expected = Explainer(*zoo.load("vilt"), name="vilt").explain(image=scene_files[0], question=question)
    assert exp.answer == expected.answer and exp.text == question
    assert f"-> answer {exp.answer!r} (p={exp.probability:.3f})" in printed
    np.testing.assert_allclose(exp.heatmap, expected.heatmap, rtol=1e-5, atol=1e-7)
    assert (tmp_path / "explanation_000.png").is_file()
    page = (tmp_path / "index.html").read_text()
    assert "explanation_000.png" in page and "colour" in page and "[CLS]" not in page


def test_clip_compares_each_image_with_every_text(capsys, tmp_path, scene_files):
    texts = ["a red circle", "a blue square"]
    code, printed, _ = run(capsys, "--model", "clip", *[a for p in scene_files for a in ("--image", p)],
                           "--text", texts[0], "--text", texts[1], "--out", str(tmp_path))
    assert code == 0
    explanations = saved(tmp_path, 4)
    assert [exp.text for exp in explanations] == texts * 2
    for image in range(2):  # probabilities over the texts given for one image
        assert sum(exp.probability for exp in explanations[2 * image:2 * image + 2]) == pytest.approx(1.0, abs=1e-5)
    for index, exp in enumerate(explanations):
        assert f"[{index}] clip | generic | {scene_files[index // 2]} | text {exp.text!r}: " \
               f"similarity {exp.similarity:.3f}" in printed
        assert (tmp_path / f"explanation_{index:03d}.png").is_file()
    assert "text relevance: " in printed and "[SEP]" not in printed  # special tokens left out of the summary


def test_captioner_generates_or_explains_a_given_caption(capsys, tmp_path, scene_files):
    code, printed, _ = run(capsys, "--model", "captioner", "--image", scene_files[0], "--out", str(tmp_path / "a"))
    assert code == 0
    [generated] = saved(tmp_path / "a", 1)
    assert generated.caption and f"caption {generated.caption!r}" in printed
    token_lines = [line for line in printed.splitlines() if re.match(r"\s+\S+ p=\d\.\d{3}  image peak at patch", line)]
    assert [line.split()[0] for line in token_lines] == [step.token for step in generated.steps]
    # Every step drawn on one scale (a token that hardly rests on the image looks nearly empty), and the page
    # shows the caption's tokens.
    scale = generated.caption_scale()
    for number in range(len(generated.steps)):
        drawn = Image.open(tmp_path / "a" / f"explanation_000_token{number:02d}.png")
        expected = generated.caption_step(number).overlay(colour_bar=True, scale=scale)
        np.testing.assert_array_equal(np.asarray(drawn), np.asarray(expected))
    page = (tmp_path / "a" / "index.html").read_text()
    assert all(f">{step.token}</span>" in page for step in generated.steps) and "caption_step(i)" in page

    caption = "a green triangle below a blue cross"
    code, printed, _ = run(capsys, "--model", "captioner", "--image", scene_files[0], "--caption", caption,
                           "--out", str(tmp_path / "b"))
    assert code == 0
    [given] = saved(tmp_path / "b", 1)
    assert given.caption == caption and [step.token for step in given.steps] == caption.split()


def test_builtin_vit_by_name(capsys, tmp_path, scene_files):
    code, printed, _ = run(capsys, "--model", "vit", "--image", scene_files[1], "--out", str(tmp_path))
    assert code == 0
    [exp] = saved(tmp_path, 1)
    assert exp.label in zoo.recipe("vit").CLASSES and f"predicted/target: {exp.label}" in printed
    heading = re.search(r'<table class="heading".*?</table>', (tmp_path / "index.html").read_text()).group(0)
    for key, value in {"Image": scene_files[1], **exp.heading()}.items():  # the text pages' heading table
        assert f">{key}</th><td style=\"padding:0\">{value}</td>" in heading


@pytest.mark.filterwarnings("ignore:Image #0 is 300x200")
def test_image_overlays_on_the_original_image(capsys, tmp_path, scene_files):
    wide = tmp_path / "wide.png"
    Image.open(scene_files[0]).resize((300, 200)).save(wide)
    code, _, _ = run(capsys, "--model", "vit", "--image", str(wide), "--on-original", "--out", str(tmp_path / "vit"))
    [exp] = saved(tmp_path / "vit", 1)
    drawn = np.asarray(Image.open(tmp_path / "vit" / "explanation_000.png"))
    assert code == 0 and drawn.shape[1] == 300  # the image as given, not the model's 64x64 view
    np.testing.assert_array_equal(drawn, np.asarray(exp.overlay(on="original", colour_bar=True)))
    code, _, _ = run(capsys, "--model", "clip", "--image", str(wide), "--text", "a red circle", "--on-original",
                     "--out", str(tmp_path / "clip"))
    [exp] = saved(tmp_path / "clip", 1)
    assert code == 0 and Image.open(tmp_path / "clip" / "explanation_000.png").width == 300


def test_strongest_earlier_token_when_every_value_is_zero():
    step = CaptionStep(token="cross", token_id=1, log_prob=0.0, heatmap=np.zeros((2, 2), np.float32),
                       text_scores=np.zeros(3, np.float32), text_tokens=["[CLS]", "red", "cross"])
    assert _strongest_context(step) == "strongest earlier token: none (all zero)"
    step.text_scores[1] = 0.02
    assert _strongest_context(step) == "strongest earlier token: red (+0.020)"


def test_open_clip_with_random_weights(capsys, tmp_path, scene_files):
    import open_clip

    name = "toolkit-cli-tiny-vit"
    open_clip.factory._MODEL_CONFIGS[name] = dict(
        embed_dim=16, vision_cfg=dict(image_size=32, patch_size=8, width=32, layers=2, head_width=8),
        text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=4, layers=2))
    try:
        code, printed, _ = run(capsys, "--model", name, "--source", "open_clip", "--random-weights",
                               "--image", scene_files[0], "--text", "a red circle", "--out", str(tmp_path))
    finally:
        del open_clip.factory._MODEL_CONFIGS[name]
    assert code == 0
    [exp] = saved(tmp_path, 1)
    assert exp.similarity is not None and f"similarity {exp.similarity:.3f}" in printed


@pytest.mark.parametrize("argv, message", [
    (["--model", "vilt", "--image", "{image}"], "needs --question"),
    (["--model", "vilt", "--question", "what colour is the cross?"], "--question goes with --image"),
    (["--model", "captioner", "--caption", "a red circle"], "--caption goes with --image"),
    (["--question", "what colour is it?", "--image", "{image}"], "--question is for visual question answering"),
    (["--model", "vit", "--image", "{image}", "--caption", "a cross"], "--caption is for captioning models"),
    (["--model", "clip", "--image", "{image}"], "needs --text"),
    (["--model", "clip", "--image", "{image}", "--question", "what?"], "--question does not apply to clip"),
    (["--model", "vilt", "--image", "{image}", "--text", "a red circle"], "--text does not apply to vilt"),
    (["--model", "vit", "--text", "a red circle"], "vit explains images, not texts"),
    (["--image", "{image}"], "explains texts, not images"),
    (["--model", "vit", "--image", "{image}", "--random-weights"], "built-in model with its own weights"),
    (["--model", "./no/such/model", "--text", "a"], "No folder at './no/such/model'"),
    (["--model", "vilt", "--image", "{image}", "--question", "what colour is the cross?", "--target", "purpel"],
     "Unknown answer 'purpel'"),
])
def test_bad_combinations_exit_2_with_a_message(argv, message, capsys, tmp_path, scene_files):
    argv = [scene_files[0] if item == "{image}" else item for item in argv]
    code, _, error = run(capsys, *argv, "--out", str(tmp_path))
    assert code == 2 and message in error and "Traceback" not in error
    assert not (tmp_path / "index.html").exists()
