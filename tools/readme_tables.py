"""README sections generated from committed results files, and the check that they match.

A generated section of README.md lies between two markers,

    <!-- NAME:start -->
    ... generated text ...
    <!-- NAME:end -->

and `SECTIONS` maps `NAME` to the function that renders it from the repository's files
(`renderer(root) -> str`). `python benchmarks/paper.py table` rewrites them
(`update_readme`); `tests/test_readme_tables.py` fails when the README's text differs
from what the renderers make of the committed results files (`stale_sections`), so a
number in a generated table always has a results file behind it. A new table joins by
adding a renderer to `SECTIONS` (`@section("name")`) and the two markers to the README.

This module imports neither TensorFlow nor the project's packages; a renderer may
import what it needs when it runs (the `reproduction` renderer reads the paper's
experiments from `benchmarks/paper.py`, which imports `training`).

!!! example
    ```python
    from tools import readme_tables

    readme_tables.stale_sections()            # [] when the README is up to date
    readme_tables.update_readme()             # rewrites every stale section
    ```
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "CONTINUE_LEARNING_RESULTS",
    "PAPER_RESULTS",
    "PRETRAINED_RESULTS",
    "README",
    "ROOT",
    "SECTIONS",
    "TUNING_RESULTS",
    "load_results",
    "markers",
    "read_section",
    "render",
    "render_continue_learning",
    "render_pretrained",
    "render_reproduction",
    "render_tuning",
    "replace_section",
    "section",
    "stale_sections",
    "update_readme",
]

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# Where `benchmarks/paper.py collect` writes one JSON file per experiment and scale.
PAPER_RESULTS = Path("benchmarks") / "results" / "paper"

# Section name -> renderer(root) returning the section's text (without markers).
SECTIONS: dict[str, Callable[[Path], str]] = {}


def section(name: str) -> Callable:
    """Registers the decorated `renderer(root) -> str` as the renderer of section
    `name` (`SECTIONS`)."""

    def register(renderer: Callable[[Path], str]) -> Callable[[Path], str]:
        SECTIONS[name] = renderer
        return renderer

    return register


def markers(name: str) -> tuple[str, str]:
    """The start and end markers of section `name`."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def _span(text: str, name: str) -> tuple[int, int]:
    """Where section `name`'s text lies in `text`: between the end of its start marker
    and the beginning of its end marker.

    # Raises
        ValueError: if a marker is missing, repeated or out of order.
    """
    start, end = markers(name)
    for marker in (start, end):
        count = text.count(marker)
        if count != 1:
            raise ValueError(
                f"README must hold the marker {marker} exactly once, found {count}."
            )
    begin, finish = text.index(start) + len(start), text.index(end)
    if finish < begin:
        raise ValueError(f"{end} comes before {start} in README.")
    return begin, finish


def read_section(text: str, name: str) -> str:
    """The text of section `name` in `text` (a README), without its markers and the
    newlines next to them.

    # Raises
        ValueError: if its markers are missing, repeated or out of order.
    """
    begin, finish = _span(text, name)
    return text[begin:finish].strip("\n")


def replace_section(text: str, name: str, body: str) -> str:
    """`text` with section `name`'s text replaced by `body`.

    # Raises
        ValueError: if its markers are missing, repeated or out of order.
    """
    begin, finish = _span(text, name)
    return text[:begin] + "\n" + body.strip("\n") + "\n" + text[finish:]


def render(name: str, root: Path = ROOT) -> str:
    """Section `name` as its renderer makes it from the files under `root`.

    # Raises
        ValueError: for an unknown section (the message lists the known ones).
    """
    if name not in SECTIONS:
        raise ValueError(
            f"section must be one of {', '.join(map(repr, SECTIONS))}; got {name!r}."
        )
    return SECTIONS[name](Path(root)).strip("\n")


def stale_sections(
    readme: Path | None = None,
    root: Path = ROOT,
    names: Iterable[str] | None = None,
) -> list[str]:
    """The sections whose text in the README differs from their rendering.

    # Arguments
        readme: the README file; default `root / "README.md"`.
        root: the repository the renderers read.
        names: the sections to check; default all of `SECTIONS`.

    # Returns
        The names of the stale sections, in `SECTIONS` order.

    # Raises
        ValueError: if a section's markers are missing, repeated or out of order.
    """
    text = Path(readme or Path(root) / "README.md").read_text()
    return [
        name
        for name in (SECTIONS if names is None else names)
        if read_section(text, name) != render(name, root)
    ]


def update_readme(
    readme: Path | None = None,
    root: Path = ROOT,
    names: Iterable[str] | None = None,
) -> list[str]:
    """Rewrites the README's stale sections from their renderers.

    # Arguments
        readme: the README file; default `root / "README.md"`.
        root: the repository the renderers read.
        names: the sections to rewrite; default all of `SECTIONS`.

    # Returns
        The names of the sections that changed.

    # Raises
        ValueError: if a section's markers are missing, repeated or out of order.
    """
    path = Path(readme or Path(root) / "README.md")
    text = original = path.read_text()
    changed = []
    for name in SECTIONS if names is None else names:
        body = render(name, root)
        if read_section(text, name) != body:
            text = replace_section(text, name, body)
            changed.append(name)
    if text != original:
        path.write_text(text)
    return changed


# The reproduction table (`benchmarks/paper.py`).


def load_results(directory: Path) -> list[dict]:
    """The results files of `benchmarks/paper.py collect` in `directory`
    (`<experiment>-<scale>.json`), sorted by file name; none if it does not exist.

    # Raises
        ValueError: naming a file that is not a paper results file.
    """
    results = []
    for path in sorted(Path(directory).glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except ValueError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from None
        if not isinstance(record, dict) or not {"experiment", "scale", "runs"} <= set(
            record
        ):
            raise ValueError(f"{path} is not a results file of benchmarks/paper.py.")
        results.append(record)
    return results


def _percent(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{100 * value:.{digits}f}"


def _mean_std(stats: Mapping[str, Any] | None) -> str:
    """`"86.6 ± 0.4 %"` from `{"mean": 0.866, "std": 0.004, "n": 3}`.

    A spread under 0.05 points gets two decimals (`"96.92 ± 0.05 %"`), not `± 0.0`.
    """
    if not stats or stats.get("mean") is None:
        return "—"
    if stats.get("std") is None:
        return f"{_percent(stats['mean'])} %"
    digits = 2 if 0 < 100 * stats["std"] < 0.05 else 1
    return f"{_percent(stats['mean'], digits)} ± {_percent(stats['std'], digits)} %"


def _duration(seconds: float | None) -> str:
    if not seconds:
        return "—"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _paper_value(value: Mapping[str, Any] | None) -> str:
    """The paper's value of a run as the table shows it, with its source."""
    if not value:
        return "not given in text"
    parts = []
    if value.get("mean_accuracy_pct") is not None:
        parts.append(f"{value['mean_accuracy_pct']:g} % mean")
    for task, accuracy in (value.get("final_accuracy_pct") or {}).items():
        parts.append(f"{task} {accuracy:g} %")
    if not parts:
        return "not given in text"
    return ", ".join(parts) + f" ({value.get('source', 'source not recorded')})"


def _ours(record: Mapping[str, Any]) -> str:
    """`"quick (num_tasks 20, epochs 5), float32"`."""
    scale = record["scale"]
    overrides = record.get("scale_fields") or {}
    if overrides:
        shown = ", ".join(
            f"{k} {'x'.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in overrides.items()
        )
        scale = f"{scale} ({shown})"
    precisions = record.get("precisions") or []
    return f"{scale}, {'/'.join(precisions)}" if precisions else scale


def _seeds(run: Mapping[str, Any]) -> str:
    statistics = run.get("statistics") or {}
    finished = statistics.get("seeds_finished", 0)
    text = str(finished)
    partial = [s for s in run.get("seeds", {}).values() if s["status"] == "partial"]
    if partial:
        text += f" (+{len(partial)} partial)"
    return text


def _row(cells: Sequence[str]) -> str:
    return (
        "| "
        + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells)
        + " |"
    )


def render_reproduction(
    catalog: Sequence[Mapping[str, Any]],
    results: Sequence[Mapping[str, Any]],
    *,
    outdated: Mapping[tuple[str, str], Mapping[str, Mapping[str, Any]]] | None = None,
    recalibrated: Mapping[tuple[str, str, str, str], Mapping[str, Any]] | None = None,
) -> str:
    """The README's reproduction tables: one row per run of every results file, one
    "not run yet" row for each experiment without a results file at the paper's
    scale, then the comparisons of the results files.

    # Arguments
        catalog: the paper's experiments in order (`benchmarks/paper.py`'s
            `catalog()`): dicts with `experiment`, `figure`, `setting`, `runs`,
            `paper_values` (run -> value) and `command` (at the paper's scale).
        results: the results files (`load_results`).
        outdated: by `(experiment, scale)`, the runs whose settings differ from the
            experiment's today, `{run: {field: the value it ran with}}`
            (`benchmarks/paper.py`'s `outdated_settings`); their rows say so.
        recalibrated: by `(experiment, scale, a, b)`, the same comparison of the seeds'
            accuracies with re-estimated BatchNorm statistics (beyond the paper;
            `benchmarks/paper.py`'s `compare` with
            `metric="recalibrated_bn_mean_accuracy"`), in a column of its own; "—"
            where there is none.

    # Returns
        Markdown.
    """
    outdated = outdated or {}
    by_experiment: dict[str, list[Mapping[str, Any]]] = {}
    for record in results:
        by_experiment.setdefault(record["experiment"], []).append(record)
    lines = [
        "| experiment | the paper's setting | ours: scale, precision | seeds | "
        "final mean accuracy | the paper's value | wall time, seeds summed |",
        "|---|---|---|---|---|---|---|",
    ]
    known = [entry["experiment"] for entry in catalog]
    extra = [name for name in by_experiment if name not in known]
    entries = list(catalog) + [
        {"experiment": n, "figure": "", "setting": "", "runs": [], "paper_values": {}}
        for n in extra
    ]
    for entry in entries:
        name = entry["experiment"]
        label = f"`{name}`: {entry['figure']}" if entry["figure"] else f"`{name}`"
        records = sorted(
            by_experiment.get(name, []),
            key=lambda r: (r["scale"] != "paper", r["scale"]),
        )
        first = True
        for record in records:
            for run_name, run in record["runs"].items():
                if not run.get("seeds"):
                    continue  # not run at this scale
                statistics = run.get("statistics") or {}
                ours = _ours(record)
                changed = outdated.get((name, record["scale"]), {}).get(run_name)
                if changed:
                    ours += "; run with " + ", ".join(
                        f"{field} {json.dumps(value)}"
                        for field, value in sorted(changed.items())
                    )
                    ours += " (the experiment's setting has changed since)"
                lines.append(
                    _row(
                        [
                            f"{label} {run_name}" if first else run_name,
                            entry["setting"] if first else "",
                            ours,
                            _seeds(run),
                            _mean_std(statistics.get("mean_accuracy")),
                            _paper_value(entry["paper_values"].get(run_name)),
                            _duration(statistics.get("wall_time_s")),
                        ]
                    )
                )
                first = False
        if not any(r["scale"] == "paper" for r in records):
            values = [
                f"{run}: {_paper_value(entry['paper_values'].get(run))}"
                for run in entry["runs"]
                if _paper_value(entry["paper_values"].get(run)) != "not given in text"
            ]
            lines.append(
                _row(
                    [
                        label if first else "paper scale",
                        entry["setting"] if first else "",
                        f"not run yet: `{entry.get('command', '')}`",
                        "",
                        "",
                        "; ".join(values) or "not given in text",
                        "",
                    ]
                )
            )
    comparisons = [  # those with a finished seed on both sides
        (record, c)
        for record in results
        for c in record.get("comparisons", [])
        if c.get("difference") is not None
    ]
    if comparisons:
        lines += [
            "",
            "| experiment, scale | comparison | difference of the means | "
            "within the noise? | with re-estimated BatchNorm statistics (beyond the "
            "paper) |",
            "|---|---|---|---|---|",
        ]
        for record, c in comparisons:
            key = (record["experiment"], record["scale"], c["a"], c["b"])
            beyond = (recalibrated or {}).get(key)
            lines.append(
                _row(
                    [
                        f"`{record['experiment']}`, {record['scale']}",
                        f"{c['a']} − {c['b']}: {c['what']}",
                        _difference(c),
                        _verdict(c),
                        "—"
                        if not beyond or beyond.get("difference") is None
                        else f"{_difference(beyond)}; within the noise: "
                        f"{_verdict(beyond)}",
                    ]
                )
            )
        rules = sorted({record.get("noise_rule", "") for record, _ in comparisons})
        lines += [
            "",
            "Within the noise: " + " ".join(r for r in rules if r),
            "",
            "With re-estimated BatchNorm statistics: the same rule over each finished "
            "seed's mean accuracy with the finished tasks' statistics re-estimated from "
            "training batches under the final weights (`recalibrated_bn` in the results "
            "files); — where the runs have none (a stream or an interleaved run keeps "
            "one BatchNorm state: no finished task to re-estimate).",
        ]
    return "\n".join(lines)


def _difference(comparison: Mapping[str, Any]) -> str:
    """A comparison's difference of the means in points, with its p-value."""
    if comparison.get("difference") is None:
        return "—"
    text = f"{100 * comparison['difference']:+.1f} points"
    if comparison.get("p_value") is not None:
        text += f" (Welch p = {comparison['p_value']:.2g})"
    return text


def _verdict(comparison: Mapping[str, Any]) -> str:
    """Whether a comparison is within the noise: yes, no, or undetermined and why."""
    verdict = {True: "yes", False: "no", None: "undetermined"}[
        comparison.get("within_noise")
    ]
    if comparison.get("within_noise") is None and comparison.get("reason"):
        verdict += f": {comparison['reason']}"
    return verdict


def _paper_module():
    """`benchmarks/paper.py` as the module `benchmarks.paper` (already imported, or
    imported now with the repository on `sys.path`)."""
    if "benchmarks.paper" not in sys.modules and str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("benchmarks.paper")


@section("reproduction")
def _reproduction(root: Path) -> str:
    paper = _paper_module()
    results = load_results(Path(root) / PAPER_RESULTS)
    outdated = {
        (record["experiment"], record["scale"]): paper.outdated_settings(record)
        for record in results
    }
    recalibrated = {
        (record["experiment"], record["scale"], c["a"], c["b"]): paper.compare(
            record.get("runs", {}),
            c["a"],
            c["b"],
            c["what"],
            metric="recalibrated_bn_mean_accuracy",
        )
        for record in results
        for c in record.get("comparisons", [])
    }
    return render_reproduction(
        paper.catalog(), results, outdated=outdated, recalibrated=recalibrated
    )


# Where `benchmarks/tuned_meta.py` writes its results.
TUNING_RESULTS = Path("benchmarks") / "results" / "tuned_meta.json"


def render_tuning(record: Mapping[str, Any] | None) -> str:
    """The README's tuning table: the search's trials (m, validation objective), then
    the tuned m against m = 0 on the test set, with seeds and the noise verdict.

    # Arguments
        record: the results file of `benchmarks/tuned_meta.py`, or `None` when absent.

    # Returns
        Markdown.
    """
    if record is None:
        return (
            "Not run yet: `python benchmarks/tuned_meta.py --data-dir ../shared/data` "
            "writes `benchmarks/results/tuned_meta.json`."
        )
    setting, search = record["setting"], record["search"]
    lines = [
        f"Setting: {setting['num_tasks']} permuted-MNIST tasks x {setting['epochs']} "
        f"epochs, `mlp_meta` {'-'.join(map(str, setting['hidden_units']))}, learning "
        f"rate {setting['learning_rate']:g}, the paper's protocol. Search: "
        f"`{search['command']}` ({search['tuner']}, {len(search['trials'])} trials, "
        f"m in [{search['meta_range'][0]:g}, {search['meta_range'][1]:g}], scored on a "
        f"{100 * search['validation_split']:g} % validation split; "
        f"{_duration(search['wall_time_s'])}).",
        "",
        _row(["trial", "m", "validation mean accuracy"]),
        _row(["---"] * 3),
    ]
    for trial in sorted(search["trials"], key=lambda t: t["meta"]):
        best = " (best)" if trial["trial"] == search["best_trial"] else ""
        lines.append(
            _row(
                [
                    trial["trial"] + best,
                    f"{trial['meta']:.3f}",
                    f"{_percent(trial['validation_mean_accuracy'])} %",
                ]
            )
        )
    lines += [
        "",
        _row(["run", "m", "seeds", "test mean accuracy over the tasks", "wall time"]),
        _row(["---"] * 5),
    ]
    for name, run in record["runs"].items():
        seeds = run["seeds"].values()
        lines.append(
            _row(
                [
                    name,
                    f"{run['meta']:.3g}",
                    str(run["stats"]["n"]),
                    _mean_std(run["stats"]),
                    _duration(sum(s["wall_time_s"] for s in seeds)),
                ]
            )
        )
    comparison = record["comparison"]
    if comparison["difference"] is not None:
        verdict = {
            True: "within the noise",
            False: "not within the noise",
            None: f"undetermined ({comparison['reason']})",
        }[comparison["within_noise"]]
        p_value = comparison["p_value"]
        lines += [
            "",
            f"Tuned m - m = 0: {100 * comparison['difference']:+.1f} points"
            + (f", Welch p = {p_value:.2g}" if p_value is not None else "")
            + f": {verdict}. Command: `python benchmarks/tuned_meta.py --data-dir "
            f"../shared/data`; budget {_duration(record['budget_s'])} of training.",
        ]
    return "\n".join(lines)


@section("tuning")
def _tuning(root: Path) -> str:
    path = Path(root) / TUNING_RESULTS
    return render_tuning(json.loads(path.read_text()) if path.exists() else None)


# The pretrained models (`benchmarks/pretrained.py`).

# Where `benchmarks/pretrained.py` writes its results.
PRETRAINED_RESULTS = Path("benchmarks") / "results" / "pretrained.json"


def _megabytes(count: int | None) -> str:
    return "—" if not count else f"{count / 1e6:.1f} MB"


def _training(card: Mapping[str, Any]) -> str:
    """`"fashion_mnist as a stream of 60 subsets × 20 epochs, m = 2.5, ..."`."""
    dataset, protocol = card["dataset"], card.get("protocol")
    if protocol == "stream":
        what = (
            f"{dataset} as a stream of {card['tasks']} subsets × "
            f"{card['epochs_per_task']} epochs"
        )
    elif protocol == "permuted":
        what = (
            f"{card['tasks']} permuted {dataset} tasks × {card['epochs_per_task']} "
            f"epochs (measured on {card.get('evaluated_task')})"
        )
    else:
        what = f"{dataset}, {card['epochs']} epochs"
        if card.get("runs", 1) > 1:
            what += f" in {card['runs']} runs (the last one's lr)"
    learning_rate = f"lr {card['learning_rate']:g}"
    if card.get("lr_schedule") == "cosine":
        learning_rate += " cosine-decayed to 0"
    parts = [what, f"m = {card['meta']:g}", learning_rate, f"batch {card['batch_size']}"]
    if card.get("augment"):
        parts.append(f"augment {card['augment']}")
    parts.append(card.get("precision") or "float32")
    return ", ".join(parts) + f"; {_duration(card.get('wall_time_s'))} wall time"


def render_pretrained(record: Mapping[str, Any] | None) -> str:
    """The README's table of pretrained models: how each was trained (from its card),
    its Keras and LCE test accuracy as measured by `benchmarks/pretrained.py`, its size.

    # Arguments
        record: the results file of `benchmarks/pretrained.py`, or `None` when absent.

    # Returns
        Markdown.
    """
    if not record or not record.get("rows"):
        return (
            "Not measured yet: `python benchmarks/pretrained.py --data-dir "
            "../shared/data` writes `benchmarks/results/pretrained.json`."
        )
    lines = [
        _row(
            [
                "pretrained model",
                "trained",
                "Keras test accuracy",
                "LCE test accuracy (agreement)",
                "size: SavedModel, LCE flatbuffer",
            ]
        ),
        _row(["---"] * 5),
    ]
    notes = []
    for row in record["rows"]:
        card = row["card"]
        hidden = (card.get("kwargs") or {}).get("hidden_units")
        name = f"`{row['factory']}`"
        if row["default"]:  # `zoo.mlp_meta(pretrained=True)`: its name too
            name += f": `{row['name']}`"
        if hidden:
            name += f", {'-'.join(map(str, hidden))}"
        images = (
            ""
            if row["samples"] == row["total"]
            else f" ({row['samples']:,} of {row['total']:,} test images)"
        )
        sizes = row["bytes"]
        tasks = row.get("task_accuracy")
        if tasks:  # every task with its own BatchNorm state
            images += (
                f"; its {len(tasks)} tasks, each with its own BatchNorm state "
                f"(`task=`): mean {_percent(row['mean_task_accuracy'], 2)} %"
            )
        lines.append(
            _row(
                [
                    name,
                    _training(card),
                    f"{_percent(row['keras_accuracy'], 2)} %{images}",
                    f"{_percent(row['lce_accuracy'], 2)} % "
                    f"({_percent(row['argmax_agreement'], 2)} %)",
                    f"{_megabytes(sizes['saved_model'])}, "
                    f"{_megabytes(sizes['flatbuffer'])}",
                ]
            )
        )
        if card.get("data_note") and card["data_note"] not in notes:
            notes.append(card["data_note"])
    lines += [
        "",
        f"Measured with `{record['command']}` ({record['date'][:10]}) on the whole "
        "test split unless a row says otherwise."
        + "".join(f" Note: {note[0].upper()}{note[1:]}." for note in notes),
    ]
    return "\n".join(lines)


@section("pretrained")
def _pretrained(root: Path) -> str:
    path = Path(root) / PRETRAINED_RESULTS
    return render_pretrained(json.loads(path.read_text()) if path.exists() else None)


# Continuing to learn from a pretrained model (`benchmarks/continue_learning.py`).

# Where `benchmarks/continue_learning.py` writes its results for the default model,
# one file per new task.
CONTINUE_LEARNING_RESULTS = tuple(
    Path("benchmarks") / "results" / f"continue_learning-{task}.json"
    for task in ("mnist", "permuted")
)
_CONTINUE_LEARNING_COMMAND = (
    "python benchmarks/continue_learning.py --data-dir ../shared/data --seeds 0 1 2"
)
_COMPARED_LABELS = {"task_a_after": "task A after", "task_b": "task B"}


def _change(stats: Mapping[str, Any] | None) -> str:
    """`"−1.1"`: a change in points, the mean of `stats` (fractions)."""
    if not stats or stats.get("mean") is None:
        return "—"
    return f"{100 * stats['mean']:+.1f}".replace("-", "−")


def _difference_and_verdict(comparison: Mapping[str, Any]) -> str:
    text = f"{100 * comparison['difference']:+.1f} points".replace("-", "−")
    if comparison.get("p_value") is not None:
        text += f", Welch p = {comparison['p_value']:.2g}"
    verdict = {
        True: "within the noise",
        False: "beyond the noise",
        None: f"undetermined ({comparison.get('reason')})",
    }[comparison.get("within_noise")]
    return f"{text}, {verdict}"


def _same_or_mean_std(stats: Mapping[str, Any]) -> str:
    """`"86.60 %"` when every seed has the same value, else `_mean_std(stats)`."""
    if stats.get("std") == 0:
        return f"{_percent(stats['mean'], 2)} %"
    return _mean_std(stats)


def render_continue_learning(records: Sequence[Mapping[str, Any]]) -> str:
    """The README's "Keep learning" table: per new task B and m, task A's test accuracy
    before and after learning B (BatchNorm re-estimated, or frozen), B's, mean ± std
    over the seeds, then the first m against the others (Welch's t-test).

    # Arguments
        records: results files of `benchmarks/continue_learning.py`, possibly none.

    # Returns
        Markdown.
    """
    if not records:
        return (
            f"Not run yet: `{_CONTINUE_LEARNING_COMMAND}` (and `--new-task permuted`) "
            "writes `benchmarks/results/continue_learning-<new task>.json`."
        )
    lines = [
        _row(
            [
                "task B",
                "m",
                "seeds",
                "task A before",
                "task A after, BN re-estimated (change, points)",
                "task A after, BN frozen (change)",
                "task B",
                "training time, seeds summed",
            ]
        ),
        _row(["---"] * 8),
    ]
    notes = []
    for record in records:
        for run in record["runs"].values():
            stats = run["stats"]
            frozen = {"mean": None}
            if stats["task_a_before"]["mean"] is not None:
                frozen = {
                    "mean": stats["task_a_after_frozen_bn"]["mean"]
                    - stats["task_a_before"]["mean"]
                }
            lines.append(
                _row(
                    [
                        record["task_b"],
                        f"{run['meta']:g}",
                        str(len(run["seeds"])),
                        _same_or_mean_std(stats["task_a_before"]),
                        f"{_mean_std(stats['task_a_after'])} "
                        f"({_change({'mean': -stats['forgetting']['mean']})})",
                        f"{_mean_std(stats['task_a_after_frozen_bn'])} "
                        f"({_change(frozen)})",
                        _mean_std(stats["task_b"]),
                        _duration(run["wall_time_s"]),
                    ]
                )
            )
        by_pair: dict[tuple[str, str], list[str]] = {}
        for comparison in record["comparisons"]:
            label = _COMPARED_LABELS.get(comparison["metric"], comparison["metric"])
            by_pair.setdefault((comparison["a"], comparison["b"]), []).append(
                f"{label} {_difference_and_verdict(comparison)}"
            )
        for (a, b), parts in by_pair.items():
            meta_a, meta_b = record["runs"][a]["meta"], record["runs"][b]["meta"]
            notes.append(
                f"Task B {record['task_b']}, m = {meta_a:g} against m = {meta_b:g}: "
                + "; ".join(parts)
                + "."
            )
    commands = "; ".join(f"`{record['command']}`" for record in records)
    pretrained = sorted({record["pretrained"] for record in records})
    notes.append(
        f"From `{'`, `'.join(pretrained)}` ({records[0]['task_a']} is task A). "
        f"Commands: {commands}."
    )
    return "\n".join(lines) + "\n\n" + "\n\n".join(notes)


@section("continue_learning")
def _continue_learning(root: Path) -> str:
    paths = [Path(root) / path for path in CONTINUE_LEARNING_RESULTS]
    return render_continue_learning(
        [json.loads(path.read_text()) for path in paths if path.exists()]
    )
