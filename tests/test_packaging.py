"""Tests for training/packaging.py and `python -m training package` on tiny IDX data."""

import gzip
import json
import shutil

import numpy as np
import pytest
import tensorflow as tf

import zoo
from training.assembly import restore_run
from training.batchnorm import recalibration_batches
from training.cli import main
from zoo import pretrained
from zoo.datasets import load_dataset, read_idx
from zoo.precision import cpu_description
from zoo.saved_model import load_saved_model


def train_tiny(tmp_path, data_dir):
    run_dir = tmp_path / "run"
    argv = [
        "train", "--dataset", "fashion_mnist", "--epochs", "2", "--hidden-units", "32",
        "32", "--batch-size", "40", "--lr-schedule", "cosine", "--weight-decay", "1e-7",
        "--data-dir", str(data_dir), "--run-dir", str(run_dir), "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    return run_dir, argv


def train_tiny_permuted(tmp_path, data_dir):
    """Two permuted tasks of one epoch, permutation seed 3."""
    run_dir = tmp_path / "pmnist"
    argv = [
        "permuted", "--tasks", "2", "--epochs", "1", "--hidden-units", "16", "16",
        "--batch-size", "40", "--seed", "3", "--data-dir", str(data_dir),
        "--run-dir", str(run_dir), "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    return run_dir


def test_packaged_run_scores_what_the_run_reported(tmp_path, tiny_data_dir, capsys):
    run_dir, argv = train_tiny(tmp_path, tiny_data_dir)
    assert (run_dir / "commands.txt").read_text().splitlines() == [
        "python -m training " + " ".join(argv)
    ]
    out = tmp_path / "models"
    code = main(
        ["package", str(run_dir), "--name", "tiny_fmnist", "--output-dir", str(out),
         "--budget", "2 CPU cores, seconds"]
    )  # fmt: skip
    assert code == 0
    assert "LCE test accuracy" in capsys.readouterr().out

    card = json.loads((out / "tiny_fmnist" / "model_card.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert card["command"] == "python -m training " + " ".join(argv)
    assert card["factory"] == "mlp_meta" and card["kwargs"]["hidden_units"] == [32, 32]
    assert card["epochs"] == 2 and card["budget"] == "2 CPU cores, seconds"
    hyperparameters = card["hyperparameters"]
    assert hyperparameters["learning_rate"] == summary["config"]["learning_rate"]
    # What the command set beyond the learning rate, readable without parsing it.
    assert hyperparameters["lr_schedule"] == "cosine"
    assert hyperparameters["weight_decay"] == 1e-7
    # The shipped weights are the ones the run evaluated last.
    keras = card["results"]["keras_test_accuracy"]
    assert keras == pytest.approx(summary["final_accuracy"]["fashion_mnist"], abs=1e-6)
    lce = card["results"]["lce"]
    assert lce["agreement"] == 1.0 and lce["test_accuracy"] == pytest.approx(keras)
    assert set(card["files"]) >= {"model.tflite", "README.md"}
    # What a user needs to feed the model, read its outputs and train it further.
    usage = card["usage"]
    names = load_dataset("fashion_mnist", data_dir=tiny_data_dir).class_names
    assert usage["class_names"] == list(names[:4])  # the tiny data's 4 classes
    assert "logits" in usage["output"] and "[8, 8, 1]" in usage["input"]
    assert "uncompiled" in usage["continue_training"]
    assert card["data"] == {
        "source": "fashion-mnist",
        "format": "IDX",
        "test_images": 80,
        "note": None,
    }

    with pretrained.pretrained_scope():
        zoo.register_pretrained(
            "tiny_fmnist",
            factory="mlp_meta",
            kwargs=card["kwargs"],
            directory=out / "tiny_fmnist",
        )
        model = zoo.mlp_meta(**card["kwargs"], weights="tiny_fmnist")
        reloaded = zoo.load_pretrained("tiny_fmnist")
    assert "tiny_fmnist" not in zoo.pretrained_models()
    images = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)
    np.testing.assert_allclose(model(images), reloaded(images), atol=1e-5)
    # Per-class accuracy, against NumPy on the shipped model's predictions.
    test = load_dataset("fashion_mnist", data_dir=tiny_data_dir)
    predicted = reloaded.predict(test.x_test, verbose=0).argmax(-1)
    expected = {
        name: np.mean(predicted[test.y_test == c] == c)
        for c, name in enumerate(test.class_names)
        if np.any(test.y_test == c)
    }
    per_class = card["results"]["per_class_accuracy"]
    assert list(per_class) == list(expected)
    np.testing.assert_allclose(list(per_class.values()), list(expected.values()))
    assert np.mean(predicted == test.y_test) == pytest.approx(keras)


def test_package_refuses_unfinished_runs_and_unknown_commands(
    tmp_path, tiny_data_dir, capsys
):
    (tmp_path / "empty").mkdir()
    assert main(["package", str(tmp_path / "empty"), "--name", "x"]) == 2
    error = capsys.readouterr().err
    assert "no summary.json" in error and error.count("\n") == 1

    run_dir, _ = train_tiny(tmp_path, tiny_data_dir)
    (run_dir / "commands.txt").unlink()
    assert main(["package", str(run_dir), "--name", "x"]) == 2
    assert "--command" in capsys.readouterr().err

    summary = json.loads((run_dir / "summary.json").read_text())
    summary["config"]["model"] = "mlp_float"
    (run_dir / "summary.json").write_text(json.dumps(summary))
    assert main(["package", str(run_dir), "--name", "x"]) == 2
    assert "trained 'mlp_float'; pretrained models are" in capsys.readouterr().err


def test_card_of_a_run_started_from_another_covers_both(tmp_path, tiny_data_dir):
    first, first_argv = train_tiny(tmp_path, tiny_data_dir)
    second = tmp_path / "fine-tune"
    second_argv = [
        "train", "--dataset", "fashion_mnist", "--epochs", "1", "--lr", "0.001",
        "--hidden-units", "32", "32", "--batch-size", "40", "--data-dir",
        str(tiny_data_dir), "--run-dir", str(second), "--initial-weights", str(first),
        "--quiet",
    ]  # fmt: skip
    assert main(second_argv) == 0
    out = tmp_path / "models"
    assert (
        main(["package", str(second), "--name", "tuned", "--output-dir", str(out)]) == 0
    )
    card = json.loads((out / "tuned" / "model_card.json").read_text())
    assert card["epochs"] == 3
    assert card["initial_weights"] == str(first)
    assert card["command"].splitlines() == [
        "python -m training " + " ".join(argv) for argv in (first_argv, second_argv)
    ]
    first_summary = json.loads((first / "summary.json").read_text())
    second_summary = json.loads((second / "summary.json").read_text())
    assert card["wall_time_s"] == pytest.approx(
        first_summary["wall_time_s"] + second_summary["wall_time_s"], abs=0.11
    )
    assert card["machines"] == {
        cpu_description(): pytest.approx(card["wall_time_s"], abs=0.11)
    }


def test_card_of_a_run_continued_from_a_pretrained_model_covers_its_history(
    tmp_path, tiny_data_dir
):
    first, first_argv = train_tiny(tmp_path, tiny_data_dir)
    out = tmp_path / "models"
    assert (
        main(["package", str(first), "--name", "tiny_base", "--output-dir", str(out)])
        == 0
    )
    base = json.loads((out / "tiny_base" / "model_card.json").read_text())
    second = tmp_path / "continued"
    second_argv = [
        "train", "--dataset", "fashion_mnist", "--epochs", "1", "--lr", "0.001",
        "--hidden-units", "32", "32", "--batch-size", "40", "--data-dir",
        str(tiny_data_dir), "--run-dir", str(second), "--initial-weights", "tiny_base",
        "--quiet",
    ]  # fmt: skip
    with pretrained.pretrained_scope():
        zoo.register_pretrained(
            "tiny_base", factory="mlp_meta", kwargs=base["kwargs"],
            directory=out / "tiny_base",
        )  # fmt: skip
        assert main(second_argv) == 0
        # Packaged under the same name: the card is read before it is replaced.
        assert (
            main(["package", str(second), "--name", "tiny_base", "--output-dir",
                  str(out), "--overwrite"]) == 0
        )  # fmt: skip
    card = json.loads((out / "tiny_base" / "model_card.json").read_text())
    assert card["epochs"] == 3 and card["initial_weights"] == "tiny_base"
    assert card["command"].splitlines() == [
        "python -m training " + " ".join(argv) for argv in (first_argv, second_argv)
    ]
    second_summary = json.loads((second / "summary.json").read_text())
    assert card["wall_time_s"] == pytest.approx(
        base["wall_time_s"] + second_summary["wall_time_s"], abs=0.11
    )
    # The pretrained model's time, from its card, and the continuation's.
    assert card["machines"] == {
        cpu_description(): pytest.approx(card["wall_time_s"], abs=0.11)
    }
    earlier = card["continued_from"]
    assert earlier["name"] == "tiny_base" and earlier["epochs"] == 2
    assert earlier["card_sha256"] == base["card_sha256"]
    assert earlier["keras_test_accuracy"] == base["results"]["keras_test_accuracy"]
    assert card["results"]["keras_test_accuracy"] == pytest.approx(
        second_summary["final_accuracy"]["fashion_mnist"], abs=1e-6
    )


def test_a_permuted_sequence_is_packaged_with_its_matrix_and_permutations(
    tmp_path, tiny_data_dir
):
    # The paper's Fig. 2 model: the card lets users continue the sequence.
    run_dir = train_tiny_permuted(tmp_path, tiny_data_dir)
    out = tmp_path / "models"
    assert main(["package", str(run_dir), "--name", "tiny_pmnist", "--output-dir",
                 str(out)]) == 0  # fmt: skip
    card = json.loads((out / "tiny_pmnist" / "model_card.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert card["protocol"]["name"] == "permuted"
    assert card["protocol"]["evaluated_task"] == "task_2"
    assert card["protocol"]["permutations"]["seed"] == 3
    assert card["sequence"]["accuracy_matrix"] == summary["accuracy_matrix"]
    assert card["sequence"]["tasks"] == ["task_1", "task_2"]
    # Measured on the last task's permuted test images, with the weights and BatchNorm
    # state the run evaluated it with last.
    keras = card["results"]["keras_test_accuracy"]
    assert keras == pytest.approx(summary["final_accuracy"]["task_2"], abs=1e-6)
    assert card["results"]["lce"]["agreement"] == 1.0
    readme = (out / "tiny_pmnist" / "README.md").read_text()
    first_row = " | ".join(f"{100 * a:.2f} %" for a in summary["accuracy_matrix"][0])
    assert f"| task_1 | {first_row} |" in readme
    # Every task's BatchNorm state ships: with its own, each task scores what the run
    # measured after the last task (the matrix's last row, the paper's protocol).
    shipped = card["task_batch_norm"]
    assert shipped["tasks"] == ["task_1", "task_2"]
    assert shipped["recalibrated_batches"] == 0
    np.testing.assert_allclose(
        list(shipped["keras_test_accuracy"].values()),
        summary["accuracy_matrix"][-1],
        atol=1e-6,
    )
    tasks = restore_run(run_dir).eval_tasks
    with pretrained.pretrained_scope():
        zoo.register_pretrained(
            "tiny_pmnist",
            factory="mlp_meta",
            kwargs=card["kwargs"],
            directory=out / "tiny_pmnist",
        )
        for task, expected in zip(tasks, summary["accuracy_matrix"][-1]):
            model = zoo.load_pretrained("tiny_pmnist", task=task.name)
            logits = model.predict(task.test_images(), verbose=0)
            assert np.mean(logits.argmax(-1) == task.y_test) == pytest.approx(
                expected, abs=1e-6
            )


def test_an_older_card_is_brought_up_to_date_without_touching_the_model(
    tmp_path, tiny_data_dir, capsys
):
    run_dir, argv = train_tiny(tmp_path, tiny_data_dir)
    out = tmp_path / "models"
    assert main(["package", str(run_dir), "--name", "tiny", "--output-dir",
                 str(out)]) == 0  # fmt: skip
    directory = out / "tiny"
    today = json.loads((directory / "model_card.json").read_text())
    # A card written before cards held usage, data and per-class accuracies: strip
    # them and seal it again, as the cards of that time were.
    old = json.loads(json.dumps(today))
    for key in ("usage", "data"):
        old.pop(key)
    old["results"].pop("per_class_accuracy")
    (directory / "model_card.json").write_text(json.dumps(old))
    zoo.publishing.reseal_pretrained(directory)
    model_files = {
        rel: (directory / rel).read_bytes()
        for rel in old["files"]
        if rel != "README.md"
    }

    code = main(["package", str(directory), "--data-dir", str(tiny_data_dir)])
    assert code == 0 and f"Wrote {directory}" in capsys.readouterr().out
    card = zoo.model_directory.verify_pretrained(directory)
    for key in ("usage", "data", "results", "command", "epochs", "budget", "kwargs"):
        assert card[key] == today[key], key
    assert {rel: (directory / rel).read_bytes() for rel in model_files} == model_files
    assert "Keras test accuracy per class" in (directory / "README.md").read_text()

    # Another copy of the data gives another accuracy: refused, in one line, and the
    # directory stays valid.
    assert card["results"]["keras_test_accuracy"] > 0.5
    other = tmp_path / "other-data"
    shutil.copytree(tiny_data_dir / "fashion-mnist", other / "fashion-mnist")
    labels = other / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    rotated = (read_idx(labels) + 1) % 4  # the tiny data's 4 classes, all relabelled
    with gzip.open(labels, "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + len(rotated).to_bytes(4, "big"))
        f.write(rotated.astype(np.uint8).tobytes())
    assert main(["package", str(directory), "--data-dir", str(other)]) == 2
    error = capsys.readouterr().err
    assert "another copy of the dataset" in error and error.count("\n") == 1
    assert zoo.model_directory.verify_pretrained(directory) == card


def test_recalibrated_statistics_are_shipped_with_both_accuracies(
    tmp_path, tiny_data_dir
):
    # `--recalibrate-bn N`: the shipped BatchNorm statistics are those re-estimated from
    # N training batches of the evaluated task; the card keeps the run's own accuracy.
    run_dir = train_tiny_permuted(tmp_path, tiny_data_dir)
    out = tmp_path / "models"
    assert main(["package", str(run_dir), "--name", "plain", "--output-dir",
                 str(out)]) == 0  # fmt: skip
    assert main(["package", str(run_dir), "--name", "recal", "--output-dir", str(out),
                 "--recalibrate-bn", "2"]) == 0  # fmt: skip
    plain = json.loads((out / "plain" / "model_card.json").read_text())
    card = json.loads((out / "recal" / "model_card.json").read_text())
    assert "batch_norm_statistics" not in plain
    statistics = card["batch_norm_statistics"]
    assert statistics["recalibrated_batches"] == 2
    assert statistics["task"] == "task_2"
    assert statistics["keras_test_accuracy_as_trained"] == pytest.approx(
        plain["results"]["keras_test_accuracy"], abs=1e-6
    )
    assert card["results"]["lce"]["agreement"] == 1.0
    # The shipped moving statistics are the mean of two training batches' statistics
    # under the final weights: the first BatchNorm's mean is that of the first layer's
    # pre-activations over those 80 permuted training images.
    restored = restore_run(run_dir)
    task = restored.eval_tasks[-1]
    batches = recalibration_batches(restored.config, task, 1, count=2)
    images = np.concatenate([x for x, _ in batches.as_numpy_iterator()])
    shipped = load_saved_model(out / "recal" / "saved_model")
    kernel = next(w for w in shipped.weights if "kernel" in w.name).numpy()
    pre = images.reshape(len(images), -1) @ np.sign(kernel)
    bn = next(w for w in shipped.weights if "moving_mean" in w.name).numpy()
    np.testing.assert_allclose(bn, pre.mean(axis=0), rtol=1e-4, atol=1e-4)
    readme = (out / "recal" / "README.md").read_text()
    as_trained = 100 * statistics["keras_test_accuracy_as_trained"]
    assert f"the Keras test accuracy is {as_trained:.2f} %" in readme
    # The first task's shipped state is re-estimated too, from two of its own
    # training batches (unpermuted images) under the final weights.
    assert card["task_batch_norm"]["recalibrated_batches"] == 2
    first = restored.eval_tasks[0]
    images = np.concatenate(
        [
            x
            for x, _ in recalibration_batches(
                restored.config, first, 0, count=2
            ).as_numpy_iterator()
        ]
    )
    checkpoint = tf.train.load_checkpoint(str(out / "recal" / "task_batch_norm"))
    mean = checkpoint.get_tensor("task_1/bn_1/moving_mean")
    pre = images.reshape(len(images), -1) @ np.sign(kernel)
    np.testing.assert_allclose(mean, pre.mean(axis=0), rtol=1e-4, atol=1e-4)


def test_package_refuses_a_negative_recalibration(tmp_path, tiny_data_dir, capsys):
    run_dir, _ = train_tiny(tmp_path, tiny_data_dir)
    code = main(["package", str(run_dir), "--name", "x", "--output-dir",
                 str(tmp_path / "models"), "--recalibrate-bn", "-1"])  # fmt: skip
    assert code == 2
    assert "recalibrate_bn must be 0 or more" in capsys.readouterr().err
