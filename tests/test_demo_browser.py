"""The demo (launched by demos/app.py) in a real headless Chromium: the page loads, an image is uploaded, Explain is clicked in every tab,
and the heatmaps and highlighted tokens appear; a bad input shows a message and the page keeps working.
Screenshots of every tab go to $DEMO_SCREENSHOTS (or the test's temporary folder) to be looked at."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from demo_server import app_server  # noqa: F401 (demos/app.py launched, a module fixture)
from toolkit.zoo.common import scene_generator

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
TIMEOUT = 60_000  # ms; explanations on a busy 2-core machine


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("DEMO_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def page(app_server):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(app_server.url, wait_until="load")
        page.get_by_role("button", name="Explain").first.wait_for(timeout=TIMEOUT)
        page.errors = errors
        yield page
        browser.close()


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()
    button = "Show attention" if name == "Attention views" else "Explain"
    page.locator("button:visible", has_text=button).first.wait_for(timeout=TIMEOUT)


def click(page, text: str) -> None:
    page.locator("button:visible", has_text=text).first.click()


def image_width(page, selector: str) -> int:
    image = page.locator(f"{selector} img").first
    image.wait_for(state="visible", timeout=TIMEOUT)
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=image.element_handle(),
                           timeout=TIMEOUT)
    return image.evaluate("(img) => img.naturalWidth")


def highlighted(page, selector: str) -> list[str]:
    page.locator(f"{selector} span[title]").first.wait_for(timeout=TIMEOUT)
    return page.locator(f"{selector} span[title]").all_inner_texts()


def test_page_looks_like_a_product(page, shots):
    assert page.title() == "Transformer explainability"
    for tab in ("Text classification", "Image classification", "Image–text (CLIP)", "Visual question answering",
                "Captioning", "Attention views"):
        assert page.get_by_role("tab", name=tab).is_visible()
    assert page.get_by_text("See what a transformer's decision rests on").is_visible()
    page.screenshot(path=shots / "0-start.png", full_page=True)
    assert not page.errors


def test_text_tab(page, shots):
    open_tab(page, "Text classification")
    page.locator("#tk-text-a").wait_for(state="attached")
    click(page, "Explain")
    words = highlighted(page, "#tk-text-a")
    assert {"gripping", "beautifully", "film"} <= set(words)
    assert page.get_by_text("positive").first.is_visible()
    page.screenshot(path=shots / "1-text.png", full_page=True)


def test_image_tab_with_an_uploaded_image(page, shots, tmp_path):
    open_tab(page, "Image classification")
    scene = scene_generator().generate(7)
    scene.image.save(tmp_path / "upload.png")
    page.locator("#tk-image-input input[type=file]").set_input_files(str(tmp_path / "upload.png"))
    page.locator("#tk-image-input img").first.wait_for(state="visible", timeout=TIMEOUT)
    click(page, "Explain")
    assert image_width(page, "#tk-image-a") == 256
    page.get_by_text("Ground truth: the largest object").wait_for(timeout=TIMEOUT)
    page.screenshot(path=shots / "2-image.png", full_page=True)


def draw_scene(page, tab: str, key: str) -> None:
    """Open ``tab`` and fill its image (``#tk-{key}-input``) with a New scene."""
    open_tab(page, tab)
    click(page, "New scene")
    page.locator(f"#tk-{key}-input img").first.wait_for(state="visible", timeout=TIMEOUT)


def test_image_text_tab(page, shots):
    draw_scene(page, "Image–text (CLIP)", "image_text")
    click(page, "Explain")
    assert image_width(page, "#tk-image_text-gallery-a") == 256
    assert len(highlighted(page, "#tk-image_text-a")) >= 5
    page.screenshot(path=shots / "3-image-text.png", full_page=True)


def test_vqa_tab_with_a_comparison(page, shots):
    draw_scene(page, "Visual question answering", "vqa")
    compare = page.get_by_label("Compare with").last
    compare.click()
    page.get_by_role("option", name="raw_attention").click()
    click(page, "Explain")
    assert image_width(page, "#tk-vqa-image-a") == 256 and image_width(page, "#tk-vqa-image-b") == 256
    assert highlighted(page, "#tk-vqa-a") and highlighted(page, "#tk-vqa-b")
    page.get_by_text("Ground truth: the objects the answer depends on").wait_for(timeout=TIMEOUT)
    page.screenshot(path=shots / "4-vqa.png", full_page=True)


def test_captioning_tab(page, shots):
    draw_scene(page, "Captioning", "captioning")
    click(page, "Explain")
    assert image_width(page, "#tk-captioning-gallery-a") == 256
    assert page.locator("#tk-captioning-gallery-a img").count() >= 3
    assert "[CLS]" in highlighted(page, "#tk-captioning-step-a")
    page.screenshot(path=shots / "5-captioning.png", full_page=True)


def test_attention_tab(page, shots):
    open_tab(page, "Attention views")
    click(page, "Show attention")
    frame = page.locator("#tk-attention-view iframe")
    frame.wait_for(timeout=TIMEOUT)
    inner = frame.content_frame
    inner.get_by_text("Layer").first.wait_for(timeout=TIMEOUT)
    assert inner.get_by_text("tired").count() >= 1
    page.screenshot(path=shots / "6-attention.png", full_page=True)


def test_a_bad_input_shows_a_message_and_the_page_keeps_working(page, shots):
    open_tab(page, "Image classification")
    page.locator("#tk-image-input button[aria-label='Remove Image']").first.click()
    click(page, "Explain")
    page.get_by_text("Add an image first").first.wait_for(timeout=TIMEOUT)
    page.screenshot(path=shots / "7-error.png", full_page=False)
    click(page, "New scene")
    page.locator("#tk-image-input img").first.wait_for(state="visible", timeout=TIMEOUT)
    click(page, "Explain")
    page.get_by_text("Ground truth: the largest object").first.wait_for(timeout=TIMEOUT)
    # A library warning reaches the page: a text longer than the model reads is cut, and says so.
    open_tab(page, "Text classification")
    page.get_by_label("Text").first.fill("a good film " * 300)
    click(page, "Explain")
    page.get_by_text("tokens long but the model reads at most").first.wait_for(timeout=TIMEOUT)
    assert not page.errors
