"""Every built-in image-text model and method gives the numbers it gave before issue 11's one engine.

``tests/data/same_numbers_multimodal.json`` holds what the code of commit c0be862 (one Python engine per image-text
adapter) computed on the built-in zoo models: for CLIP, ViLT and the captioner, every method that applied then,
on two scenes. The per-pair reference tests (test_mm_*.py) check the equations; this file checks that nothing
moved. Regenerate it only for a change meant to move the numbers: ``python tests/test_same_numbers_multimodal.py
--record``.
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

RECORD = Path(__file__).parent / "data" / "same_numbers_multimodal.json"
METHODS = ["raw_attention", "rollout", "attention_gradcam", "generic"]


def _scenes():
    from toolkit.scenes import SceneGenerator

    return [scene.image for scene in SceneGenerator().generate_scenes(2, seed=5)]


def _calls() -> dict:
    """name -> (zoo model, keyword inputs)."""
    images = _scenes()
    return {"clip": ("clip", dict(image=images, text=["a red circle", "a blue square"])),
            "vilt": ("vilt", dict(image=images, question=["what colour is the circle?", "how many shapes?"])),
            "captioner": ("captioner", dict(image=images, max_new_tokens=6))}


def _numbers(values) -> list:
    return [float(f"{value:.8g}") for value in np.asarray(values, dtype=np.float64).ravel()]


def compute(zoo_name: str, inputs: dict) -> dict:
    from toolkit import Explainer
    from toolkit.zoo import load

    explainer = Explainer(*load(zoo_name))
    result = {}
    for method in METHODS:
        if explainer.method_refusal(method) is not None:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            explanations = explainer.explain(method=method, **inputs)
        result[method] = [{"label": e.label, "probability": _numbers([e.probability]), "scores": _numbers(e.scores),
                           "heatmap": _numbers(e.heatmap),
                           "steps": [_numbers(step.text_scores) for step in (e.steps or [])]}
                          for e in explanations]
    return result


def record() -> None:
    RECORD.write_text(json.dumps({name: compute(*call) for name, call in _calls().items()},
                                 separators=(",", ":")) + "\n")


@pytest.mark.parametrize("name", sorted(json.loads(RECORD.read_text())) if RECORD.exists() else [])
def test_same_numbers_as_before(name):
    recorded = json.loads(RECORD.read_text())[name]
    now = compute(*_calls()[name])
    for method, before in recorded.items():
        assert method in now, f"{name}: {method} no longer applies"
        for i, (a, b) in enumerate(zip(now[method], before)):
            assert a["label"] == b["label"], f"{name}[{i}] {method}: label"
            for key in ("probability", "scores", "heatmap"):
                expected = np.asarray(b[key])
                atol = 1e-5 * max(float(np.abs(expected).max(initial=0.0)), 1e-6)
                np.testing.assert_allclose(a[key], expected, rtol=1e-4, atol=atol, err_msg=f"{name}[{i}] {method} {key}")
            for s, (x, y) in enumerate(zip(a["steps"], b["steps"])):
                np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6, err_msg=f"{name}[{i}] {method} step {s}")


if __name__ == "__main__" and "--record" in sys.argv:
    torch.set_num_threads(1)
    record()
    print(f"wrote {RECORD} ({RECORD.stat().st_size} bytes)")
