"""`benchmarks/continue_learning.py` on the tiny generated data of `conftest.py`: a
pretrained model learns a new task per m and seed, from the same weights each time;
the statistics over the seeds, the comparison between m, the README table rendered
from the results file, and one-line errors."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import zoo  # noqa: E402
from benchmarks import continue_learning  # noqa: E402
from tools import readme_tables  # noqa: E402
from training import MetaplasticAdam  # noqa: E402
from training.data import load_dataset  # noqa: E402
from zoo import pretrained  # noqa: E402

KWARGS = {"hidden_units": (16,), "input_shape": (8, 8, 1), "num_classes": 10}
CARD = {
    "factory": "mlp_meta",
    "kwargs": KWARGS,
    "dataset": "fashion_mnist",
    "protocol": "single task",
    "hyperparameters": {"learning_rate": 0.01, "meta": 1.0, "batch_size": 40},
    "command": "pytest tests/test_continue_learning.py",
    "epochs": 3,
    "wall_time_s": 1.0,
    "budget": "a few steps, for tests",
}
NAME = "tiny_continue_fmnist"
TINY = ["--epochs", "1", "--batch-size", "40", "--recalibrate-batches", "2"]


@pytest.fixture(scope="module", autouse=True)
def _registrations_undone():
    """The benchmark registers the model directory it is given: undone after the module,
    so other tests may register the same names."""
    with pretrained.pretrained_scope():
        yield


@pytest.fixture(scope="module")
def pretrained_dir(tiny_data_dir, tmp_path_factory):
    """A tiny mlp_meta trained on the tiny Fashion-MNIST, packaged without LCE."""
    data = load_dataset("fashion_mnist", data_dir=tiny_data_dir)
    tf.keras.utils.set_random_seed(0)
    model = zoo.mlp_meta(**KWARGS)
    model.compile(
        MetaplasticAdam(0.01, meta=1.0),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = data.x_train.astype("float32") / 255.0
    model.fit(x, data.y_train, batch_size=40, epochs=3, verbose=0)
    root = tmp_path_factory.mktemp("saved_models")
    zoo.package_pretrained(model, name=NAME, card=CARD, directory=root, lce=False)
    return root / NAME


@pytest.fixture(scope="module")
def two_seeds(pretrained_dir, tiny_data_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("continue") / "continue.json"
    arguments = ["--name", str(pretrained_dir), "--data-dir", str(tiny_data_dir)]
    arguments += [*TINY, "--seeds", "0", "1", "--output", str(output), "--verbose", "0"]
    assert continue_learning.main(arguments) == 0
    return arguments, json.loads(output.read_text())


def test_every_m_learns_task_b_once_per_seed_from_the_same_weights(two_seeds):
    _, record = two_seeds
    assert record["task_a"] == "fashion_mnist" and record["task_b"] == "mnist"
    assert record["machine"]["processor"] and record["machine"]["cpus"] >= 1
    assert list(record["runs"]) == ["m2.5", "m0"]
    for seed in ("0", "1"):
        before = {
            run["seeds"][seed]["task_a_before"] for run in record["runs"].values()
        }
        assert len(before) == 1  # both m start from the pretrained weights
    for run in record["runs"].values():
        assert sorted(run["seeds"]) == ["0", "1"]
        for entry in run["seeds"].values():
            assert entry["forgetting"] == pytest.approx(
                entry["task_a_before"] - entry["task_a_after"]
            )
            assert len(entry["train_loss"]) == 1 and 0.0 <= entry["task_b"] <= 1.0
        for metric in continue_learning.SUMMARIZED:
            values = [entry[metric] for entry in run["seeds"].values()]
            assert run["stats"][metric]["n"] == 2
            assert run["stats"][metric]["mean"] == pytest.approx(np.mean(values))
            assert run["stats"][metric]["std"] == pytest.approx(np.std(values, ddof=1))


def test_first_m_is_compared_with_the_others_by_welch(two_seeds):
    from scipy import stats

    _, record = two_seeds
    runs = record["runs"]
    assert [(c["a"], c["b"], c["metric"]) for c in record["comparisons"]] == [
        ("m2.5", "m0", "task_a_after"),
        ("m2.5", "m0", "task_b"),
    ]
    for comparison in record["comparisons"]:
        a, b = (
            [s[comparison["metric"]] for s in runs[r]["seeds"].values()]
            for r in ("m2.5", "m0")
        )
        assert comparison["difference"] == pytest.approx(np.mean(a) - np.mean(b))
        if comparison["within_noise"] is None:
            assert comparison["reason"] == "no spread in either run"
        else:
            p_value = stats.ttest_ind(a, b, equal_var=False).pvalue
            assert comparison["p_value"] == pytest.approx(p_value)


def test_a_seed_gives_the_same_numbers_alone(two_seeds, tmp_path):
    arguments, record = two_seeds
    output = tmp_path / "alone.json"
    alone = [*arguments[: arguments.index("--seeds")], "--seeds", "1"]
    assert (
        continue_learning.main([*alone, "--output", str(output), "--verbose", "0"]) == 0
    )
    again = json.loads(output.read_text())
    for name, run in again["runs"].items():
        for metric in ("task_a_before", "task_a_after", "task_b"):
            assert (
                run["seeds"]["1"][metric] == record["runs"][name]["seeds"]["1"][metric]
            )


def test_readme_table_shows_each_m_with_its_seeds_and_the_verdict(two_seeds):
    _, record = two_seeds
    table = readme_tables.render_continue_learning([record])
    rows = [line for line in table.splitlines() if line.startswith("| mnist |")]
    assert len(rows) == 2
    stats = record["runs"]["m0"]["stats"]
    cells = rows[1].split(" | ")
    assert cells[1:3] == ["0", "2"]
    before = stats["task_a_before"]  # the same test set and weights for every seed
    assert before["std"] == 0 and cells[3] == f"{100 * before['mean']:.2f} %"
    mean, std = 100 * stats["task_b"]["mean"], 100 * stats["task_b"]["std"]
    assert cells[6] in (f"{mean:.1f} ± {std:.1f} %", f"{mean:.2f} ± {std:.2f} %")
    assert "Task B mnist, m = 2.5 against m = 0: task A after" in table
    assert record["command"] in table
    assert "Not run yet" in readme_tables.render_continue_learning([])


def test_bad_input_is_one_line(pretrained_dir, tiny_data_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        continue_learning.main(["--seeds", "0", "0"])
    assert info.value.code == 2
    assert "--seeds must not repeat a seed" in capsys.readouterr().err
    code = continue_learning.main(
        ["--name", str(tmp_path / "missing"), "--data-dir", str(tiny_data_dir)]
    )
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.startswith("error: ") and "\n" not in error
    code = continue_learning.main(
        ["--name", str(pretrained_dir), "--data-dir", str(tiny_data_dir)]
        + ["--new-task", "cifar10", "--output", str(tmp_path / "x.json")]
    )
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.startswith("error: ") and "\n" not in error
    assert not (tmp_path / "x.json").exists()


def test_permuted_task_b_draws_its_permutation_from_the_seed(
    pretrained_dir, tiny_data_dir, tmp_path
):
    output = tmp_path / "permuted.json"
    arguments = ["--name", str(pretrained_dir), "--data-dir", str(tiny_data_dir)]
    arguments += [*TINY, "--new-task", "permuted", "--metas", "1", "--seeds", "3"]
    assert continue_learning.main([*arguments, "--output", str(output)]) == 0
    record = json.loads(output.read_text())
    assert record["task_b"] == "fashion_mnist permuted"
    (entry,) = record["runs"]["m1"]["seeds"].values()
    assert entry["task_b_name"] == "fashion_mnist permuted (seed 3)"
    assert record["comparisons"] == []  # one m: nothing to compare
    table = readme_tables.render_continue_learning([record])
    assert "| fashion_mnist permuted | 1 | 1 |" in table
