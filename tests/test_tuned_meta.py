"""`benchmarks/tuned_meta.py` end to end on the tiny generated data of `conftest.py`:
the search over m, the tuned m against m = 0 per seed, the statistics, the results file
and the README table rendered from it, resuming without retraining, one-line errors."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import tuned_meta  # noqa: E402
from tools import readme_tables  # noqa: E402

TINY = {"num_tasks": 2, "epochs": 1, "hidden_units": [8, 8], "batch_size": 40}


def _arguments(tmp_path, data_dir, *extra):
    return [
        "--data-dir",
        str(data_dir),
        "--runs-root",
        str(tmp_path / "runs"),
        "--output",
        str(tmp_path / "tuned_meta.json"),
        "--seeds",
        "0",
        "1",
        "--max-trials",
        "2",
        "--setting",
        json.dumps(TINY),
        *extra,
    ]


@pytest.fixture(scope="module")
def searched(tmp_path_factory, tiny_data_dir):
    tmp_path = tmp_path_factory.mktemp("tuned")
    assert tuned_meta.main(_arguments(tmp_path, tiny_data_dir)) == 0
    path = tmp_path / "tuned_meta.json"
    return tmp_path, json.loads(path.read_text())


def test_best_m_of_the_search_is_compared_with_m0_per_seed(searched):
    tmp_path, record = searched
    trials = record["search"]["trials"]
    assert len(trials) == 2 and record["search"]["max_trials"] == 2
    best = max(trials, key=lambda t: t["validation_mean_accuracy"])
    assert record["search"]["best_meta"] == pytest.approx(best["meta"])
    assert 0.0 <= best["meta"] <= 6.0
    assert record["runs"]["tuned"]["meta"] == pytest.approx(best["meta"])
    assert record["runs"]["m0"]["meta"] == 0.0
    compare = tmp_path / "runs" / tuned_meta.PROJECT / "compare"
    for name, run in record["runs"].items():
        assert sorted(run["seeds"]) == ["0", "1"]
        for seed, entry in run["seeds"].items():
            config = json.loads(
                (compare / f"{name}-seed{seed}" / "config.json").read_text()
            )
            assert config["seed"] == int(seed)
            assert config["meta"] == pytest.approx(run["meta"])
            assert config["validation_split"] == 0.0  # all training data, test set
            assert (config["num_tasks"], config["epochs"]) == (2, 1)
            summary = json.loads(
                (compare / f"{name}-seed{seed}" / "summary.json").read_text()
            )
            assert entry["mean_accuracy"] == pytest.approx(summary["mean_accuracy"])
            assert entry["bwt"] == pytest.approx(summary["backward_transfer"])
        values = [s["mean_accuracy"] for s in run["seeds"].values()]
        assert run["stats"]["mean"] == pytest.approx(np.mean(values))
        assert run["stats"]["std"] == pytest.approx(np.std(values, ddof=1))
    comparison = record["comparison"]
    assert comparison["difference"] == pytest.approx(
        record["runs"]["tuned"]["stats"]["mean"] - record["runs"]["m0"]["stats"]["mean"]
    )
    assert "--lr 0.005" in record["search"]["command"]
    assert (tmp_path / "tuned_meta.png").stat().st_size > 0


def test_readme_table_shows_the_file(searched):
    _, record = searched
    text = readme_tables.render_tuning(record)
    for run in record["runs"].values():
        mean, std = (100 * run["stats"][k] for k in ("mean", "std"))
        assert f"{mean:.1f} ± {std:.1f} %" in text
    for trial in record["search"]["trials"]:
        assert f"{trial['meta']:.3f}" in text
    assert "Not run yet" in readme_tables.render_tuning(None)


def test_second_run_resumes_without_training(searched, tiny_data_dir):
    tmp_path, record = searched
    summaries = sorted((tmp_path / "runs").rglob("summary.json"))
    before = {p: p.stat().st_mtime_ns for p in summaries}
    assert tuned_meta.main(_arguments(tmp_path, tiny_data_dir)) == 0
    assert {p: p.stat().st_mtime_ns for p in summaries} == before
    again = json.loads((tmp_path / "tuned_meta.json").read_text())
    assert again["runs"] == record["runs"]


def test_bad_setting_is_one_line(tmp_path, tiny_data_dir, capsys):
    arguments = _arguments(tmp_path, tiny_data_dir)
    arguments[arguments.index("--setting") + 1] = '{"widths": [8]}'
    assert tuned_meta.main(arguments) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: --setting") and "\n" not in error
