"""executor: ray on a local Ray instance started by the test gives the same rows as the local executor, into the same
layout and manifest, and resumes like a local run."""
from __future__ import annotations

import pytest

from toolkit.runs import run
from toolkit.runs.store import load_run

from test_runs import vit_scenes

ray = pytest.importorskip("ray")

COLUMNS = ("item_id", "item", "index", "inputs", "method", "options", "prediction", "target", "probability", "score",
           "status", "error", "morf_auc", "mass_accuracy", "rank_accuracy", "pointing_game", "curve_fractions",
           "overlay", "arrays")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_executor_gives_the_local_rows_and_resumes(tmp_path, local_ray):
    (tmp_path / "local").mkdir()
    (tmp_path / "ray").mkdir()
    run(vit_scenes(tmp_path / "local", count=5, methods=["rollout", "generic"]))
    config = vit_scenes(tmp_path / "ray", count=5, methods=["rollout", "generic"],
                        executor={"kind": "ray", "workers": 2, "num_cpus": 1})
    run(config, ["data.count=3", "executor=local"])  # a run started here, resumed on Ray
    assert run(config).skipped == 3
    local = {row["key"]: row for row in load_run(tmp_path / "local" / "out")[1]}
    on_ray = {row["key"]: row for row in load_run(tmp_path / "ray" / "out")[1]}
    assert sorted(on_ray) == sorted(local) and len(local) == 10
    for key, row in local.items():
        for column in COLUMNS:
            expected = pytest.approx(row[column], abs=1e-6) if isinstance(row[column], float) else row[column]
            assert on_ray[key][column] == expected, (key, column)
        assert on_ray[key]["curve_scores"] == pytest.approx(row["curve_scores"], abs=1e-6)
        assert (tmp_path / "ray" / "out" / on_ray[key]["overlay"]).is_file()
    assert run(config).skipped == 5
