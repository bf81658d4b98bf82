"""On CUDA, in the same precision, every method gives the explanations it gives on the CPU (runs only where CUDA is
available). The bench's tiny instances are built from the same seed on both devices, so weights and inputs match."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from toolkit.bench.instances import build

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _maps(explanations) -> list[np.ndarray]:
    """Every relevance an explanation carries: token scores, the heatmap, and each caption step's."""
    maps = []
    for explanation in explanations:
        maps.append(np.asarray(explanation.scores, dtype=np.float64))
        if explanation.heatmap is not None:
            maps.append(np.asarray(explanation.heatmap, dtype=np.float64).ravel())
        for step in explanation.steps or []:
            maps.append(np.asarray(step.text_scores, dtype=np.float64))
    return maps


def _agree(cpu: np.ndarray, gpu: np.ndarray, what: str) -> None:
    assert cpu.shape == gpu.shape, what
    scale = max(np.abs(cpu).max(), 1e-12)
    if cpu.std() <= 1e-6 * scale or gpu.std() <= 1e-6 * scale:  # a constant map (e.g. no positive gradient)
        np.testing.assert_allclose(gpu, cpu, atol=1e-4 * scale, err_msg=what)
        return
    assert np.corrcoef(cpu, gpu)[0, 1] >= 0.999, what


@pytest.mark.parametrize("model", ["tiny-vit", "tiny-lm", "tiny-clip"])
def test_cuda_explanations_agree_with_the_cpu(model):
    on_cpu = build(model, 3, torch.device("cpu"), torch.float32)
    on_gpu = build(model, 3, torch.device("cuda"), torch.float32)
    assert next(on_gpu.model.parameters()).is_cuda
    methods = on_cpu.explainer.applicable_methods()
    assert methods == on_gpu.explainer.applicable_methods()
    for method in methods:
        cpu_maps, gpu_maps = _maps(on_cpu.explain(method)), _maps(on_gpu.explain(method))
        assert len(cpu_maps) == len(gpu_maps)
        for index, (cpu, gpu) in enumerate(zip(cpu_maps, gpu_maps)):
            _agree(cpu, gpu, f"{model} {method} map {index}")
