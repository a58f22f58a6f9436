"""Tests for training/runner.py on tiny generated IDX data: complete run directories,
bit-exact resumption, distribution, baselines and initial weights."""

import csv
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.eager import context as eager_context

from training.assembly import optimizer_steps
from training.batchnorm import TaskBatchNorm, recalibration_batches
from training.rundir import NOT_RECORDED, RunDirectory
from training.runner import (
    RunConfig,
    RunDirectoryError,
    _EpochSeeder,
    _seed_keeping_kernels,
    build_tasks,
    make_optimizer,
    restore_run,
    run,
)
from zoo.precision import cpu_description

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(tmp_path, data_dir, **overrides):
    values = dict(
        protocol="permuted",
        datasets=("mnist",),
        num_tasks=3,
        epochs=2,
        hidden_units=(32, 32),
        batch_size=40,
        learning_rate=0.01,
        meta=1.35,
        data_dir=str(data_dir),
        run_dir=str(tmp_path / "run"),
    )
    return RunConfig(**{**values, **overrides})


def checkpoint_values(run_dir) -> dict:
    checkpoint, _ = RunDirectory(run_dir).last_checkpoint()
    reader = tf.train.load_checkpoint(checkpoint)
    return {
        name: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        if "save_counter" not in name
    }


def metric_rows(run_dir):
    with open(Path(run_dir) / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_permuted_run_writes_a_complete_run_directory(tmp_path, tiny_data_dir):
    summary = run(tiny_config(tmp_path, tiny_data_dir), verbose=0)
    run_dir = tmp_path / "run"
    rows = metric_rows(run_dir)
    assert len(rows) == 6  # 3 tasks x 2 epochs
    assert {"loss", "accuracy", "acc/task_1", "acc/task_3", "flipped"} <= set(rows[0])
    assert {"dense_1/flipped", "dense_out/abs_wh_q0.99"} <= set(rows[0])
    matrix = np.array(summary["accuracy_matrix"])
    assert matrix.shape == (3, 3)
    # The matrix holds the accuracies measured at the end of each task.
    for i in range(3):
        np.testing.assert_allclose(
            matrix[i], [float(rows[2 * i + 1][f"acc/task_{j + 1}"]) for j in range(3)]
        )
    assert matrix[-1].mean() == pytest.approx(summary["mean_accuracy"])
    assert matrix[0, 0] > 0.6  # the tiny task is learnable
    assert -1 <= summary["backward_transfer"] <= 1
    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved["accuracy_matrix"] == summary["accuracy_matrix"]
    # All of its training time was spent on this machine.
    assert saved["machines"] == {cpu_description(): summary["wall_time_s"]}
    assert json.loads((run_dir / "config.json").read_text())["meta"] == 1.35
    plots = sorted(p.name for p in (run_dir / "plots").iterdir())
    assert "task_accuracies.png" in plots and "hidden_weights_task_3.png" in plots
    assert any((run_dir / "tensorboard").iterdir())


def test_resumed_run_ends_exactly_like_an_uninterrupted_one(tmp_path, tiny_data_dir):
    whole = tiny_config(tmp_path / "a", tiny_data_dir)
    run(whole, verbose=0)
    split = tiny_config(tmp_path / "b", tiny_data_dir)
    # Stop inside task 2, and again exactly at a task boundary (fresh optimizer next).
    assert run(split, verbose=0, stop_after_epochs=3)["stopped_after_epochs"] == 3
    run(split, verbose=0, stop_after_epochs=4)
    summary = run(split, verbose=0)
    assert summary["epochs"] == 6
    a, b = checkpoint_values(whole.run_dir), checkpoint_values(split.run_dir)
    assert a.keys() == b.keys() and len(a) > 10
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    for row_a, row_b in zip(metric_rows(whole.run_dir), metric_rows(split.run_dir)):
        assert row_a == row_b


def test_a_resume_splits_the_training_time_by_machine(tmp_path, tiny_data_dir):
    config = tiny_config(tmp_path, tiny_data_dir)
    run(config, verbose=0, stop_after_epochs=3)
    # As a run directory written before machines were recorded: no `machines`.
    for path in (tmp_path / "run" / "checkpoint").glob("*progress.json"):
        saved = json.loads(path.read_text())
        del saved["machines"]
        path.write_text(json.dumps(saved))
    before = RunDirectory(config.run_dir).load_progress().wall_time
    summary = run(config, verbose=0)
    machines = summary["machines"]
    assert set(machines) == {NOT_RECORDED, cpu_description()}
    assert machines[NOT_RECORDED] == pytest.approx(before, abs=0.1)
    assert sum(machines.values()) == pytest.approx(summary["wall_time_s"], abs=0.2)


def test_cosine_schedule_decays_over_each_optimizers_lifetime(tmp_path, tiny_data_dir):
    per_task = tiny_config(tmp_path, tiny_data_dir, lr_schedule="cosine")
    tasks, _ = build_tasks(per_task)
    steps_per_epoch = -(-tasks[0].num_train // per_task.batch_size)  # ceil
    assert optimizer_steps(per_task, tasks, 1) == 2 * steps_per_epoch
    shared = dataclasses.replace(per_task, optimizer_per_task=False)
    assert optimizer_steps(shared, tasks, 0) == 3 * 2 * steps_per_epoch
    optimizer = make_optimizer(per_task, decay_steps=10)
    # lr(t) = lr0 * (1 + cos(pi * t / T)) / 2
    for step, expected in [(0, 0.01), (5, 0.005), (10, 0.0), (20, 0.0)]:
        assert float(optimizer.learning_rate(step)) == pytest.approx(expected, abs=1e-9)
    with pytest.raises(ValueError, match="decay_steps"):
        make_optimizer(per_task)
    assert isinstance(
        make_optimizer(tiny_config(tmp_path, tiny_data_dir)).learning_rate, tf.Variable
    )


def test_resumed_cosine_run_ends_exactly_like_an_uninterrupted_one(
    tmp_path, tiny_data_dir
):
    overrides = dict(num_tasks=2, lr_schedule="cosine", evaluate="task")
    whole = tiny_config(tmp_path / "a", tiny_data_dir, **overrides)
    run(whole, verbose=0)
    constant = tiny_config(tmp_path / "c", tiny_data_dir, num_tasks=2, evaluate="task")
    run(constant, verbose=0)
    split = tiny_config(tmp_path / "b", tiny_data_dir, **overrides)
    run(split, verbose=0, stop_after_epochs=1)  # inside task 1, mid-schedule
    run(split, verbose=0)
    a, b = checkpoint_values(whole.run_dir), checkpoint_values(split.run_dir)
    for values in (a, b):
        values.pop("_CHECKPOINTABLE_OBJECT_GRAPH")
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert metric_rows(whole.run_dir) == metric_rows(split.run_dir)
    # ... and the schedule changed the training (the same run at a constant rate).
    c = checkpoint_values(constant.run_dir)
    kernels = [n for n in a if "kernel" in n and "optimizer" not in n.lower()]
    assert kernels and any(not np.array_equal(a[n], c[n]) for n in kernels)


@pytest.mark.parametrize("baseline", ["ewc", "si"])
def test_resumed_baseline_run_ends_exactly_like_an_uninterrupted_one(
    tmp_path, tiny_data_dir, baseline
):
    overrides = dict(
        num_tasks=2, baseline=baseline, ewc_lambda=50.0, si_c=5.0, evaluate="task"
    )
    whole = tiny_config(tmp_path / "a", tiny_data_dir, **overrides)
    run(whole, verbose=0)
    split = tiny_config(tmp_path / "b", tiny_data_dir, **overrides)
    # Inside task 1 (SI's path integral half done), then inside task 2 (penalty on).
    for stop in [1, 3] if baseline == "si" else [3]:
        run(split, verbose=0, stop_after_epochs=stop)
    run(split, verbose=0)
    a, b = checkpoint_values(whole.run_dir), checkpoint_values(split.run_dir)
    # The object graph names a restored optimizer's slots without its name scope.
    for values in (a, b):
        values.pop("_CHECKPOINTABLE_OBJECT_GRAPH")
    accumulators = [name for name in a if name.startswith("model/consolidation/")]
    assert len(accumulators) >= 2 * 3  # per kernel (3 layers), at least 2 each
    assert any(np.abs(a[name]).max() > 0 for name in accumulators)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    rows = metric_rows(whole.run_dir)
    assert rows == metric_rows(split.run_dir)
    assert float(rows[0]["penalty"]) == 0 and float(rows[-1]["penalty"]) > 0


def test_kill_minus_nine_then_same_command_resumes(tmp_path, tiny_data_dir):
    command = [
        sys.executable,
        "-m",
        "training",
        "permuted",
        "--tasks",
        "2",
        "--epochs",
        "3",
        "--hidden-units",
        "32",
        "32",
        "--batch-size",
        "40",
        "--lr",
        "0.01",
        "--quiet",
        "--data-dir",
        str(tiny_data_dir),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    reference = tmp_path / "reference"
    subprocess.run(
        command + ["--run-dir", str(reference)],
        check=True,
        env=env,
        capture_output=True,
        timeout=300,
    )

    killed = tmp_path / "killed"
    progress = killed / "checkpoint" / "progress.json"
    process = subprocess.Popen(
        command + ["--run-dir", str(killed)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while time.time() < deadline:
        if (
            progress.exists()
            and json.loads(progress.read_text())["completed_epochs"] >= 2
        ):
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    completed = json.loads(progress.read_text())["completed_epochs"]
    assert completed < 6, "the run finished before it could be killed"

    result = subprocess.run(
        command + ["--run-dir", str(killed)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert f"Resuming {killed} after epoch" in result.stdout
    a, b = checkpoint_values(reference), checkpoint_values(killed)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert metric_rows(reference) == metric_rows(killed)


def test_mirrored_strategy_matches_single_device(
    tmp_path, tiny_data_dir, mirrored_strategy
):
    config = tiny_config(tmp_path / "single", tiny_data_dir, num_tasks=2, epochs=1)
    single = run(config, verbose=0)
    mirrored = run(
        tiny_config(tmp_path / "mirrored", tiny_data_dir, num_tasks=2, epochs=1),
        strategy=mirrored_strategy,
        verbose=0,
    )
    np.testing.assert_allclose(
        mirrored["accuracy_matrix"], single["accuracy_matrix"], atol=1e-6
    )
    loss_single = [float(r["loss"]) for r in metric_rows(tmp_path / "single" / "run")]
    loss_mirrored = [
        float(r["loss"]) for r in metric_rows(tmp_path / "mirrored" / "run")
    ]
    np.testing.assert_allclose(loss_mirrored, loss_single, rtol=1e-5)


def test_stream_and_joint_runs(tmp_path, tiny_data_dir):
    stream = run(
        tiny_config(
            tmp_path / "s",
            tiny_data_dir,
            protocol="stream",
            datasets=("fashion_mnist",),
            num_tasks=3,
            epochs=1,
            evaluate="task",
        ),
        verbose=0,
    )
    assert list(stream["final_accuracy"]) == ["test"]
    assert np.array(stream["accuracy_matrix"]).shape == (3, 1)

    joint = run(
        tiny_config(tmp_path / "j", tiny_data_dir, joint=True, num_tasks=2, epochs=2),
        verbose=0,
    )
    assert np.array(joint["accuracy_matrix"]).shape == (1, 2)
    assert len(metric_rows(tmp_path / "j" / "run")) == 2


def test_full_precision_run(tmp_path, tiny_data_dir):
    config = tiny_config(tmp_path, tiny_data_dir, model="mlp_float", num_tasks=2)
    optimizer = make_optimizer(config)
    assert optimizer.metaplastic_variables == "kernels"
    summary = run(config, verbose=0)
    assert np.array(summary["accuracy_matrix"]).shape == (2, 2)
    assert summary["accuracy_matrix"][0][0] > 0.6
    rows = metric_rows(tmp_path / "run")
    assert "flipped" not in rows[0]  # no binary weights to diagnose
    assert (tmp_path / "run" / "plots" / "hidden_weights_task_2.png").exists()
    assert make_optimizer(
        tiny_config(tmp_path, tiny_data_dir)
    ).metaplastic_variables == ("binary")


def test_baseline_with_a_strategy_is_refused(
    tmp_path, tiny_data_dir, mirrored_strategy
):
    config = tiny_config(tmp_path, tiny_data_dir, baseline="si")
    with pytest.raises(ValueError, match="does not run under tf.distribute"):
        run(config, strategy=mirrored_strategy, verbose=0)


def test_run_directory_of_another_configuration_is_refused(tmp_path, tiny_data_dir):
    config = tiny_config(tmp_path, tiny_data_dir, num_tasks=1, epochs=1)
    run(config, verbose=0)
    with pytest.raises(RunDirectoryError, match=r"differs in \['meta'\]"):
        run(
            tiny_config(tmp_path, tiny_data_dir, num_tasks=1, epochs=1, meta=0.0),
            verbose=0,
        )


def test_run_directory_from_before_validation_split_resumes(tmp_path, tiny_data_dir):
    config = tiny_config(tmp_path, tiny_data_dir, num_tasks=2, epochs=1)
    first = run(config, verbose=0)
    path = tmp_path / "run" / "config.json"
    saved = json.loads(path.read_text())
    # Written before these fields existed.
    for field in ("validation_split", "baseline", "ewc_lambda", "fisher_samples"):
        del saved[field]
    for field in ("si_c", "si_xi"):
        del saved[field]
    path.write_text(json.dumps(saved))
    again = run(config, verbose=0)
    assert again["accuracy_matrix"] == first["accuracy_matrix"]
    with pytest.raises(ValueError, match="validation_split"):
        tiny_config(tmp_path, tiny_data_dir, validation_split=-0.1)


def restored_accuracy(config, task_index, own_batch_norm, batches=None) -> float:
    """Test accuracy of a run's final model on one of its tasks, with the live
    BatchNorm state or (`own_batch_norm`) with the task's own, as the runner does."""
    restored = restore_run(config.run_dir)
    model, task = restored.model, restored.eval_tasks[task_index]
    model.compile(
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    states = TaskBatchNorm(model, restored.bn_states)
    with (
        states.evaluating(task_index, batches=batches)
        if own_batch_norm
        else nullcontext()
    ):
        return model.evaluate(task.test_data(batch_size=1000), verbose=0)[1]


def test_reported_accuracies_are_those_of_the_checkpointed_model(
    tmp_path, tiny_data_dir
):
    # The task being trained is evaluated with the live BatchNorm state, so its number
    # is what the saved model scores; an earlier task with its own state, re-estimated
    # (or not, with recalibrate_bn=0) from its training batches.
    for recalibrate_bn in (20, 0):
        config = tiny_config(
            tmp_path / str(recalibrate_bn), tiny_data_dir, num_tasks=2, epochs=1,
            recalibrate_bn=recalibrate_bn,
        )  # fmt: skip
        final = run(config, verbose=0)["final_accuracy"]
        assert restored_accuracy(config, 1, False) == pytest.approx(
            final["task_2"], abs=1e-6
        )
        tasks, _ = build_tasks(config)
        batches = recalibration_batches(config, tasks[0], 0)
        assert (batches is None) == (recalibrate_bn == 0)
        assert restored_accuracy(config, 0, True, batches) == pytest.approx(
            final["task_1"], abs=1e-6
        )


def test_initial_weights_from_a_run_directory(tmp_path, tiny_data_dir):
    first = tiny_config(tmp_path / "a", tiny_data_dir, num_tasks=1, epochs=1)
    run(first, verbose=0)
    second = tiny_config(
        tmp_path / "b",
        tiny_data_dir,
        num_tasks=1,
        epochs=1,
        learning_rate=1e-9,
        initial_weights=first.run_dir,
    )
    run(second, verbose=0)
    before, after = checkpoint_values(first.run_dir), checkpoint_values(second.run_dir)
    kernels = [k for k in before if k.endswith("/kernel/.ATTRIBUTES/VARIABLE_VALUE")]
    assert len(kernels) == 3
    for name in kernels:  # a vanishing learning rate: the first run's kernels
        np.testing.assert_allclose(after[name], before[name], atol=1e-5)

    missing = tiny_config(
        tmp_path / "c", tiny_data_dir, initial_weights=str(tmp_path / "nowhere")
    )
    with pytest.raises(ValueError, match="initial_weights") as info:
        run(missing, verbose=0)
    assert "\n" not in str(info.value)


def seeded_draws() -> tuple:
    """Numbers from every generator that an epoch's seed governs."""
    keras_utils = sys.modules[tf.keras.utils.set_random_seed.__module__]
    shuffled = tf.data.Dataset.range(20).shuffle(20, seed=3)
    return (
        random.random(),
        np.random.random(),
        keras_utils.get_random_seed(),
        tf.random.uniform([3]).numpy().tolist(),  # op seed drawn from the global seed
        tf.random.uniform([2], seed=5).numpy().tolist(),
        [list(shuffled.as_numpy_iterator()) for _ in range(2)],  # reshuffled
    )


def test_seeding_without_emptying_the_kernel_cache_seeds_like_keras():
    tf.keras.utils.set_random_seed(0)  # as building a run's model does
    # Seeds not used before in this process (a run's epochs each have their own).
    for seed in (918_273, 918_274):
        assert _seed_keeping_kernels(seed)
        draws = seeded_draws()
        tf.keras.utils.set_random_seed(seed)
        assert seeded_draws() == draws


def test_epoch_seeder_empties_the_kernel_cache_only_for_stateful_random_ops(
    monkeypatch,
):
    """After its first call, the seeder keeps the kernel cache (and compiled functions)
    until a function holds a stateful random op (dropout's); then each seeding restarts
    that op, as `tf.keras.utils.set_random_seed` does."""
    emptied = []
    keras_seed = tf.keras.utils.set_random_seed
    monkeypatch.setattr(
        tf.keras.utils, "set_random_seed", lambda s: emptied.append(s) or keras_seed(s)
    )
    seeder = _EpochSeeder()
    # The functions of other tests in this process are not this test's business.
    seeder._inspected = set(eager_context.context().list_function_names())

    @tf.function
    def steady(x):
        return x * 2.0

    @tf.function
    def noise():
        return tf.random.uniform([4])

    seeder(918_275)  # the first call always empties it
    steady(tf.constant(1.0))
    seeder(918_276)
    assert emptied == [918_275]
    first = noise().numpy()
    assert not np.array_equal(noise().numpy(), first)
    seeder(918_275)
    np.testing.assert_array_equal(noise().numpy(), first)
    assert emptied == [918_275, 918_275]
