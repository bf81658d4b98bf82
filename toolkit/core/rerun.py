"""The model run again from other inputs of its first layer, for methods that integrate along a path (integrated
gradients): everything before the first layer (embeddings, patch embedding) is replaced by the given tensor."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from .capture import with_first_input


def rerun_from(block: nn.Module, run: Callable[[int], torch.Tensor], batch_size: int
               ) -> Callable[[torch.Tensor], torch.Tensor]:
    """f(x): ``run(R)`` (the model's outputs for the batch repeated R times, (R*B, C)) with ``x`` (R*B, N, D) in place
    of the input of ``block``'s first call. The hook lives for one call of f only."""

    def rerun(x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] % batch_size:
            raise ValueError(f"{x.shape[0]} first-layer inputs for a batch of {batch_size}")
        placed = []

        def pre_hook(module, args, kwargs):
            if placed:  # a shared layer (ALBERT) runs again at later depths: only its first call is the input
                return None
            placed.append(True)
            return with_first_input(args, kwargs, lambda value: x.to(value.dtype))

        handle = block.register_forward_pre_hook(pre_hook, with_kwargs=True)
        try:
            return run(x.shape[0] // batch_size)
        finally:
            handle.remove()

    return rerun
