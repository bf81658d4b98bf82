"""Child process of the bench: the peak memory of one call on a fresh build of one instance.

    python -m toolkit.bench.memory '{"model": ..., "batch": ..., "what": method or "floor", "device": ...,
                                     "dtype": ..., "threads": ...}'

prints ``{"peak_bytes": ...}`` as its last line. The call runs twice and the second is measured: the first loads
what Python imports lazily and what torch initialises once. The parent starts this process with glibc's mmap
threshold fixed, so that tensors are given back to the system when freed and the warm-up leaves no cache that would
hide the measured call's peak.
"""
from __future__ import annotations

import json
import sys
import warnings

import torch

from .instances import build
from .measure import FLOOR, cpu_peak_bytes, cuda_peak_bytes, floor_pass


def main(request: dict) -> int:
    torch.set_num_threads(request["threads"])
    device, dtype = torch.device(request["device"]), getattr(torch, request["dtype"])
    instance = build(request["model"], request["batch"], device, dtype)
    what = request["what"]
    run = (lambda: floor_pass(instance)) if what == FLOOR else (lambda: instance.explain(what))
    run()
    peak = cuda_peak_bytes(run, device) if device.type == "cuda" else cpu_peak_bytes(run)
    print(json.dumps({"peak_bytes": peak}))
    return 0


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    sys.exit(main(json.loads(sys.argv[1])))
