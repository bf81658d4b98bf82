"""The exported Hugging Face Space runs on its own: ``python app.py`` from its folder serves the demo over HTTP."""
from __future__ import annotations

import subprocess
import urllib.request
import sys

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

from demo_server import start  # noqa: E402
from toolkit.demo import export_space, parse_config  # noqa: E402
from toolkit.zoo.common import scene_generator  # noqa: E402


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export") / "space"
    config = parse_config({"title": "Exported space under test", "image_text": [], "vqa": [], "captioning": []})
    export_space(folder, config)
    server = start([sys.executable, "app.py"], folder.parent / "space.log", cwd=folder)
    yield folder, server
    server.stop()


def test_exported_space_imports_its_own_toolkit(space):
    folder, _ = space
    found = subprocess.run([sys.executable, "-c", "import toolkit; print(toolkit.__file__)"], cwd=folder,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert found.startswith(str(folder.resolve()))


def test_exported_space_serves_its_config_over_http(space, tmp_path):
    folder, server = space
    with urllib.request.urlopen(server.url, timeout=10) as response:
        assert "Exported space under test" in response.read().decode()
    client = Client(server.url, verbose=False, download_files=str(tmp_path))
    endpoints = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/explain_text", "/explain_image", "/attention_view"} <= endpoints
    assert not {"/explain_vqa", "/explain_caption", "/explain_image_text"} & endpoints  # tabs emptied in demo.yaml
    scene = scene_generator().generate(3)
    scene.image.save(tmp_path / "scene.png")
    label, overlay, *_ = client.predict("Scene ViT (built-in)", handle_file(str(tmp_path / "scene.png")), "generic",
                                        "(none)", 0, "(predicted)", api_name="/explain_image")
    assert label["label"] in ("circle", "square", "triangle", "cross")
    picture = np.asarray(Image.open(overlay).convert("RGB"))
    assert picture.shape[1] == 256 and np.ptp(picture[:256]) > 50  # the enlarged scene (its colour bar below)
    label, page, *_ = client.predict("MiniLM zero-shot (built-in, editable labels)", "what a wonderful day",
                                     "happy: a happy text\nsad: a sad text", "generic", "(none)", 0, "(predicted)",
                                     api_name="/explain_text")
    assert label["label"] == "happy" and ">wonderful</span>" in page
