"""Time and memory of explanations against the floor: one forward and one backward of the same stock model.

The floor runs the stock model on the same batch, with the eager attention the methods need, every parameter's
``requires_grad`` off and the gradient started at the input of each stream's first layer (where the engine starts
its own): the least any gradient explanation has to compute. Timings interleave the floor with the methods, round
by round, so that a machine shared with other work slows both alike; each method's ratio is the median over rounds
of its time over the same round's floor.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` above what was allocated before the call; on the CPU,
the peak resident set size above the resident size before the call, in a fresh process per measurement, after a
warm-up call, with glibc's mmap threshold fixed so that freed tensors go back to the system (an allocator that
holds freed memory would hide the measured call's peak).
"""
from __future__ import annotations

import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch

from ..core.capture import Recorder
from ..core.engine import frozen_parameters
from ..core.explicit_attention import explicit_attention
from .instances import Instance

FLOOR = "floor"


def floor_pass(instance: Instance) -> None:
    """One forward and one backward of the stock model on the instance's batch, no parameter gradients."""
    model = instance.model
    with torch.inference_mode(False), explicit_attention(model), frozen_parameters(model), Recorder() as rec:
        for block in instance.blocks:
            rec.start_graph_at(block)
        instance.objective().float().sum().backward()


def fused_forward(instance: Instance) -> Callable[[torch.Tensor], torch.Tensor]:
    """The instance's scorer under no_grad, with the model's own (fused) attention."""
    def predict(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return instance.predict(batch)
    return predict


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timings:
    """Seconds per round of each run: ``wall`` clock, and ``cpu``, this process's CPU time, which other work on a
    shared machine moves far less (with one thread it is the wall time of a machine to itself; on CUDA it leaves the
    device's work out and is not reported)."""

    wall: dict[str, list[float]]
    cpu: dict[str, list[float]]


def timed(run: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(wall, process CPU) seconds of ``run()``."""
    synchronize(device)
    start, start_cpu = time.perf_counter(), time.process_time()
    run()
    synchronize(device)
    return time.perf_counter() - start, time.process_time() - start_cpu


def interleaved(runs: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> Timings:
    """Seconds per run of each of ``runs`` (the first is the reference, timed at the start of every round), after a
    warm-up call of each; the order of the others turns from round to round."""
    names = list(runs)
    reference, others = names[0], names[1:]
    for run in runs.values():
        run()
    times = Timings({name: [] for name in names}, {name: [] for name in names})
    for round_index in range(repeats):
        shift = round_index % max(1, len(others))
        for name in [reference] + others[shift:] + others[:shift]:
            wall, cpu = timed(runs[name], device)
            times.wall[name].append(wall)
            times.cpu[name].append(cpu)
    return times


def median_ratio(times: list[float], reference: list[float]) -> float:
    """The median over rounds of a run's time over the same round's reference time."""
    return statistics.median(t / r for t, r in zip(times, reference))


# --- peak memory --------------------------------------------------------------------------------------------
def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak resident size of this process to its current one (Linux 4.0+)."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        return True
    except OSError:
        return False


def cpu_peak_bytes(run: Callable[[], object]) -> int:
    """Peak resident memory of ``run()`` above the resident memory before it, in bytes (this process)."""
    gc.collect()
    before = _status_kib("VmRSS")
    if before is not None and _reset_peak_rss():
        run()
        return max(0, (_status_kib("VmHWM") or before) - before) * 1024
    before_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    current = before if before is not None else before_peak
    run()
    # without a reset, a peak reached before the call (while building the model) hides a lower one
    return max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - max(current, 0)) * 1024


def cuda_peak_bytes(run: Callable[[], object], device: torch.device) -> int:
    gc.collect()
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    run()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def peak_in_fresh_process(model: str, batch: int, what: str, device: str, dtype: str, threads: int) -> int:
    """Peak bytes of one call of ``what`` (a method, or :data:`FLOOR`) on a fresh build of the instance, measured
    in a child process of its own."""
    request = json.dumps(dict(model=model, batch=batch, what=what, device=device, dtype=dtype, threads=threads))
    done = subprocess.run([sys.executable, "-m", "toolkit.bench.memory", request], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore", "MALLOC_MMAP_THRESHOLD_": "65536"})
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"the memory process exited with {done.returncode}")
    return int(json.loads(done.stdout.strip().splitlines()[-1])["peak_bytes"])
