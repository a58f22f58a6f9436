"""The paper's reproduction suite (`benchmarks/paper.py`) end to end, on tiny runs of
the experiments' configurations (2 tasks x 1 epoch, 16-16 units) over the tiny
generated IDX data of `conftest.py`: training, skipping finished runs, partial runs,
statistics, comparisons, figures, and one-line errors."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import paper as suite  # noqa: E402
from training import paper  # noqa: E402
from training.rundir import NOT_RECORDED  # noqa: E402
from training.runner import run  # noqa: E402
from zoo.precision import cpu_description  # noqa: E402

TINY = dict(num_tasks=2, epochs=1, hidden_units=(16, 16), batch_size=40)


@pytest.fixture(scope="module")
def fig2(tmp_path_factory, tiny_data_dir):
    """Fig. 2 with m = 0 and 1.35, seeds 0 and 1 finished, seed 2 of m = 0 stopped
    after its first epoch (a run in progress)."""
    root = tmp_path_factory.mktemp("suite")
    runs_root, results = root / "runs", root / "results"
    partial = paper.run_config(
        "fig2",
        "m0",
        scale="quick",
        seed=2,
        data_dir=str(tiny_data_dir),
        run_dir=str(suite.run_dir_of("fig2", "m0", "quick", 2, runs_root)),
        **TINY,
    )
    run(partial, verbose=0, stop_after_epochs=1)
    path, failures = suite.run_experiment(
        "fig2",
        scale="quick",
        seeds=[0, 1],
        runs=["m0", "m1.35"],
        data_dir=str(tiny_data_dir),
        runs_root=runs_root,
        results_dir=results,
        fields=TINY,
        verbose=0,
    )
    assert failures == []
    return dict(
        path=path,
        record=json.loads(path.read_text()),
        runs_root=runs_root,
        results=results,
        data_dir=tiny_data_dir,
    )


def test_results_file_holds_every_seed_and_the_statistics(fig2):
    record = fig2["record"]
    assert fig2["path"] == fig2["results"] / "fig2-quick.json"
    assert record["experiment"] == "fig2" and record["scale"] == "quick"
    assert record["figure"] == paper.experiment("fig2").figure
    assert record["authors_command"].startswith("main.py --net bnn")
    assert record["command"].startswith(
        "python benchmarks/paper.py run fig2 --scale quick"
    )
    assert record["precisions"] == ["float32"]
    assert record["budget"]["runs_finished"] == 4
    assert record["budget"]["runs_partial"] == 1
    assert record["budget"]["wall_time_s"] > 0
    assert record["host"]["cpus"] and record["machine"]
    assert record["host"]["processor"] == cpu_description()
    assert sum(record["budget"]["machines"].values()) == pytest.approx(
        record["budget"]["wall_time_s"], abs=0.3
    )
    m0, m135 = record["runs"]["m0"], record["runs"]["m1.35"]
    assert set(record["runs"]) == set(paper.experiment("fig2").runs)
    assert record["runs"]["m0.5"]["seeds"] == {}  # not run
    for entry in (m0, m135):
        for seed in ("0", "1"):
            s = entry["seeds"][seed]
            assert s["status"] == "finished"
            assert set(s["final_accuracy"]) == {"task_1", "task_2"}
            assert s["mean_accuracy"] == pytest.approx(
                sum(s["final_accuracy"].values()) / 2
            )
            assert -1 <= s["bwt"] <= 1 and s["acc"] == pytest.approx(s["mean_accuracy"])
            assert s["completed_epochs"] == s["total_epochs"] == 2
            assert s["machines"] == {cpu_description(): s["wall_time_s"]}
            assert s["config"]["precision"] == "float32"
            assert s["config"]["hidden_units"] == [16, 16] and s["config"][
                "seed"
            ] == int(seed)
            # Beyond the paper: statistics re-estimated from 20 batches; the paper's
            # protocol evaluated again from the checkpoint agrees with the run.
            recal = s["recalibrated_bn"]
            assert recal["batches"] == 20 and 0 <= recal["mean_accuracy"] <= 1
            assert recal["paper_protocol_check_max_abs_diff"] < 1e-6
        stats = entry["statistics"]
        values = [entry["seeds"][k]["mean_accuracy"] for k in ("0", "1")]
        assert stats["seeds_finished"] == 2
        assert stats["machines"] == {
            cpu_description(): pytest.approx(
                sum(entry["seeds"][k]["wall_time_s"] for k in ("0", "1")), abs=0.11
            )
        }
        assert stats["mean_accuracy"]["n"] == 2
        assert stats["mean_accuracy"]["mean"] == pytest.approx(
            sum(values) / 2, abs=1e-6
        )
        assert stats["mean_accuracy"]["std"] == pytest.approx(
            abs(values[0] - values[1]) / 2**0.5, abs=1e-6
        )
        assert {"acc", "bwt", "recalibrated_bn_mean_accuracy"} <= set(stats)
        assert entry["paper"]["source"] == "not given in text"
        assert len(entry["curve"]["epochs"]) == 2
    # The run in progress is listed with how far it got, outside the statistics.
    partial = m0["seeds"]["2"]
    assert partial["status"] == "partial"
    assert (partial["completed_epochs"], partial["total_epochs"]) == (1, 2)
    assert "mean_accuracy" not in partial
    assert m0["statistics"]["seeds_partial"] == 1


def test_comparison_states_its_rule(fig2):
    record = fig2["record"]
    assert "Welch" in record["noise_rule"]
    comparison, *others = record["comparisons"]
    assert (comparison["a"], comparison["b"], comparison["n"]) == (
        "m1.35",
        "m0",
        [2, 2],
    )
    # m = 1 and m = 0.5 were not trained here: their comparisons say so.
    assert [(c["a"], c["b"]) for c in others] == [
        ("m1", "m0"),
        ("m0.5", "m0"),
        ("m1.35", "m1"),
    ]
    for other in others:
        assert other["within_noise"] is None and other["difference"] is None
        assert other["reason"] == "a run has no finished seed"
    means = [
        record["runs"][r]["statistics"]["mean_accuracy"]["mean"]
        for r in ("m1.35", "m0")
    ]
    assert comparison["difference"] == pytest.approx(means[0] - means[1], abs=1e-5)
    if comparison["p_value"] is None:
        assert comparison["within_noise"] is None and comparison["reason"]
    else:
        assert comparison["within_noise"] == (comparison["p_value"] >= 0.05)


def test_figures_are_written(fig2):
    figures = [Path(p) for p in fig2["record"]["figures"]]
    assert {p.name for p in figures} == {"fig2-quick.png", "fig2-quick-histograms.png"}
    for path in figures:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    histograms = fig2["record"]["runs"]["m1.35"]["hidden_weights"]
    assert set(histograms) == {"dense_1", "dense_2"}  # the hidden layers


def test_finished_runs_are_skipped_and_partial_ones_resumed(fig2, capsys):
    before = fig2["record"]["runs"]["m1.35"]["seeds"]["0"]["wall_time_s"]
    path, failures = suite.run_experiment(
        "fig2",
        scale="quick",
        seeds=[0, 2],
        runs=["m0", "m1.35"],
        data_dir=str(fig2["data_dir"]),
        runs_root=fig2["runs_root"],
        results_dir=fig2["results"],
        fields=TINY,
        verbose=0,
    )
    out = capsys.readouterr().out
    assert failures == []
    assert "fig2 m1.35 seed 0 (quick): finished, skipped" in out
    assert "fig2 m0 seed 2 (quick): resuming after epoch 1/2" in out
    record = json.loads(path.read_text())
    assert record["runs"]["m1.35"]["seeds"]["0"]["wall_time_s"] == before
    assert record["runs"]["m0"]["statistics"]["seeds_finished"] == 3
    assert record["budget"]["runs_partial"] == 0
    # Post-hoc analyses of unchanged checkpoints are read from the last results file.
    assert "m1.35-seed0: re-estimating" not in out
    assert "m0-seed2: re-estimating" in out


def test_stream_with_joint_runs(tmp_path, tiny_data_dir):
    path, failures = suite.run_experiment(
        "stream_fmnist",
        scale="quick",
        seeds=[0],
        runs=["m2.5", "joint-m2.5"],
        data_dir=str(tiny_data_dir),
        runs_root=tmp_path / "runs",
        results_dir=tmp_path / "results",
        fields=TINY,
        verbose=0,
    )
    assert failures == []
    record = json.loads(path.read_text())
    stream = record["runs"]["m2.5"]
    assert stream["seeds"]["0"]["config"]["num_tasks"] == 2
    assert list(stream["seeds"]["0"]["final_accuracy"]) == ["test"]
    assert (
        "bwt" not in stream["seeds"]["0"]
        and "recalibrated_bn" not in stream["seeds"]["0"]
    )
    assert len(stream["curve"]["epochs"]) == 2  # after each subset
    assert record["runs"]["joint-m2.5"]["seeds"]["0"]["config"]["joint"] is True
    by_pair = {(c["a"], c["b"]): c for c in record["comparisons"]}
    stream_vs_joint = by_pair[("m2.5", "joint-m2.5")]
    assert stream_vs_joint["within_noise"] is None
    assert stream_vs_joint["reason"] == "fewer than 2 finished seeds"
    assert by_pair[("m2.5", "m0")]["reason"] == "a run has no finished seed"
    assert (tmp_path / "results" / "stream_fmnist-quick.png").exists()


def test_bad_input_is_one_line(tmp_path, capsys):
    assert suite.main(["collect", "fig9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: experiment must be one of") and "\n" not in err
    code = suite.main(
        ["collect", "fig2", "--scale", "quick", "--runs-root", str(tmp_path)]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no run directory of fig2" in err and "\n" not in err
    assert (
        suite.main(["run", "fig2", "--scale", "tiny", "--runs-root", str(tmp_path)])
        == 2
    )
    assert "scale must be one of" in capsys.readouterr().err
    assert (
        suite.main(["run", "fig2", "--runs", "m7", "--runs-root", str(tmp_path)]) == 2
    )
    assert "run must be one of" in capsys.readouterr().err


def test_comparisons_and_paper_values_name_real_runs():
    for name, pairs in suite.COMPARISONS.items():
        runs = paper.experiment(name).runs
        for a, b, _ in pairs:
            assert a in runs and b in runs
    for name, values in suite.PAPER_VALUES.items():
        for run_name, value in values.items():
            assert run_name in paper.experiment(name).runs
            assert value["source"] and value["note"]
    # Every run directory is where `python -m training paper` puts it (a run shared
    # with another experiment: in that experiment's directories).
    for name in paper.experiment_names():
        for run_name in paper.experiment(name).runs:
            expected = paper.run_config(name, run_name, scale="quick", seed=1).run_dir
            assert suite.run_dir_of(
                name, run_name, "quick", 1, Path("runs/paper")
            ) == Path(expected)
    entries = suite.catalog()
    assert [e["experiment"] for e in entries] == list(paper.experiment_names())
    assert all(
        e["command"].startswith("python benchmarks/paper.py run ") for e in entries
    )


def test_small_settings_are_written_as_themselves(fig2):
    # A weight decay of 1e-7 was once written as 0.0 (rounding to 6 decimals).
    m0 = fig2["record"]["runs"]["m0"]
    assert m0["fields"]["weight_decay"] == pytest.approx(1e-7)
    assert m0["seeds"]["0"]["config"]["weight_decay"] == pytest.approx(1e-7)


def _elsewhere(fig2, tmp_path, keep_seeds):
    """A copy of the fig2 results file beside run directories of `keep_seeds` only, as
    on a machine where the other seeds were trained and their directories are gone."""
    import shutil

    runs_root, results = tmp_path / "runs", tmp_path / "results"
    results.mkdir()
    shutil.copy(fig2["results"] / "fig2-quick.json", results / "fig2-quick.json")
    for run_name in ("m0", "m1.35"):
        for seed in keep_seeds:
            source = suite.run_dir_of(
                "fig2", run_name, "quick", seed, fig2["runs_root"]
            )
            target = suite.run_dir_of("fig2", run_name, "quick", seed, runs_root)
            shutil.copytree(source, target)
    return runs_root, results


def _collect(name, fig2, runs_root, results):
    return suite.collect(
        name,
        scale="quick",
        runs_root=runs_root,
        results_dir=results,
        data_dir=str(fig2["data_dir"]),
    )


def test_seeds_of_the_earlier_results_file_are_kept(fig2, tmp_path, capsys):
    before = json.loads((fig2["results"] / "fig2-quick.json").read_text())
    runs_root, results = _elsewhere(fig2, tmp_path, keep_seeds=[0])
    path = _collect("fig2", fig2, runs_root, results)
    record = json.loads(path.read_text())
    for run_name in ("m0", "m1.35"):
        old, new = before["runs"][run_name], record["runs"][run_name]
        finished = {k for k, e in old["seeds"].items() if e["status"] == "finished"}
        assert {k for k, e in new["seeds"].items() if e["status"] == "finished"} == (
            finished
        )
        assert "kept_from_results_file" not in new["seeds"]["0"]
        for seed in finished - {"0"}:
            entry = new["seeds"][seed]
            assert entry["kept_from_results_file"] is True
            assert entry["final_accuracy"] == old["seeds"][seed]["final_accuracy"]
        assert new["statistics"]["mean_accuracy"] == old["statistics"]["mean_accuracy"]
        # The curve still averages every finished seed, from their own curves.
        assert new["curve"]["seeds"] == len(finished)
        np.testing.assert_allclose(
            new["curve"]["mean"], old["curve"]["mean"], atol=2e-4
        )
    comparison = record["comparisons"][0]
    assert (comparison["a"], comparison["b"]) == ("m1.35", "m0")
    assert comparison["p_value"] == before["comparisons"][0]["p_value"]
    assert "left out" not in capsys.readouterr().out


def test_kept_seeds_from_before_machines_were_recorded_count_as_not_recorded(
    fig2, tmp_path
):
    runs_root, results = _elsewhere(fig2, tmp_path, keep_seeds=[0])
    earlier = json.loads((results / "fig2-quick.json").read_text())
    del earlier["runs"]["m0"]["seeds"]["1"]["machines"]
    (results / "fig2-quick.json").write_text(json.dumps(earlier))
    record = json.loads(_collect("fig2", fig2, runs_root, results).read_text())
    seeds = record["runs"]["m0"]["seeds"]
    assert "machines" not in seeds["1"]
    recorded = [
        s["wall_time_s"]
        for k, s in seeds.items()
        if k != "1" and s["status"] == "finished"
    ]
    assert record["runs"]["m0"]["statistics"]["machines"] == {
        cpu_description(): pytest.approx(sum(recorded), abs=0.11),
        NOT_RECORDED: seeds["1"]["wall_time_s"],
    }


def test_seeds_run_with_other_settings_are_left_out(fig2, tmp_path, capsys):
    runs_root, results = _elsewhere(fig2, tmp_path, keep_seeds=[0])
    earlier = json.loads((results / "fig2-quick.json").read_text())
    earlier["runs"]["m0"]["seeds"]["1"]["config"]["hidden_units"] = [8, 8]
    (results / "fig2-quick.json").write_text(json.dumps(earlier))
    path = _collect("fig2", fig2, runs_root, results)
    out = capsys.readouterr().out
    assert "m0 seed 1: the earlier results file's run used other settings " in out
    assert "(hidden_units); left out" in out
    record = json.loads(path.read_text())
    assert "1" not in record["runs"]["m0"]["seeds"]
    assert record["runs"]["m1.35"]["seeds"]["1"]["kept_from_results_file"] is True


def test_a_rerun_still_training_does_not_drop_the_finished_seed(fig2, tmp_path, capsys):
    # Seed 1 of m0 is trained again on this machine and has not finished (here: its
    # summary not written yet): the earlier results file's finished seed 1 counts.
    import shutil

    before = json.loads((fig2["results"] / "fig2-quick.json").read_text())
    runs_root, results = _elsewhere(fig2, tmp_path, keep_seeds=[0])
    rerun = suite.run_dir_of("fig2", "m0", "quick", 1, runs_root)
    shutil.copytree(
        suite.run_dir_of("fig2", "m0", "quick", 1, fig2["runs_root"]), rerun
    )
    (rerun / "summary.json").unlink()
    path = _collect("fig2", fig2, runs_root, results)
    assert "m0 seed 1: its rerun in " in capsys.readouterr().out
    record = json.loads(path.read_text())
    m0 = record["runs"]["m0"]
    entry = m0["seeds"]["1"]
    assert entry["status"] == "finished"
    assert entry["kept_from_results_file"] is True
    assert entry["rerun_in_progress"]["run_dir"].endswith("m0-seed1")
    assert (
        entry["final_accuracy"] == before["runs"]["m0"]["seeds"]["1"]["final_accuracy"]
    )
    for key in ("mean_accuracy", "seeds_finished"):
        assert m0["statistics"][key] == before["runs"]["m0"]["statistics"][key]
    assert "rerun_in_progress" not in record["runs"]["m1.35"]["seeds"]["1"]


def test_curves_of_results_files_without_per_seed_curves_are_pooled():
    rng = np.random.default_rng(0)
    seeds = [rng.random((4, 3)) for _ in range(5)]
    epochs = [1, 2, 3, 4]
    # Two seeds known only as their mean and spread, three as their own curves.
    old = np.stack(seeds[:2])
    groups = [(epochs, old.mean(0), old.std(0, ddof=1), 2)] + [
        (epochs, s, None, 1) for s in seeds[2:]
    ]
    pooled_epochs, mean, std, n = suite.pooled_curve(groups)
    every = np.stack(seeds)
    assert pooled_epochs == epochs and n == 5
    np.testing.assert_allclose(mean, every.mean(0), rtol=1e-12)
    np.testing.assert_allclose(std, every.std(0, ddof=1), rtol=1e-9)
    assert (
        suite.pooled_curve([(epochs, seeds[0], None, 1), ([9], seeds[1], None, 1)])
        is None
    )


def test_runs_shared_with_another_experiment_keep_its_seeds(fig2, tmp_path):
    # Table 1's m = 1.35 and m = 0 are Fig. 2's runs: their seeds trained elsewhere are
    # read from Fig. 2's results file.
    before = json.loads((fig2["results"] / "fig2-quick.json").read_text())
    runs_root, results = _elsewhere(fig2, tmp_path, keep_seeds=[0])
    path = _collect("table1", fig2, runs_root, results)
    record = json.loads(path.read_text())
    for run_name in ("m0", "m1.35"):
        entry = record["runs"][run_name]
        assert entry["shared_with"] == f"fig2 {run_name}"
        assert entry["seeds"]["1"]["kept_from_results_file"] is True
        assert (
            entry["statistics"]["mean_accuracy"]
            == before["runs"][run_name]["statistics"]["mean_accuracy"]
        )


def _seeds(*pairs):
    """Finished seeds `{"0": {...}}` from (paper-protocol, re-estimated) accuracies; a
    re-estimated value of None leaves `recalibrated_bn` out."""
    seeds = {}
    for index, (paper_protocol, recalibrated) in enumerate(pairs):
        seeds[str(index)] = {"status": "finished", "mean_accuracy": paper_protocol}
        if recalibrated is not None:
            seeds[str(index)]["recalibrated_bn"] = {"mean_accuracy": recalibrated}
    seeds["9"] = {"status": "partial", "completed_epochs": 3}
    return {"seeds": seeds}


def test_comparison_of_re_estimated_statistics_is_welch_on_those_values():
    from scipy import stats

    a = [(0.43, 0.976), (0.48, 0.975), (0.45, 0.977)]
    b = [(0.25, 0.33), (0.24, 0.34)]
    runs = {"a": _seeds(*a), "b": _seeds(*b)}
    for metric, column in (("mean_accuracy", 0), ("recalibrated_bn_mean_accuracy", 1)):
        result = suite.compare(runs, "a", "b", "w", metric=metric)
        xs, ys = [v[column] for v in a], [v[column] for v in b]
        assert result["metric"] == metric and result["n"] == [3, 2]
        assert result["difference"] == pytest.approx(np.mean(xs) - np.mean(ys))
        standard_error = np.sqrt(np.var(xs, ddof=1) / 3 + np.var(ys, ddof=1) / 2)
        assert result["standard_error"] == pytest.approx(standard_error)
        p_value = stats.ttest_ind(xs, ys, equal_var=False).pvalue
        assert result["p_value"] == pytest.approx(p_value)
        assert result["within_noise"] == (p_value >= 0.05)
    # The default is the paper's protocol.
    assert suite.compare(runs, "a", "b", "w") == suite.compare(
        runs, "a", "b", "w", metric="mean_accuracy"
    )


def test_comparison_never_tests_a_subset_of_the_finished_seeds():
    runs = {"a": _seeds((0.4, 0.9), (0.5, None)), "b": _seeds((0.2, 0.3), (0.3, 0.4))}
    result = suite.compare(runs, "a", "b", "w", metric="recalibrated_bn_mean_accuracy")
    assert result["difference"] is None and result["within_noise"] is None
    assert result["reason"] == "a finished seed has no recalibrated_bn_mean_accuracy"
    assert suite.compare(runs, "a", "b", "w")["p_value"] is not None
    with pytest.raises(ValueError, match="must be one of mean_accuracy"):
        suite.compare(runs, "a", "b", "w", metric="accuracy")


def test_welch_on_plain_values_says_when_it_cannot_decide():
    from scipy import stats

    a, b = [0.86, 0.85, 0.87], [0.78, 0.75, 0.80]
    result = suite.welch(a, b)
    assert result["n"] == [3, 3]
    assert result["difference"] == pytest.approx(np.mean(a) - np.mean(b))
    p_value = stats.ttest_ind(a, b, equal_var=False).pvalue
    assert result["p_value"] == pytest.approx(p_value)
    assert result["within_noise"] is False and result["reason"] is None
    one = suite.welch([0.9], b)
    assert one["within_noise"] is None
    assert one["reason"] == "fewer than 2 finished seeds"
    assert one["difference"] == pytest.approx(0.9 - np.mean(b))
    flat = suite.welch([0.5, 0.5], [0.4, 0.4])
    assert flat["within_noise"] is None and flat["reason"] == "no spread in either run"
    with pytest.raises(ValueError, match="at least one value"):
        suite.welch([], b)
