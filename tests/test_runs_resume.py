"""Batch runs lose nothing: killed with SIGKILL at random moments and restarted, every item is finished exactly once;
shards merge into one table and report; a changed config refuses to resume into an old run's folder."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from toolkit import ConfigError, Explanation
from toolkit.runs import run
from toolkit.runs.report import render_report
from toolkit.runs.store import TMP_PREFIX, load_run, part_files

from test_runs import vit_scenes

ROOT = Path(__file__).resolve().parents[1]


def _values(rows: list[dict]) -> dict[str, tuple]:
    """What an item x method computed, without where or how fast."""
    return {row["key"]: (row["prediction"], row["target"], round(row["morf_auc"], 6), round(row["mass_accuracy"], 6),
                         row["status"]) for row in rows}


def _parts(folder: Path) -> int:
    return len(part_files(folder)) if (folder / "parts").is_dir() else 0


def test_sigkill_at_random_moments_then_resume_finishes_every_item_exactly_once(tmp_path):
    """Each start is killed at a random moment: once while it starts up, then a random time after it committed its
    first batch (so mid-run, possibly mid-write); a last start finishes the run."""
    config = vit_scenes(tmp_path, count=32, methods=["rollout", "raw_attention"], batch_size=2)
    folder = tmp_path / "out"
    command = [sys.executable, "-m", "toolkit", "run", str(config)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    rng = random.Random(12)
    partial = []
    for attempt in range(5):
        before = _parts(folder)
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 90
        if attempt == 0:
            time.sleep(rng.uniform(0.5, 4.0))
        else:
            while _parts(folder) == before and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.4))  # a batch takes 0.1 to 0.5 s here: kills land between and inside
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
        partial.append(len(load_run(folder)[1]) if (folder / "run.json").exists() else 0)
        if partial[-1] == 32 * 2:
            break
    assert any(0 < count < 32 * 2 for count in partial), partial  # kills landed mid-run
    finished = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    folder = tmp_path / "out"
    _, rows = load_run(folder)
    keys = [row["key"] for row in rows]
    assert len(keys) == len(set(keys)) == 32 * 2 and all(row["status"] == "ok" for row in rows)
    on_disk = [key for part in part_files(folder) for key in pq.read_table(part, columns=["key"]).column(0).to_pylist()]
    assert sorted(on_disk) == sorted(keys)  # no part holds a row another part holds
    for path in folder.rglob("*"):  # every file under its real name is complete (a killed write left a .tmp- one)
        if path.suffix == ".npz" and not path.name.startswith(TMP_PREFIX):
            Explanation.load(path)
        elif path.suffix == ".png" and not path.name.startswith(TMP_PREFIX):
            Image.open(path).load()
    assert all((folder / row["arrays"]).is_file() and (folder / row["overlay"]).is_file() for row in rows)
    # The same rows as a run that was never killed.
    (tmp_path / "clean").mkdir()
    run(vit_scenes(tmp_path / "clean", count=32, methods=["rollout", "raw_attention"], batch_size=2))
    assert _values(load_run(tmp_path / "clean" / "out")[1]) == _values(rows)
    assert run(config).skipped == 32  # started again, there is nothing left to do


def test_shards_write_into_one_folder_and_the_report_merges_them(tmp_path, capsys):
    config = vit_scenes(tmp_path, count=5, methods=["rollout", "generic"])
    summaries = [run(config, shard_spec=f"{i}/3") for i in (3, 1, 2)]
    output = capsys.readouterr().out
    assert [s.items for s in summaries] == [1, 2, 2]
    assert "shard 3/3 finished: 1 items x 2 methods" in output and "python -m toolkit report" in output
    _, rows = load_run(tmp_path / "out")
    assert sorted({row["shard"] for row in rows}) == ["shard-1-of-3", "shard-2-of-3", "shard-3-of-3"]
    assert sorted(row["index"] for row in rows) == sorted(list(range(5)) * 2)
    (tmp_path / "whole").mkdir()
    run(vit_scenes(tmp_path / "whole", count=5, methods=["rollout", "generic"]))
    assert _values(load_run(tmp_path / "whole" / "out")[1]) == _values(rows)
    assert "5 items, 10 rows (0 failed) from 3 shard(s)" in render_report(tmp_path / "out")
    # A whole run into the sharded folder finds every item finished.
    assert run(config).skipped == 5


def test_a_changed_config_refuses_to_resume_unless_restarted(tmp_path, capsys):
    config = vit_scenes(tmp_path, count=2)
    run(config)
    with pytest.raises(ConfigError, match=r"holds a run of another config \(changed: methods.*--restart"):
        run(config, ["methods=[generic]"])
    with pytest.raises(ConfigError, match=r"changed: data.seed: 3 -> 4"):
        run(config, ["data.seed=4"])
    assert run(config, ["data.limit=1"]).skipped == 1  # fewer items of the same run: nothing new
    assert run(config, ["data.count=3"]).skipped == 2  # more scenes: the first two are kept
    summary = run(config, ["methods=[generic]"], mode="restart")
    assert summary.skipped == 0
    config_after, rows = load_run(tmp_path / "out")
    assert [m.name for m in config_after.methods] == ["generic"] and {r["method"] for r in rows} == {"generic"}
    assert len(rows) == 2
    (tmp_path / "new").mkdir()
    with pytest.raises(ConfigError, match="Nothing to resume"):
        run(vit_scenes(tmp_path / "new", count=2), mode="resume")


def test_a_model_that_fails_to_load_leaves_the_folder_free(tmp_path, monkeypatch):
    """A run stamps its folder with its first finished rows, so fixing the model and running again is not refused."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = vit_scenes(tmp_path, count=2)
    with pytest.raises(Exception, match="Could not load 'no-such-org/no-such-model'"):
        run(config, ["model=no-such-org/no-such-model"])
    assert not (tmp_path / "out" / "run.json").exists()
    assert run(config).skipped == 0
