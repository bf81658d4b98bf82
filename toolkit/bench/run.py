"""``python -m toolkit bench``: every applicable method of every model and batch size, against the floor."""
from __future__ import annotations

import gc
import json
import platform
import statistics
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..devices import default_device
from ..errors import ConfigError, ToolkitWarning
from ..evaluation.metrics import DEFAULT_STEPS, perturbation_curve
from ..methods import list_methods
from .instances import MODELS, TINY, Instance, build
from .measure import (FLOOR, cuda_peak_bytes, floor_pass, fused_forward, interleaved, median_ratio,
                      peak_in_fresh_process)

DTYPES = ("float32", "bfloat16", "float16")
DEFAULT_MODELS = tuple(MODELS)


@dataclass
class BenchSettings:
    models: tuple[str, ...] = DEFAULT_MODELS
    methods: tuple[str, ...] | None = None  # None: every registered method
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    repeats: int = 3
    device: str = "auto"
    dtype: str = "float32"
    memory: bool = True
    evaluation: bool = True
    threads: int | None = None  # CPU threads (default: torch's)
    out: str | None = "bench.json"

    def checked(self) -> "BenchSettings":
        known = {**MODELS, **TINY}
        unknown = [m for m in self.models if m not in known]
        if unknown:
            raise ConfigError(f"Unknown models {unknown}; choose from {', '.join(MODELS)} (or {', '.join(TINY)} for "
                              "a quick check).")
        wrong = [m for m in self.methods or () if m not in list_methods()]
        if wrong:
            raise ConfigError(f"Unknown methods {wrong}; registered: {', '.join(list_methods())}.")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ConfigError(f"Batch sizes must be positive integers; got {list(self.batch_sizes)}.")
        if self.repeats < 1:
            raise ConfigError(f"repeats must be at least 1; got {self.repeats}.")
        if self.dtype not in DTYPES:
            raise ConfigError(f"Unknown dtype {self.dtype!r}; choose from {', '.join(DTYPES)}.")
        device = resolve_device(self.device)
        supported = supported_dtypes(device)
        if self.dtype not in supported:
            raise ConfigError(f"{self.dtype} is not supported on {device}; choose from {', '.join(supported)}.")
        return self


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when present, else the CPU."""
    if name == "auto":
        return default_device()
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"Unknown device {name!r}; use auto, cpu or cuda (cuda:N).") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but CUDA is not available here; use --device cpu or auto.")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"The bench runs on cpu or cuda; got {name!r}.")
    return device


def supported_dtypes(device: torch.device) -> tuple[str, ...]:
    """float32 everywhere; bfloat16 on the CPU and on GPUs that have it; float16 on CUDA only (CPU float16 matmuls
    are emulated and say nothing about speed)."""
    if device.type == "cpu":
        return ("float32", "bfloat16")
    return ("float32", "float16") + (("bfloat16",) if torch.cuda.is_bf16_supported() else ())


@dataclass
class Row:
    """One method (or the floor) of one model at one batch size; ``status`` measured, skipped (``reason`` says
    why it does not apply) or failed (``reason``: the error, e.g. out of memory)."""

    model: str
    batch: int
    method: str
    status: str = "measured"
    reason: str = ""
    seconds: list[float] = field(default_factory=list)
    seconds_median: float | None = None
    explanations_per_second: float | None = None
    ratio_to_floor: float | None = None
    cpu_seconds: list[float] | None = None  # process CPU time per round (CPU runs): steadier on a shared machine
    cpu_ratio_to_floor: float | None = None
    peak_bytes: int | None = None
    memory_ratio_to_floor: float | None = None


@dataclass
class EvaluationRow:
    """Perturbation curve of one input over ``steps`` steps (one batched call, no_grad, fused attention) against
    one forward of that input per step."""

    model: str
    steps: int
    seconds_median: float
    forward_seconds_median: float
    ratio_to_forward_per_step: float


@dataclass
class BenchReport:
    machine: dict
    settings: dict
    rows: list[Row]
    evaluation: list[EvaluationRow]

    def to_json(self) -> dict:
        return {"machine": self.machine, "settings": self.settings, "rows": [asdict(r) for r in self.rows],
                "evaluation": [asdict(r) for r in self.evaluation]}


def machine(device: torch.device, threads: int) -> dict:
    info = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
            "threads": threads, "processor": _cpu_name(), "cpu_count": _cpu_count()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_count() -> int | None:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _out_of_memory(error: BaseException) -> bool:
    return isinstance(error, (MemoryError, torch.OutOfMemoryError)) or "out of memory" in str(error).lower()


def run_bench(settings: BenchSettings, say=print) -> BenchReport:
    """Measure every requested model, batch size and applicable method; ``say`` reports progress."""
    settings.checked()
    device, dtype = resolve_device(settings.device), getattr(torch, settings.dtype)
    threads = settings.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    requested = list(settings.methods or list_methods())
    rows: list[Row] = []
    evaluation: list[EvaluationRow] = []
    for model_name in settings.models:
        for batch in sorted(settings.batch_sizes):
            say(f"{model_name}, batch {batch} on {device} ({settings.dtype})")
            try:
                instance = build(model_name, batch, device, dtype)
                with warnings.catch_warnings():  # random weights: maps without positive relevance are expected
                    warnings.simplefilter("ignore", ToolkitWarning)
                    batch_rows = measure_instance(instance, requested, settings, device, threads)
                if settings.evaluation and instance.predict is not None and not evaluation_done(evaluation, model_name):
                    evaluation.append(measure_evaluation(instance, settings.repeats, device))
            except Exception as error:  # noqa: BLE001 - one model's failure must not lose the others' figures
                if not _out_of_memory(error):
                    raise
                rows.append(Row(model_name, batch, FLOOR, "failed", f"out of memory: {error}"[:200]))
                say(f"  out of memory at batch {batch}: larger batches left out")
                break
            finally:
                instance = None
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            rows.extend(batch_rows)
            for row in batch_rows:
                say("  " + format_row(row))
    report = BenchReport(machine(device, threads), {**asdict(settings), "device": str(device)}, rows, evaluation)
    if settings.out:
        Path(settings.out).parent.mkdir(parents=True, exist_ok=True)
        Path(settings.out).write_text(json.dumps(report.to_json(), indent=1))
    return report


def evaluation_done(rows: list[EvaluationRow], model: str) -> bool:
    return any(row.model == model for row in rows)


def measure_instance(instance: Instance, requested: list[str], settings: BenchSettings, device: torch.device,
                     threads: int) -> list[Row]:
    """The floor and every applicable requested method, timed interleaved; their peaks; the skipped ones' reasons."""
    explainer = instance.explainer
    applicable = [m for m in requested if m in explainer.applicable_methods()]
    rows = [Row(instance.name, instance.batch, FLOOR)]
    rows += [Row(instance.name, instance.batch, m) for m in applicable]
    runs = {FLOOR: lambda: floor_pass(instance)}
    runs.update({m: (lambda m=m: instance.explain(m)) for m in applicable})
    times = interleaved(runs, settings.repeats, device)
    for row in rows:
        row.seconds = times.wall[row.method]
        row.seconds_median = statistics.median(row.seconds)
        row.explanations_per_second = instance.batch / row.seconds_median
        row.ratio_to_floor = median_ratio(row.seconds, times.wall[FLOOR])
        if device.type == "cpu":
            row.cpu_seconds = times.cpu[row.method]
            row.cpu_ratio_to_floor = median_ratio(row.cpu_seconds, times.cpu[FLOOR])
    if settings.memory:
        for row in rows:
            row.peak_bytes = (cuda_peak_bytes(runs[row.method], device) if device.type == "cuda" else
                              peak_in_fresh_process(instance.name, instance.batch, row.method, str(device),
                                                    settings.dtype, threads))
        for row in rows:
            row.memory_ratio_to_floor = row.peak_bytes / max(rows[0].peak_bytes, 1)
    skipped = [Row(instance.name, instance.batch, m, "skipped", explainer.method_refusal(m))
               for m in requested if m not in applicable]
    return rows + skipped


def measure_evaluation(instance: Instance, repeats: int, device: torch.device) -> EvaluationRow:
    """A perturbation curve of the instance's first input (random relevance: the cost does not depend on it)
    against one forward of that input, both under no_grad with the model's fused attention."""
    predict = fused_forward(instance)
    relevance = np.random.default_rng(0).random(instance.units)
    example = instance.example
    runs = {"forward": lambda: predict(example[None]),
            "curve": lambda: perturbation_curve(predict, example, relevance, baseline=instance.baseline)}
    times = interleaved(runs, repeats, device).wall
    steps = len(DEFAULT_STEPS)
    return EvaluationRow(instance.name, steps, statistics.median(times["curve"]), statistics.median(times["forward"]),
                         median_ratio(times["curve"], times["forward"]) / steps)


# --- table ----------------------------------------------------------------------------------------------------
def _mib(value: int | None) -> str:
    return "" if value is None else f"{value / 2**20:.0f}"


def format_row(row: Row) -> str:
    if row.status != "measured":
        return f"{row.model:14s} {row.batch:>5d} {row.method:24s} {row.status}: {row.reason}"
    cpu = "" if row.cpu_ratio_to_floor is None else f"{row.cpu_ratio_to_floor:.2f}"
    memory = "" if row.peak_bytes is None else f" {_mib(row.peak_bytes):>8s} {row.memory_ratio_to_floor:>7.2f}"
    return (f"{row.model:14s} {row.batch:>5d} {row.method:24s} {row.seconds_median:>9.3f} "
            f"{row.explanations_per_second:>9.2f} {row.ratio_to_floor:>7.2f} {cpu:>7s}{memory}")


def format_table(report: BenchReport) -> str:
    header = (f"{'model':14s} {'batch':>5s} {'method':24s} {'seconds':>9s} {'expl/s':>9s} {'x floor':>7s} "
              f"{'cpu x':>7s} {'peak MiB':>8s} {'x floor':>7s}")
    lines = [f"Machine: {report.machine['processor']} ({report.machine['cpu_count']} cores, "
             f"{report.machine['threads']} threads)" + (f", {report.machine['gpu']}" if "gpu" in report.machine
                                                        else "") + f"; torch {report.machine['torch']}; "
             f"device {report.machine['device']}, {report.settings['dtype']}", header, "-" * len(header)]
    measured = [row for row in report.rows if row.status == "measured"]
    lines += [format_row(row) for row in measured]
    reasons: dict[tuple[str, str, str], list[int]] = {}  # one line per model, method and reason, with its batches
    for row in report.rows:
        if row.status != "measured":
            reasons.setdefault((row.model, row.method, f"{row.status}: {row.reason}"), []).append(row.batch)
    if reasons:
        lines += ["", "Not measured:"] + [f"  {model} {method} (batch {', '.join(map(str, batches))}) {why}"
                                          for (model, method, why), batches in reasons.items()]
    if report.evaluation:
        lines += ["", f"{'evaluation':14s} {'steps':>5s} {'curve s':>9s} {'forward s':>9s} {'x forward per step':>18s}"]
        lines += [f"{row.model:14s} {row.steps:>5d} {row.seconds_median:>9.3f} {row.forward_seconds_median:>9.4f} "
                  f"{row.ratio_to_forward_per_step:>18.2f}" for row in report.evaluation]
    return "\n".join(lines)
