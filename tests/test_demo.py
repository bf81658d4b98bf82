"""The demo as a service: launched with ``python -m toolkit demo`` and driven through ``gradio_client`` like any
remote user would, on every endpoint, with bad inputs, and under a concurrent load."""
from __future__ import annotations

import json
import random
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from demo_server import server  # noqa: E402, F401 (the launched demo, a module fixture)
from toolkit import Explainer, Explanation, zoo  # noqa: E402
from toolkit.demo import display  # noqa: E402
from toolkit.demo.config import DemoConfig  # noqa: E402
from toolkit.demo.scenes import EXAMPLE_SEEDS, largest_object_truth  # noqa: E402
from toolkit.evaluation.metrics import relevance_mass_accuracy  # noqa: E402
from toolkit.scenes import ANSWERS  # noqa: E402
from toolkit.zoo.common import scene_generator  # noqa: E402
from toolkit.zoo.scene_vit import CLASSES  # noqa: E402

CONFIG = DemoConfig()
TEXT, IMAGE, CLIP, VQA, CAPTIONER = (CONFIG.models(tab)[0].display
                                     for tab in ("text", "image", "image_text", "vqa", "captioning"))
LABELS = "positive: This is great, I loved it.\nnegative: This is terrible, I hated it."


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture
def client(server, downloads) -> Client:
    return Client(server.url, verbose=False, download_files=str(downloads))


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> list[tuple]:
    """(scene, PNG path) of the demo's example scenes: the server knows their ground truth."""
    folder = tmp_path_factory.mktemp("scenes")
    generator = scene_generator()
    result = []
    for seed in EXAMPLE_SEEDS:
        scene = generator.generate(seed)
        path = folder / f"scene-{seed}.png"
        scene.image.save(path)
        result.append((scene, str(path)))
    return result


def pixels(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def assert_informative(path: str, side: int = 256) -> np.ndarray:
    """The picture of a 64x64 scene enlarged to ``side`` (a colour scale may be drawn below it), not constant."""
    image = pixels(path)
    assert image.shape[1] == side and image.shape[0] >= side and image.shape[2] == 3
    assert np.ptp(image[:side]) > 50, "the picture is (nearly) constant"
    return image


def by_suffix(files: list[str], suffix: str) -> list[str]:
    """The downloads whose names end with ``suffix`` (e.g. "-generic.npz"), by name."""
    return sorted((f for f in files if f.endswith(suffix)), key=lambda f: Path(f).name)


# --- every endpoint ---------------------------------------------------------------------------------
def test_text_classification(client):
    label, page_a, page_b, table, files = client.predict(
        TEXT, "a gripping, beautifully shot film", LABELS, "generic", "rollout", 0, "(predicted)",
        api_name="/explain_text")
    assert label["label"] == "positive"
    confidences = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert set(confidences) == {"positive", "negative"} and sum(confidences.values()) == pytest.approx(1, abs=1e-4)
    for word in ("gripping", "beautifully", "shot", "film"):
        assert f">{word}</span>" in page_a
    assert "rollout" in page_b and "generic" not in page_b
    assert table["headers"] == ["word", "generic", "rollout"]
    saved = Explanation.load(by_suffix(files, "-generic.npz")[0])
    assert saved.words == ["a", "gripping", ",", "beautifully", "shot", "film"]
    assert np.ptp(saved.word_scores) > 0
    shown = {row[0]: row[1] for row in table["data"]}
    for word, score in zip(saved.words, saved.word_scores):  # the table shows the saved, signed scores
        assert shown[word] == pytest.approx(float(score), abs=1e-5)
    data = json.loads(Path(by_suffix(files, "-rollout.json")[0]).read_text())
    assert data["method"] == "rollout" and "image" not in data and data["words"] == saved.words


def test_image_classification(client, scenes):
    scene, path = scenes[0]
    label, overlay_a, overlay_b, raw, report, files = client.predict(
        IMAGE, handle_file(path), "transformer_attribution", "generic", 0, "(predicted)", api_name="/explain_image")
    model, processor = zoo.load("vit")
    expected = Explainer(model, processor).predict(scene.image, top_k=5)
    assert label["label"] == expected[0][0]
    assert {c["label"]: c["confidence"] for c in label["confidences"]} == pytest.approx(dict(expected), abs=1e-4)
    assert {c["label"] for c in label["confidences"]} == set(CLASSES)
    first, second = assert_informative(overlay_a), assert_informative(overlay_b)
    assert not np.array_equal(first, second)
    blocks = assert_informative(raw)[:256].reshape(8, 32, 8, 32, 3)  # the raw map: one flat block per patch
    assert (blocks == blocks[:, :1, :, :1]).all()

    npz = {Explanation.load(f).method: Explanation.load(f) for f in by_suffix(files, ".npz")}
    assert set(npz) == {"transformer_attribution", "generic"} and len(by_suffix(files, ".png")) == 2
    exp = npz["transformer_attribution"]
    assert exp.heatmap.shape == (8, 8) and np.ptp(exp.heatmap) > 0
    truth = largest_object_truth(scene)
    # The page shows the library's overlay of the saved explanation, enlarged, with the ground truth outlined.
    assert np.array_equal(first, np.asarray(display.overlay_image(exp, truth)))
    assert f"Ground truth: {truth.what}" in report
    assert f"{relevance_mass_accuracy(exp.heatmap, truth.mask):.0%} of the positive relevance" in report


def test_image_text(client, scenes):
    scene, path = scenes[1]
    captions = list(scene.captions[:2]) + ["a purple cross left of a yellow square"]
    assert "purple cross" not in " ".join(scene.captions)
    label, table, gallery_a, gallery_b, page_a, page_b, files = client.predict(
        CLIP, handle_file(path), "\n".join(captions), "generic", "rollout", 0, api_name="/explain_image_text")
    confidences = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert set(confidences) == set(captions) and sum(confidences.values()) == pytest.approx(1, abs=1e-4)
    rows = table.splitlines()[2:]
    assert len(rows) == 3
    assert "%" in rows[0] and "%" in rows[1] and rows[2].count("—") == 2  # no ground truth for a foil
    assert len(gallery_a) == len(gallery_b) == 3
    for item, caption in zip(gallery_a, captions):
        assert_informative(item["image"])
        assert caption in item["caption"]
    assert all(caption in page_a for caption in captions) and "rollout" in page_b
    assert len(by_suffix(files, ".npz")) == 6


def test_visual_question_answering(client, scenes):
    scene, path = scenes[2]
    question = scene.questions[0]
    label, overlay_a, overlay_b, page_a, page_b, report, files = client.predict(
        VQA, handle_file(path), question.text, "generic", "raw_attention", 0, "(predicted)", api_name="/explain_vqa")
    top = [c["label"] for c in label["confidences"]]
    assert len(top) == 5 and set(top) <= set(ANSWERS)
    assert_informative(overlay_a)
    assert_informative(overlay_b)
    assert all(word in page_a for word in question.text.rstrip("?").split())
    assert "Ground truth: the objects the answer depends on" in report
    # A chosen answer is the one explained.
    _, _, _, page, _, _, files = client.predict(VQA, handle_file(path), question.text, "generic", "(none)", 0,
                                                question.answer, api_name="/explain_vqa")
    assert f">{question.answer}</td>" in page  # the page's heading names the explained answer
    assert Explanation.load(by_suffix(files, ".npz")[0]).answer == question.answer


def test_captioning(client, scenes):
    scene, path = scenes[3]
    header, gallery_a, gallery_b, slider, step_a, step_b, page_a, page_b, report, files = client.predict(
        CAPTIONER, handle_file(path), "Generate a caption", "", "generic", "attention_gradcam",
        api_name="/explain_caption")
    saved = Explanation.load(by_suffix(files, "-generic.npz")[0])
    tokens = [step.token for step in saved.steps]
    assert saved.caption in header and len(gallery_a) == len(gallery_b) == len(tokens)
    assert [item["caption"].split(" · ")[1] for item in gallery_a] == tokens
    assert slider["maximum"] == max(len(tokens) - 1, 1)
    assert_informative(step_a)
    assert "[CLS]" in page_a  # the first token rests on the start token alone

    # A given caption, teacher-forced; step 1 ("red" in "a red circle ...") is grounded in its object.
    caption = scene.captions[0]
    header, *_ = client.predict(CAPTIONER, handle_file(path), "Explain my caption", caption, "generic", "(none)",
                                api_name="/explain_caption")
    assert caption in header and "Given caption" in header
    step_a, step_b, page_a, page_b, report = client.predict(1, api_name="/caption_step")
    assert_informative(step_a)
    assert step_b is None
    assert f"“{caption.split()[1]}” rests on" in page_a
    assert "Ground truth: the object" in report


def test_attention_views(client, scenes):
    for view, title in (("head", "Head view"), ("model", "Model view"), ("neuron", "Neuron view")):
        page = client.predict(f"{TEXT} — text", view, "the cat sat on the mat", "it was tired", None,
                              api_name="/attention_view")
        assert page.startswith("<iframe") and f"&lt;title&gt;{title}&lt;/title&gt;" in page
    page = client.predict(f"{IMAGE} — image", "image", "", "", handle_file(scenes[0][1]), api_name="/attention_view")
    assert "&lt;title&gt;Image attention view&lt;/title&gt;" in page


def test_new_scenes_are_recognised(client):
    image = client.predict(api_name="/new_scene_image")
    assert pixels(image).shape == (64, 64, 3)
    *_, report, _ = client.predict(IMAGE, handle_file(image), "generic", "(none)", 0, "(predicted)",
                                   api_name="/explain_image")
    assert "Ground truth: the largest object" in report
    image, captions = client.predict(api_name="/new_scene_image_text")
    assert pixels(image).shape == (64, 64, 3) and len(captions.splitlines()) in (2, 3)
    image, question, questions = client.predict(api_name="/new_scene_vqa")
    assert question in [choice[0] for choice in questions["choices"]]
    image, caption = client.predict(api_name="/new_scene_captioning")
    assert len(caption.split()) >= 7


# --- bad inputs -------------------------------------------------------------------------------------
BAD_INPUTS = {
    "no image": ("/explain_image", lambda files: (IMAGE, None, "generic", "(none)", 0, "(predicted)"),
                 "Add an image first"),
    "empty question": ("/explain_vqa", lambda files: (VQA, handle_file(files["scene"]), "  ", "generic", "(none)", 0,
                                                      "(predicted)"), "Enter a question"),
    "not an image": ("/explain_image", lambda files: (IMAGE, handle_file(files["text"]), "generic", "(none)", 0,
                                                      "(predicted)"), "is not a readable image"),
    "unknown target": ("/explain_text", lambda files: (TEXT, "fine", LABELS, "generic", "(none)", 0, "neutral"),
                       "neutral"),
    "method that does not apply": ("/explain_caption", lambda files: (CAPTIONER, handle_file(files["scene"]),
                                                                      "Explain my caption", "a red circle", "lrp",
                                                                      "(none)"), "cannot explain vision-encoder"),
    "unknown method": ("/explain_image", lambda files: (IMAGE, handle_file(files["scene"]), "gradcam++", "(none)", 0,
                                                        "(predicted)"), "Unknown method"),
    "no labels": ("/explain_text", lambda files: (TEXT, "fine", "  \n", "generic", "(none)", 0, "(predicted)"),
                  "at least one label"),
    "unknown answer": ("/explain_vqa", lambda files: (VQA, handle_file(files["scene"]), "what colour is it?",
                                                      "generic", "(none)", 0, "banana"), "banana"),
    "too many captions": ("/explain_image_text", lambda files: (CLIP, handle_file(files["scene"]),
                                                                "\n".join(f"a red circle {i}" for i in range(9)),
                                                                "generic", "(none)", 0), "up to 8"),
    "empty caption": ("/explain_caption", lambda files: (CAPTIONER, handle_file(files["scene"]), "Explain my caption",
                                                         "", "generic", "(none)"), "Enter a caption"),
    "view for another model": ("/attention_view", lambda files: (f"{TEXT} — text", "image", "a text", "", None),
                               "does not apply"),
    "unknown model": ("/explain_text", lambda files: ("gpt-17", "fine", LABELS, "generic", "(none)", 0,
                                                      "(predicted)"), "gpt-17"),
}


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, scenes) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("bad")
    (folder / "notes.jpg").write_text("this is a text file renamed .jpg")
    return {"text": str(folder / "notes.jpg"), "scene": scenes[0][1]}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_a_readable_message(client, server, bad_files, case):
    endpoint, arguments, expected = BAD_INPUTS[case]
    with pytest.raises((AppError, ValueError)) as caught:
        client.predict(*arguments(bad_files), api_name=endpoint)
    message = str(caught.value)
    assert expected in message, message
    assert "Traceback" not in message and "upstream Gradio app has raised an exception" not in message
    assert server.answers()


def test_large_inputs_are_served_with_a_warning(client, server, tmp_path):
    """A 40-megapixel photo is downscaled and a 10,000-word text truncated, each with a warning (relayed to the
    user's page as a toast, and logged)."""
    height, width = 5000, 8000
    ys, xs = np.mgrid[0:height, 0:width]
    photo = np.stack([xs * 255 // width, ys * 255 // height, np.full_like(xs, 90)], axis=-1).astype(np.uint8)
    photo[1500:3500, 2500:5500] = (220, 40, 40)
    Image.fromarray(photo).save(tmp_path / "photo.jpg", quality=85)
    label, overlay, *_ = client.predict(IMAGE, handle_file(str(tmp_path / "photo.jpg")), "generic", "(none)", 0,
                                        "(predicted)", api_name="/explain_image")
    assert {c["label"] for c in label["confidences"]} == set(CLASSES)
    assert_informative(overlay)
    text = " ".join(random.Random(0).choice(["good", "film", "bad", "plot", "and", "the"]) for _ in range(10_000))
    label, page, *_ = client.predict(TEXT, text, LABELS, "generic", "(none)", 0, "(predicted)",
                                     api_name="/explain_text")
    assert label["label"] in ("positive", "negative") and "<span" in page
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "explain_text warned" not in server.log_text():
        time.sleep(0.2)
    log = server.log_text()
    assert "explain_image warned: Image #0 is 8000x5000; downscaled" in log
    assert "explain_text warned:" in log and "tokens long but the model reads at most 512" in log


# --- concurrent load --------------------------------------------------------------------------------
def _requests(scenes) -> list[tuple[str, tuple]]:
    """Eight distinct requests over every tab, on different inputs of the same models."""
    (s0, p0), (s1, p1), (s2, p2), (s3, p3), _ = scenes
    return [
        ("/explain_text", (TEXT, "a gripping, beautifully shot film", LABELS, "generic", "(none)", 0, "(predicted)")),
        ("/explain_text", (TEXT, "a dull, tedious mess", LABELS, "generic", "(none)", 0, "(predicted)")),
        ("/explain_image", (IMAGE, handle_file(p0), "transformer_attribution", "(none)", 0, "(predicted)")),
        ("/explain_image", (IMAGE, handle_file(p1), "transformer_attribution", "(none)", 0, "(predicted)")),
        ("/explain_image", (IMAGE, handle_file(p2), "transformer_attribution", "(none)", 0, "(predicted)")),
        ("/explain_image_text", (CLIP, handle_file(p1), "\n".join(s1.captions[:2]), "generic", "(none)", 0)),
        ("/explain_vqa", (VQA, handle_file(p2), s2.questions[0].text, "generic", "(none)", 0, "(predicted)")),
        ("/explain_caption", (CAPTIONER, handle_file(p3), "Generate a caption", "", "generic", "(none)")),
    ]


def _digest(endpoint: str, result: tuple) -> tuple:
    """What must not change between a request served alone and the same request served under load: the
    prediction (or caption) and every map shown."""
    if endpoint == "/explain_text":
        return result[0]["label"], result[1]
    if endpoint == "/explain_image":
        return result[0]["label"], pixels(result[1])
    if endpoint == "/explain_image_text":
        return result[0]["label"], np.stack([pixels(item["image"]) for item in result[2]])
    if endpoint == "/explain_vqa":
        return result[0]["label"], pixels(result[1])
    return result[0], np.stack([pixels(item["image"]) for item in result[1]])


def _same(first: tuple, second: tuple) -> bool:
    """Equal, maps up to a rounding step: ViLT draws its patch order at random (torch.multinomial), which
    changes the order of float sums, never the map."""
    return all(np.abs(a.astype(int) - b.astype(int)).max() <= 2 if isinstance(a, np.ndarray) else a == b
               for a, b in zip(first, second))


def test_concurrent_load(server, downloads, scenes):
    """32 requests from 8 clients at once across the tabs: every answer equals the one the same request got
    alone (requests on one model queue for it; a capture leaking between them would change the maps), and the
    server answers afterwards."""
    requests = _requests(scenes)
    alone = Client(server.url, verbose=False, download_files=str(downloads))
    expected = [_digest(endpoint, alone.predict(*arguments, api_name=endpoint)) for endpoint, arguments in requests]
    plan = [index for index in range(len(requests)) for _ in range(4)]
    random.Random(1).shuffle(plan)
    clients, per_client = 8, len(plan) // 8
    latencies, failures = [], []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def user(number: int) -> None:
        own = Client(server.url, verbose=False, download_files=str(downloads))
        barrier.wait()
        for index in plan[number * per_client:(number + 1) * per_client]:
            endpoint, arguments = requests[index]
            start = time.perf_counter()
            try:
                result = own.predict(*arguments, api_name=endpoint)
                got = _digest(endpoint, result)
                same = _same(got, expected[index])
                result = [np.abs(a.astype(int) - b.astype(int)).max() if isinstance(a, np.ndarray) else a
                          for a, b in zip(got, expected[index])]
            except Exception as error:  # recorded, then asserted on below
                same, result = False, error
            with lock:
                latencies.append(time.perf_counter() - start)
                if not same:
                    failures.append((endpoint, index, repr(result)[:300]))

    started = time.perf_counter()
    threads = [threading.Thread(target=user, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    print(f"\nload test: {len(latencies)} requests from {clients} clients in {elapsed:.1f} s "
          f"({len(latencies) / elapsed:.2f} requests/s); latency median {statistics.median(ordered):.2f} s, "
          f"90th percentile {ordered[int(0.9 * len(ordered)) - 1]:.2f} s, max {ordered[-1]:.2f} s")
    assert len(latencies) == len(plan) == 32
    assert not failures, failures
    assert server.answers()
    endpoint, arguments = requests[0]
    assert _same(_digest(endpoint, alone.predict(*arguments, api_name=endpoint)), expected[0])
