"""Tests for training/status.py and `python -m training status` on tiny IDX data."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from training.cli import main
from training.config import RunConfig
from training.rundir import RunDirectory
from training.status import find_run_directories, planned_epochs, run_status


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_data_dir):
    """Two permuted tasks of two epochs each, run to the end."""
    run_dir = tmp_path_factory.mktemp("runs") / "pmnist"
    assert main([
        "permuted", "--tasks", "2", "--epochs", "2", "--hidden-units", "16", "16",
        "--batch-size", "40", "--data-dir", str(tiny_data_dir), "--run-dir",
        str(run_dir), "--quiet",
    ]) == 0  # fmt: skip
    return run_dir


def test_planned_epochs_follow_the_runner():
    assert planned_epochs(RunConfig(protocol="permuted", num_tasks=6, epochs=40)) == 240
    joint = RunConfig(protocol="permuted", num_tasks=10, epochs=5, joint=True)
    assert planned_epochs(joint) == 5  # one task: the union of the ten
    sequence = RunConfig(protocol="sequence", datasets=("mnist", "fashion_mnist"))
    assert planned_epochs(sequence) == 2 * sequence.epochs
    assert planned_epochs(RunConfig(protocol="stream", num_tasks=60, epochs=20)) == 1200


def test_a_finished_run(finished_run):
    status = run_status(finished_run)
    summary = json.loads((finished_run / "summary.json").read_text())
    assert status.state == "finished" and status.holder is None
    assert status.completed_epochs == status.planned_epochs == summary["epochs"] == 4
    assert status.wall_time_s == pytest.approx(summary["wall_time_s"])
    assert status.accuracy == pytest.approx(summary["mean_accuracy"])


def test_a_stopped_run_and_its_pace(finished_run, tmp_path):
    # The same run stopped after its 4th of 6 epochs: a third epoch per task planned,
    # no summary yet, nobody holding it.
    stopped = tmp_path / "stopped"
    shutil.copytree(finished_run, stopped)
    (stopped / "summary.json").unlink()
    config = json.loads((stopped / "config.json").read_text())
    config["epochs"] = 3
    (stopped / "config.json").write_text(json.dumps(config))
    ends = sorted((stopped / "checkpoint").glob("epoch-*.progress.json"))
    assert [p.name.split(".")[0] for p in ends] == ["epoch-3", "epoch-4"]
    # The pace is the difference of the training times the two epochs recorded, not of
    # the files' times: a stop and a resume between them (here an hour) do not count.
    for path, wall_time, mtime in (
        (ends[0], 100.0, 1_000_000),
        (ends[1], 142.0, 1_003_642),
    ):
        saved = json.loads(path.read_text())
        saved["wall_time"] = wall_time
        path.write_text(json.dumps(saved))
        os.utime(path, (mtime, mtime))
    status = run_status(stopped)
    assert status.state == "stopped"
    assert (status.completed_epochs, status.planned_epochs) == (4, 6)
    assert status.last_epoch_s == pytest.approx(42.0)
    assert status.remaining_s == pytest.approx(2 * 42.0)
    # The accuracy of the task being learned (task_2) at the last epoch.
    summary = json.loads((finished_run / "summary.json").read_text())
    assert status.accuracy == pytest.approx(summary["final_accuracy"]["task_2"])


def test_damaged_progress_is_a_state_not_an_error(finished_run, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(finished_run, damaged)
    (damaged / "summary.json").unlink()
    (damaged / "checkpoint" / "progress.json").write_text("{not json")
    status = run_status(damaged)
    assert (status.state, status.planned_epochs) == ("damaged", 4)


def test_running_means_a_live_process_holds_the_lock(finished_run, tmp_path):
    directory = RunDirectory(tmp_path / "live")
    shutil.copytree(finished_run, directory.path)
    (directory.path / "summary.json").unlink()
    with directory.lock():
        status = run_status(directory.path)
        assert status.state == "running"
        assert f"pid {os.getpid()} on " in status.holder
    assert run_status(directory.path).state == "stopped"
    # A lock file left by a process killed with -9 names a pid that is gone.
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    lock = {"pid": int(gone.stdout), "host": socket.gethostname(), "started": "then"}
    directory.lock_path.write_text(json.dumps(lock))
    assert run_status(directory.path).state == "stopped"
    assert run_status(directory.path).holder is None


def test_status_command(finished_run, tmp_path, capsys, monkeypatch):
    started = tmp_path / "runs" / "empty"
    started.mkdir(parents=True)
    shutil.copy(finished_run / "config.json", started / "config.json")
    assert find_run_directories(tmp_path / "runs") == [started]
    assert main(["status", str(finished_run), str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    accuracy = 100 * run_status(finished_run).accuracy
    assert (
        f"| {finished_run} | finished | 4/4 | {accuracy:.2f} % (mean, final) |" in out
    )
    assert f"| {started} | not started | 0/4 | — |" in out
    assert main(["status", str(tmp_path / "nowhere")]) == 2
    error = capsys.readouterr().err
    assert "does not exist" in error and error.count("\n") == 1
    # Without paths: runs/ of the working directory, none yet on a fresh checkout.
    monkeypatch.chdir(tmp_path / "runs")
    assert main(["status"]) == 0
    assert "no run directories under runs" in capsys.readouterr().out
