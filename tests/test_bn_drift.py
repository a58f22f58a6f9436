"""Tests of benchmarks/bn_drift.py on a tiny permuted run: the accuracy with the moving
statistics is the run's own, and the drift is reported for every BatchNorm layer."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import bn_drift  # noqa: E402
from training.cli import main  # noqa: E402


def test_drift_of_a_finished_run(tmp_path, tiny_data_dir):
    run_dir = tmp_path / "pmnist"
    argv = [
        "permuted", "--tasks", "2", "--epochs", "1", "--hidden-units", "16", "16",
        "--batch-size", "40", "--seed", "1", "--data-dir", str(tiny_data_dir),
        "--run-dir", str(run_dir), "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    output = tmp_path / "drift.json"
    bn_drift.main([str(run_dir), "--data-dir", str(tiny_data_dir), "--batches", "2",
                   "--output", str(output)])  # fmt: skip
    (run,) = json.loads(output.read_text())["runs"]
    summary = json.loads((run_dir / "summary.json").read_text())
    # The finished run's last task, with the live statistics: what the run measured.
    assert run["task"] == "task_2" and run["completed_epochs"] == 2
    assert run["settings"]["hidden_units"] == [16, 16]
    assert run["settings"]["seed"] == 1
    assert run["accuracy_moving_statistics"] == pytest.approx(
        summary["accuracy_matrix"][-1][1], abs=1e-6
    )
    assert 0.0 <= run["accuracy_recalibrated"] <= 1.0
    curves = run["by_epoch"]
    assert curves["accuracy"] == [
        [2, pytest.approx(run["accuracy_moving_statistics"], abs=1e-6)]
    ]
    layers = ("dense_1", "dense_2", "dense_out")
    assert set(curves) == {
        "accuracy",
        *(f"{n}/{k}" for n in layers for k in ("abs_wh_q0.5", "flipped")),
    }
    assert all(len(c) == 1 and c[0][1] >= 0.0 for c in curves.values())
    assert set(run["drift"]) == {"bn_1", "bn_2", "bn_out"}
    # 16 hidden units; one logit per class of the tiny data (4).
    assert run["drift"]["bn_1"]["units"] == 16 and run["drift"]["bn_out"]["units"] == 4
    for layer in run["drift"].values():
        assert 0.0 <= layer["shifted_fraction"] <= 1.0
        assert 0.0 < layer["variance_ratio_min"] <= layer["variance_ratio_max"]


def test_a_directory_that_is_no_run_gets_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bn_drift.main([str(tmp_path / "nothing"), "--output", str(tmp_path / "x.json")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bn_drift: ") and "\n" not in err
    assert not (tmp_path / "x.json").exists()
