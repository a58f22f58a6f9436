"""Fault injection (issue 12) on tiny settings: every fault of a run ends in a resumed,
bit-identical run, a one-line error or a warning, never in a traceback or a run that
'finishes' wrong. A moved or damaged run directory, a NaN loss, a diverging loss, two
processes on one run directory, a killed holder, a failed start, a batch larger than the
data and a meta mapping naming no layer."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from training.cli import main
from training.protocols import Task
from training.rundir import RunDirectory, RunDirectoryError
from training.runner import NonFiniteError, RunConfig, RunWarning, restore_run, run

ROOT = Path(__file__).resolve().parents[1]


def cli_argv(run_dir, data_dir, **options) -> list[str]:
    """`python -m training permuted ...` arguments of `tiny(run_dir, data_dir)`."""
    values = dict(tasks="2", epochs="2", batch_size="40", lr="0.01", dataset="mnist")
    values.update(options)
    argv = ["permuted", "--hidden-units", "16", "--quiet"]
    for option, value in values.items():
        argv += [f"--{option.replace('_', '-')}", value]
    return argv + ["--data-dir", str(data_dir), "--run-dir", str(run_dir)]


def tiny(run_dir, data_dir, **overrides) -> RunConfig:
    """The run `cli_argv` describes: 2 permuted tasks of 2 epochs, 6 batches each."""
    values = dict(
        protocol="permuted", num_tasks=2, epochs=2, hidden_units=(16,), batch_size=40,
        learning_rate=0.01, data_dir=str(data_dir), run_dir=str(run_dir),
    )  # fmt: skip
    return RunConfig(**{**values, **overrides})


def checkpoint_values(run_dir) -> dict:
    reader = tf.train.load_checkpoint(RunDirectory(run_dir).last_checkpoint()[0])
    # The object graph names a restored optimizer's slots without its name scope.
    skipped = ("save_counter", "_CHECKPOINTABLE_OBJECT_GRAPH")
    names = reader.get_variable_to_shape_map()
    return {n: reader.get_tensor(n) for n in names if not n.startswith(skipped)}


def assert_same_run(expected, actual) -> None:
    """The same final weights, optimizer state and metric rows, bit for bit."""
    a, b = checkpoint_values(expected), checkpoint_values(actual)
    assert a.keys() == b.keys() and len(a) > 5
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    metrics = [(Path(d) / "metrics.csv").read_text() for d in (expected, actual)]
    assert metrics[0] == metrics[1]


def run_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, RunWarning)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_data_dir) -> Path:
    """`whole/`: an uninterrupted tiny run; `partial/`: the same stopped after 3 of its
    4 epochs (inside task 2)."""
    root = tmp_path_factory.mktemp("reference")
    summary = run(tiny(root / "whole", tiny_data_dir), verbose=0)
    assert summary["warnings"] == []  # a healthy run
    run(tiny(root / "partial", tiny_data_dir), verbose=0, stop_after_epochs=3)
    return root


# Relative run directories.


def test_a_moved_run_directory_resumes_from_its_own_files(
    tmp_path, tiny_data_dir, reference
):
    shutil.copytree(reference / "partial", tmp_path / "before")
    moved = tmp_path / "elsewhere" / "after"
    moved.parent.mkdir()
    shutil.move(tmp_path / "before", moved)
    assert not (tmp_path / "before").exists()
    saved = json.loads((moved / "checkpoint" / "progress.json").read_text())
    assert saved["checkpoint"] == "checkpoint/epoch-3"
    summary = run(tiny(moved, tiny_data_dir), verbose=0)
    assert (summary["epochs"], summary["run_dir"]) == (4, str(moved))
    assert_same_run(reference / "whole", moved)


# Damaged checkpoints.


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 32] = bytes(b ^ 0xFF for b in data[middle : middle + 32])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, suffix",
    [
        (truncate, "data-00000-of-00001"),
        (garble, "data-00000-of-00001"),
        (truncate, "index"),
        (garble, "index"),
    ],
    ids=["truncated-data", "garbled-data", "truncated-index", "garbled-index"],
)
def test_a_damaged_last_checkpoint_is_recomputed_from_the_one_before(
    tmp_path, tiny_data_dir, reference, damage, suffix
):
    directory = tmp_path / "run"
    shutil.copytree(reference / "partial", directory)
    damage(directory / "checkpoint" / f"epoch-3.{suffix}")
    with pytest.warns(RunWarning) as caught:
        summary = run(tiny(directory, tiny_data_dir), verbose=0)
    (message,) = run_warnings(caught)
    assert re.fullmatch(
        rf"{re.escape(str(directory))}: damaged checkpoint/epoch-3 \(.+\); resuming "
        r"after epoch 2 instead, recomputing the epochs after it\.",
        message,
    ), message
    assert summary["epochs"] == 4
    assert_same_run(reference / "whole", directory)


def test_without_an_intact_checkpoint_a_run_is_refused_in_one_line(
    tmp_path, tiny_data_dir, reference, capsys
):
    directory = tmp_path / "run"
    shutil.copytree(reference / "partial", directory)
    for index in (directory / "checkpoint").glob("epoch-*.index"):
        truncate(index)
    assert main(cli_argv(directory, tiny_data_dir)) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"error: cannot resume from {directory}: no intact checkpoint: "
        "checkpoint/epoch-3 ("
    )
    assert "; checkpoint/epoch-2 (" in err and err.count("\n") == 1
    assert err.endswith("pass overwrite=True (--overwrite).\n")
    # Loading the run's model says the same in one line.
    with pytest.raises(RunDirectoryError, match="epoch-3, is damaged") as info:
        restore_run(directory)
    assert "\n" not in str(info.value)


# NaN and diverging losses.


def test_a_non_finite_loss_stops_the_run_and_never_finishes_it(
    tmp_path, tiny_data_dir, capsys
):
    run_dir = tmp_path / "run"
    errors = []
    for _ in range(3):  # the three runs: each fails the same way
        assert main(cli_argv(run_dir, tiny_data_dir, lr="1e38")) == 2
        errors.append(capsys.readouterr().err)
    assert errors[0] == errors[1] == errors[2] and errors[0].count("\n") == 1
    assert re.match(
        r"error: task 1/2 \(task_1\), epoch 1/2: loss (nan|inf) at batch \d+; "
        r"learning rate 1e\+38 too large\? Nothing of this epoch was saved "
        rf"\({re.escape(str(run_dir))} holds 0 completed epochs\)",
        errors[0],
    ), errors[0]
    assert RunDirectory(run_dir).load_progress() is None
    for name in ("metrics.csv", "summary.json", "commands.txt"):
        assert not (run_dir / name).exists(), name
    assert list((run_dir / "plots").iterdir()) == []
    assert list((run_dir / "checkpoint").iterdir()) == []


def test_a_nan_in_a_later_task_keeps_the_finite_epochs(
    tmp_path, tiny_data_dir, monkeypatch
):
    # Task 2's images turn NaN: its first batch has a NaN loss.
    train_data = Task.train_data

    def poisoned(self, **kwargs):
        batches = train_data(self, **kwargs)
        if self.name != "task_2":
            return batches
        return batches.map(lambda x, y: (x * float("nan"), y))

    monkeypatch.setattr(Task, "train_data", poisoned)
    config = tiny(tmp_path / "run", tiny_data_dir)
    messages = []
    for _ in range(2):  # resuming restarts from the last finite epoch, and fails again
        with pytest.raises(NonFiniteError) as info:
            run(config, verbose=0)
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert messages[0].startswith(
        "task 2/2 (task_2), epoch 1/2: loss nan at batch 1; learning rate 0.01 too "
        "large? Nothing of this epoch was saved"
    )
    directory = RunDirectory(config.run_dir)
    assert directory.load_progress().completed_epochs == 2
    kept = sorted(p.name for p in directory.checkpoint_dir.glob("epoch-*.index"))
    assert kept == ["epoch-1.index", "epoch-2.index"]
    rows = (directory.metrics_path).read_text().splitlines()
    assert len(rows) == 3 and "nan" not in rows[1] + rows[2]
    # The tensorboard events of task 1 are there, none of task 2.
    assert not directory.summary_path.exists()


def test_a_diverging_run_warns_and_lists_why_in_its_summary(
    tmp_path, tiny_data_dir, capsys
):
    run_dir = tmp_path / "run"
    assert main(cli_argv(run_dir, tiny_data_dir, lr="1e9")) == 0
    captured = capsys.readouterr()
    warnings = json.loads((run_dir / "summary.json").read_text())["warnings"]
    assert captured.err.splitlines() == [f"warning: {w}" for w in warnings]
    assert re.fullmatch(
        r"task 1/2 \(task_1\), epoch 1/2: loss [\d.,e+]+ is over 100 times that of a "
        r"uniform guess \(1\.386\): the run diverges; learning rate 1e\+09 too large\?",
        warnings[0],
    ), warnings[0]
    chance = [w for w in warnings if "no better than chance" in w]
    assert chance and all(w.endswith("learning rate 1e+09 too large?") for w in chance)
    assert f"{len(warnings)} warning(s), listed in" in captured.out


# One writer per run directory.


def test_a_second_process_is_refused_and_a_killed_holder_releases_the_run(
    tmp_path, tiny_data_dir
):
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "training", *cli_argv(run_dir, tiny_data_dir)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the command's own default
    holder = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        progress = run_dir / "checkpoint" / "progress.json"
        deadline = time.time() + 120
        while not progress.exists() and time.time() < deadline:
            time.sleep(0.05)
        holder.send_signal(signal.SIGSTOP)  # frozen while it holds the run directory
        second = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=120
        )
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert second.returncode == 2 and second.stdout == ""
    assert re.fullmatch(
        rf"error: {re.escape(str(run_dir))} is in use by pid {holder.pid} on "
        rf"{re.escape(socket.gethostname())} since [-\d]+ [:\d]+ [+-]\d{{4}}; wait for "
        r"it to end or choose another run directory\.\n",
        second.stderr,
    ), second.stderr

    completed = json.loads(progress.read_text())["completed_epochs"]
    assert completed < 4, "the holder finished before it was stopped"
    third = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120
    )
    assert third.returncode == 0, third.stderr
    # A default run prints no TensorFlow, absl or XLA log lines, and names epochs by
    # task, not Keras' global `Epoch x/y`.
    assert third.stderr == ""
    assert f"Resuming {run_dir} after epoch {completed}." in third.stdout
    assert "Task 2/2 (task_2), epoch 2/2: loss" in third.stdout
    assert "Epoch " not in third.stdout
    commands = (run_dir / "commands.txt").read_text().splitlines()
    assert len(commands) == 1


# Failures before training.


def test_a_failed_start_leaves_nothing_that_refuses_the_corrected_command(
    tmp_path, tiny_data_dir, capsys
):
    run_dir = tmp_path / "run"
    short = dict(tasks="1", epochs="1")
    assert main(cli_argv(run_dir, tiny_data_dir, dataset="mnistt", **short)) == 2
    assert capsys.readouterr().err.startswith("error: unknown dataset 'mnistt'")
    assert not (run_dir / "config.json").exists()
    assert main(cli_argv(run_dir, tiny_data_dir, **short)) == 0
    assert RunDirectory(run_dir).read_config().datasets == ("mnist",)
    # A configuration without a completed epoch (left by an older version) is
    # replaced too.
    old = tmp_path / "old"
    old.mkdir()
    stale = tiny(old, tiny_data_dir, datasets=("mnistt",), num_tasks=1, epochs=1)
    (old / "config.json").write_text(json.dumps(stale.to_json()))
    assert main(cli_argv(old, tiny_data_dir, **short)) == 0
    assert RunDirectory(old).read_config().datasets == ("mnist",)


def test_a_batch_larger_than_a_task_is_refused(tmp_path, tiny_data_dir, capsys):
    run_dir = tmp_path / "run"
    assert main(cli_argv(run_dir, tiny_data_dir, batch_size="5000")) == 2
    assert capsys.readouterr().err == (
        "error: batch_size 5000 is larger than the 240 training images of task "
        "task_1.\n"
    )
    assert not (run_dir / "config.json").exists()


def test_a_meta_mapping_naming_no_binary_layer_is_refused(tmp_path, tiny_data_dir):
    config = tiny(tmp_path / "run", tiny_data_dir, meta={"dense_9": 1.0, "conv": 2.0})
    with pytest.raises(ValueError) as info:
        run(config, verbose=0)
    assert str(info.value) == (
        "meta names no binary layer of mlp_meta: ['conv', 'dense_9']; its binary "
        "layers are ['dense_1', 'dense_out']."
    )
    assert not (tmp_path / "run" / "config.json").exists()
    floating = tiny(tmp_path / "f", tiny_data_dir, model="mlp_float", meta={"x": 1.0})
    with pytest.raises(ValueError, match=r"meta names no kernel layer of mlp_float"):
        run(floating, verbose=0)
