"""The README's generated sections (`tools/readme_tables.py`) equal what their renderers
make of the committed results files: a number in a generated table has a file behind
it. Every renderer registered in `SECTIONS` is checked, whatever it renders."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools import readme_tables  # noqa: E402
from training import paper  # noqa: E402


@pytest.mark.parametrize("name", sorted(readme_tables.SECTIONS))
def test_readme_section_is_generated_from_the_results_files(name):
    text = readme_tables.README.read_text()
    assert readme_tables.read_section(text, name) == readme_tables.render(name), (
        f"README section {name!r} differs from its results files: run "
        f"`python benchmarks/paper.py table` (and commit the results files it reads)."
    )


def test_a_readme_number_without_a_results_file_fails(tmp_path):
    # A repository whose README shows a row no results file backs.
    (tmp_path / "README.md").write_text(
        "# x\n\n<!-- reproduction:start -->\n| fig2 | 99.9 % |\n<!-- reproduction:end -->\n"
    )
    only = ["reproduction"]
    assert readme_tables.stale_sections(root=tmp_path, names=only) == only
    assert readme_tables.update_readme(root=tmp_path, names=only) == only
    text = (tmp_path / "README.md").read_text()
    assert "99.9" not in text and "not run yet" in text
    assert text.startswith("# x\n\n<!-- reproduction:start -->\n|")
    assert readme_tables.stale_sections(root=tmp_path, names=only) == []
    assert readme_tables.update_readme(root=tmp_path, names=only) == []


def test_results_files_reach_the_table(tmp_path):
    shutil.copy(readme_tables.README, tmp_path / "README.md")
    results = tmp_path / readme_tables.PAPER_RESULTS
    results.mkdir(parents=True)
    record = {
        "experiment": "fig2",
        "scale": "quick",
        "scale_fields": {"hidden_units": [1024, 1024], "epochs": 10},
        "precisions": ["bf16"],
        "noise_rule": "Welch.",
        "runs": {
            "m1.35": {
                "seeds": {
                    "0": {"status": "finished"},
                    "1": {"status": "finished"},
                    "2": {"status": "partial"},
                },
                "statistics": {
                    "seeds_finished": 2,
                    "mean_accuracy": {"mean": 0.8661, "std": 0.0042, "n": 2},
                    "wall_time_s": 5400.0,
                },
            },
            "m1": {
                "seeds": {"0": {"status": "finished"}, "1": {"status": "finished"}},
                "statistics": {
                    "seeds_finished": 2,
                    "mean_accuracy": {"mean": 0.96921, "std": 0.00049, "n": 2},
                    "wall_time_s": 600.0,
                },
            },
            "m0": {"seeds": {}, "statistics": {"seeds_finished": 0}},
        },
        "comparisons": [
            {"a": "m1.35", "b": "m0", "what": "w", "difference": None},
        ],
    }
    (results / "fig2-quick.json").write_text(json.dumps(record))
    body = readme_tables.render("reproduction", root=tmp_path)
    row = next(line for line in body.splitlines() if "m1.35" in line and "bf16" in line)
    assert "86.6 ± 0.4 %" in row and "2 (+1 partial)" in row and "90 min" in row
    assert "quick (hidden_units 1024x1024, epochs 10), bf16" in row
    # A spread that rounds to 0.0 points is shown with two decimals, not as "± 0.0".
    row = next(line for line in body.splitlines() if line.startswith("| m1 |"))
    assert "| 96.92 ± 0.05 % |" in row
    # fig2 has no paper-scale file: its command is listed.
    assert "not run yet: `python benchmarks/paper.py run fig2 --scale paper" in body
    assert "| m0 |" not in body  # no seed at all: no row
    assert "difference of the means" not in body  # no comparison with data
    # A run whose settings have changed since it ran says so in its row.
    config = paper.run_config("fig2", "m1.35", scale="quick", seed=0).to_json()
    record["runs"]["m1.35"]["seeds"]["0"]["config"] = dict(config, weight_decay=0.0)
    record["runs"]["m1.35"]["seeds"]["1"]["config"] = dict(config, seed=1)
    (results / "fig2-quick.json").write_text(json.dumps(record))
    body = readme_tables.render("reproduction", root=tmp_path)
    row = next(line for line in body.splitlines() if "m1.35" in line and "bf16" in line)
    assert (
        "bf16; run with weight_decay 0.0 (the experiment's setting has changed since)"
        in row
    )
    (results / "broken.json").write_text("{}")
    with pytest.raises(ValueError, match="not a results file"):
        readme_tables.render("reproduction", root=tmp_path)


def test_comparisons_show_the_re_estimated_statistics_beside_the_paper_protocol(
    tmp_path,
):
    from benchmarks import paper as suite

    results = tmp_path / readme_tables.PAPER_RESULTS
    results.mkdir(parents=True)

    def seeds(pairs):
        return {
            str(i): {
                "status": "finished",
                "mean_accuracy": p,
                **({"recalibrated_bn": {"mean_accuracy": r}} if r else {}),
            }
            for i, (p, r) in enumerate(pairs)
        }

    runs = {
        "m1.35": {"seeds": seeds([(0.43, 0.976), (0.48, 0.975)])},
        "m0": {"seeds": seeds([(0.25, 0.33), (0.24, 0.34)])},
        "m1": {"seeds": seeds([(0.30, None), (0.31, None)])},
    }
    for entry in runs.values():
        values = [s["mean_accuracy"] for s in entry["seeds"].values()]
        entry["statistics"] = {
            "seeds_finished": 2,
            "mean_accuracy": {"mean": float(np.mean(values)), "std": 0.01, "n": 2},
            "wall_time_s": 60.0,
        }
    pairs = [("m1.35", "m0", "metaplasticity"), ("m1", "m0", "m = 1")]
    record = {
        "experiment": "fig2",
        "scale": "quick",
        "scale_fields": {"epochs": 10},
        "precisions": ["float32"],
        "noise_rule": "Welch.",
        "runs": runs,
        "comparisons": [suite.compare(runs, a, b, what) for a, b, what in pairs],
    }
    (results / "fig2-quick.json").write_text(json.dumps(record))
    body = readme_tables.render("reproduction", root=tmp_path)
    assert "| with re-estimated BatchNorm statistics (beyond the paper) |" in body
    row = next(line for line in body.splitlines() if "m1.35 − m0" in line)
    beyond = suite.compare(
        runs, "m1.35", "m0", "", metric="recalibrated_bn_mean_accuracy"
    )
    expected = (
        f"| {100 * beyond['difference']:+.1f} points "
        f"(Welch p = {beyond['p_value']:.2g}); within the noise: no |"
    )
    assert row.endswith(expected) and beyond["p_value"] < 0.05
    # Runs without re-estimated statistics: a dash, not a test.
    row = next(line for line in body.splitlines() if "m1 − m0" in line)
    assert row.endswith("| — |")


def test_markers_must_be_there_once_and_in_order():
    good = "a\n<!-- s:start -->\nold\n<!-- s:end -->\nb"
    assert readme_tables.read_section(good, "s") == "old"
    assert readme_tables.replace_section(good, "s", "new\n") == (
        "a\n<!-- s:start -->\nnew\n<!-- s:end -->\nb"
    )
    for bad in (
        "a",
        "<!-- s:start --><!-- s:start --><!-- s:end -->",
        "<!-- s:end --> <!-- s:start -->",
    ):
        with pytest.raises(ValueError, match="s:"):
            readme_tables.read_section(bad, "s")
    with pytest.raises(ValueError, match="section must be one of"):
        readme_tables.render("nothing")


def test_sections_register_by_name():
    @readme_tables.section("probe_table")
    def probe(root):
        return "| x |\n"

    try:
        assert readme_tables.render("probe_table") == "| x |"
    finally:
        del readme_tables.SECTIONS["probe_table"]


def test_pretrained_table_says_how_each_model_was_trained_and_measured():
    card = {
        "dataset": "mnist",
        "data_note": None,
        "protocol": "permuted",
        "tasks": 6,
        "epochs_per_task": 40,
        "evaluated_task": "task_6",
        "epochs": 240,
        "meta": 1.35,
        "learning_rate": 0.005,
        "batch_size": 100,
        "augment": None,
        "precision": "bf16",
        "runs": 1,
        "wall_time_s": 36000.0,
        "kwargs": {"hidden_units": [4096, 4096]},
    }
    row = {
        "name": "mlp_meta_pmnist",
        "factory": "zoo.mlp_meta(weights='mlp_meta_pmnist')",
        "default": False,
        "samples": 1000,
        "total": 10000,
        "keras_accuracy": 0.9712,
        "lce_accuracy": 0.9712,
        "argmax_agreement": 1.0,
        "card": card,
        "bytes": {"saved_model": 226_000_000, "flatbuffer": 2_600_000},
    }
    cifar = {
        **row,
        "name": "vgg",
        "factory": "zoo.vgg16_meta(pretrained=True)",
        "default": True,
        "samples": 10000,
        "card": {
            **card,
            "dataset": "cifar10",
            "protocol": "sequence",
            "runs": 2,
            "epochs": 200,
            "lr_schedule": "cosine",
            "data_note": "the cifar10 images of x.tar.gz are a JPEG quality 75 copy",
            "kwargs": {},
        },
    }
    record = {"date": "2026-12-03T00:00:00+00:00", "command": "c", "rows": [row, cifar]}
    lines = readme_tables.render_pretrained(record).splitlines()
    assert lines[2] == (
        "| `zoo.mlp_meta(weights='mlp_meta_pmnist')`, 4096-4096 | 6 permuted mnist "
        "tasks × 40 epochs (measured on task_6), m = 1.35, lr 0.005, batch 100, bf16; "
        "10.0 h wall time | 97.12 % (1,000 of 10,000 test images) | 97.12 % "
        "(100.00 %) | 226.0 MB, 2.6 MB |"
    )
    assert lines[3].startswith("| `zoo.vgg16_meta(pretrained=True)`: `vgg` | cifar10, "
                               "200 epochs in 2 runs")  # fmt: skip
    assert ", lr 0.005 cosine-decayed to 0, batch 100," in lines[3]
    assert "| 97.12 % |" in lines[3]  # the whole test split: no count
    assert lines[-1].endswith(
        "Note: The cifar10 images of x.tar.gz are a JPEG quality 75 copy."
    )
    assert "Not measured yet" in readme_tables.render_pretrained(None)
    # A model shipping every task's BatchNorm state: the mean over its tasks too.
    tasks = {"task_1": 0.9, "task_2": 0.96}
    row = {**row, "task_accuracy": tasks, "mean_task_accuracy": 0.93}
    lines = readme_tables.render_pretrained({**record, "rows": [row]}).splitlines()
    assert (
        "| 97.12 % (1,000 of 10,000 test images); its 2 tasks, each with its own "
        "BatchNorm state (`task=`): mean 93.00 % |" in lines[2]
    )
