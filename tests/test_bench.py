"""The speed-and-memory bench on tiny models: its rows, ratios against a floor measured in the same run, skipped
methods with their reasons, the floor itself, the JSON and the command. No timing is asserted."""
from __future__ import annotations

import json
import statistics
import time

import pytest
import torch

from toolkit import ConfigError, list_methods
from toolkit.bench import BenchSettings, format_table, run_bench
from toolkit.bench.instances import build
from toolkit.bench.measure import FLOOR, cpu_peak_bytes, floor_pass, interleaved, peak_in_fresh_process, timed
from toolkit.cli import main

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    settings = BenchSettings(models=("tiny-vit", "tiny-lm"), batch_sizes=(1, 2), repeats=2, device="cpu",
                             memory=False, threads=1, out=str(out))
    return run_bench(settings, say=lambda line: None), out


def test_every_registered_method_is_measured_or_skipped_with_its_reason(report):
    report, _ = report
    for model in ("tiny-vit", "tiny-lm"):
        explainer = build(model, 1, CPU, torch.float32).explainer
        for batch in (1, 2):
            rows = {row.method: row for row in report.rows if row.model == model and row.batch == batch}
            assert set(rows) == {FLOOR, *list_methods()}
            for method in list_methods():
                refusal = explainer.method_refusal(method)
                if refusal is None:
                    assert rows[method].status == "measured"
                else:
                    assert rows[method].status == "skipped" and rows[method].reason == refusal
    lm_rows = {row.method: row for row in report.rows if row.model == "tiny-lm"}
    assert lm_rows["lrp"].status == "skipped"  # the LRP rules are refused for language models


def test_ratios_are_taken_against_the_floor_of_the_same_rounds(report):
    report, _ = report
    for row in report.rows:
        if row.status != "measured":
            continue
        floor = next(r for r in report.rows if (r.model, r.batch, r.method) == (row.model, row.batch, FLOOR))
        assert len(row.seconds) == len(floor.seconds) == 2
        assert row.ratio_to_floor == pytest.approx(statistics.median(
            t / f for t, f in zip(row.seconds, floor.seconds)))
        assert row.seconds_median == pytest.approx(statistics.median(row.seconds))
        assert row.explanations_per_second == pytest.approx(row.batch / row.seconds_median)
        assert len(row.cpu_seconds) == 2 and all(t > 0 for t in row.cpu_seconds)  # process CPU time, same rounds
        assert row.cpu_ratio_to_floor == pytest.approx(statistics.median(
            t / f for t, f in zip(row.cpu_seconds, floor.cpu_seconds)))
    assert all(r.ratio_to_floor == r.cpu_ratio_to_floor == 1.0 for r in report.rows if r.method == FLOOR)


def test_json_and_table_carry_the_figures(report):
    report, out = report
    saved = json.loads(out.read_text())
    assert saved["machine"]["device"] == "cpu" and saved["machine"]["threads"] == 1
    assert saved["settings"]["batch_sizes"] == [1, 2]
    fields = {"model", "batch", "method", "status", "reason", "seconds", "seconds_median", "explanations_per_second",
              "ratio_to_floor", "cpu_seconds", "cpu_ratio_to_floor", "peak_bytes", "memory_ratio_to_floor"}
    assert all(set(row) == fields for row in saved["rows"])
    assert len(saved["rows"]) == len(report.rows)
    evaluation = saved["evaluation"]
    assert [row["model"] for row in evaluation] == ["tiny-vit"]  # the language model has no perturbation curve here
    assert evaluation[0]["steps"] == 10 and evaluation[0]["ratio_to_forward_per_step"] > 0
    table = format_table(report)
    assert "x floor" in table and "generic" in table and "Not measured" in table and "evaluation" in table


def test_floor_takes_no_parameter_gradient_and_restores_the_model():
    instance = build("tiny-vit", 2, CPU, torch.float32)
    model = instance.model
    model.classifier.weight.requires_grad_(False)  # a caller's own choice survives the floor
    seen = []
    handle = instance.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    floor_pass(instance)
    handle.remove()
    assert all(p.grad is None for p in model.parameters())
    assert not model.classifier.weight.requires_grad
    assert all(p.requires_grad for name, p in model.named_parameters() if not name.startswith("classifier."))
    assert model.config._attn_implementation != "eager"  # the fused attention is back after the eager floor
    assert seen and not seen[0].requires_grad  # the gradient starts at the first layer's input (made a leaf there)


def test_interleaving_times_the_reference_first_in_every_round_and_turns_the_others():
    calls = []
    runs = {name: (lambda name=name: calls.append(name)) for name in ("floor", "a", "b", "c")}
    times = interleaved(runs, 3, CPU)
    assert calls[:4] == ["floor", "a", "b", "c"]  # warm-up
    assert calls[4:] == ["floor", "a", "b", "c", "floor", "b", "c", "a", "floor", "c", "a", "b"]
    assert all(len(t) == 3 for t in times.wall.values()) and all(len(t) == 3 for t in times.cpu.values())


def test_cpu_time_leaves_out_waiting():
    """The CPU clock counts this process's work, not the time it waits (on a shared machine: for a core)."""
    wall, cpu = timed(lambda: time.sleep(0.3), CPU)
    assert wall >= 0.3 and cpu < 0.1
    wall, cpu = timed(lambda: torch.ones(2**22).cumsum(0), CPU)
    assert cpu > 0


def test_peak_memory_sees_an_allocation_and_a_fresh_process_measures_one_call():
    size = 64 * 2**20
    peak = cpu_peak_bytes(lambda: torch.ones(size // 4).sum())
    assert size * 0.9 <= peak <= size * 1.5
    # a batch whose activations are large enough to be mapped from the system (small ones reuse the heap)
    assert peak_in_fresh_process("tiny-vit", 256, FLOOR, "cpu", "float32", 1) > 2**20


@pytest.mark.parametrize("settings,message", [
    (dict(models=("nope",)), "Unknown models"),
    (dict(methods=("nope",)), "Unknown methods"),
    (dict(dtype="float16", device="cpu"), "float16 is not supported on cpu"),
    (dict(dtype="int8"), "Unknown dtype"),
    (dict(batch_sizes=(0,)), "positive"),
    (dict(device="tpu"), "Unknown device|runs on cpu or cuda"),
])
def test_wrong_settings_are_refused_before_any_work(settings, message):
    with pytest.raises(ConfigError, match=message):
        BenchSettings(**settings).checked()


def test_command_prints_the_table_and_saves_the_json(tmp_path, capsys):
    out = tmp_path / "figures.json"
    assert main(["bench", "--models", "tiny-vit", "--methods", "generic,lrp", "--batch-sizes", "1", "--repeats", "1",
                 "--no-memory", "--no-evaluation", "--threads", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "generic" in printed and "lrp" in printed and "rollout" not in printed
    assert {row["method"] for row in json.loads(out.read_text())["rows"]} == {FLOOR, "generic", "lrp"}
    assert main(["bench", "--models", "tiny-vit", "--batch-sizes", "one"]) == 2
    assert main(["bench", "--models", "tiny-vit", "--dtype", "float16", "--device", "cpu"]) == 2
    assert "float16 is not supported on cpu" in capsys.readouterr().err
