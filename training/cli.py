"""Command line: `python -m training {train,permuted,sequence,stream,paper,package,status}`.

A thin layer over `training.runner.run`: every option is a `RunConfig` field, and the
defaults are the paper's settings for the protocol and dataset
(`training.config.PRESETS`, Laborieux et al. 2021), else `RunConfig`'s. Re-running the
same command continues an interrupted run from its last completed epoch; a finished run
records its command in `commands.txt`. Errors (bad input, a run directory in use by
another process, a NaN loss) are one line on standard error and exit code 2; warnings
(a damaged checkpoint skipped, a diverging run) one `warning:` line each.
`paper EXPERIMENT RUN [--scale quick]` runs one run of one of the paper's experiments
(`training.paper`). `package RUN_DIR --name NAME` turns a finished run into a pretrained
model (`training.packaging.package_run`); `package saved_models/NAME` brings a
pretrained model's card up to date (`training.packaging.refresh_pretrained`).
`status [PATH ...]` says which run directories finished, are running or stopped, and
how far (`training.status`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import shlex
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import tensorflow as tf

from training import baselines, data, paper
from training.config import (
    BASELINE_TARGETS,
    BATCH_NORM,
    DEFAULT_DATASETS,
    EVALUATE,
    LR_SCHEDULES,
    PRESETS,
    RunConfig,
)
from training.packaging import package_run, refresh_pretrained
from training.protocols import STREAM_SPLITS
from training.rundir import RunDirectory
from training.runner import RunWarning, run
from training.status import find_run_directories, format_statuses, run_status
from zoo import registry
from zoo.datasets import canonical_name
from zoo.precision import PRECISIONS

__all__ = ["build_parser", "config_from_args", "main", "quiet_logs", "run_warnings"]

# `train`: one dataset learned once (a sequence of one task), briefly.
TRAIN_DATASETS = ("fashion_mnist",)
TRAIN_EPOCHS = 5

# Options that set the `RunConfig` field of the same name when given.
_FIELDS = (
    "num_tasks", "epochs", "meta", "learning_rate", "batch_size", "model", "augment",
    "baseline", "baseline_on", "ewc_lambda", "fisher_samples", "si_c", "si_xi",
    "batch_norm", "recalibrate_bn", "evaluate", "seed", "initial_weights", "data_dir",
    "precision", "weight_decay", "lr_schedule", "optimizer_per_task",
    "batch_norm_affine", "stream_split",
)  # fmt: skip
_PAPER = PRESETS[("permuted", "mnist")]


def _add_run_options(p: argparse.ArgumentParser, command: str) -> None:
    datasets = TRAIN_DATASETS if command == "train" else DEFAULT_DATASETS[command]
    p.add_argument(
        "--datasets",
        "--dataset",
        nargs="+",
        metavar="NAME",
        default=list(datasets),
        help="mnist, fashion_mnist, cifar10 or an image-folder path "
        f"(default: {' '.join(datasets)})",
    )
    if command in ("permuted", "stream"):
        p.add_argument(
            *(["--tasks"] if command == "permuted" else ["--tasks", "--subsets"]),
            dest="num_tasks",
            type=int,
            help="number of tasks / subsets (paper: "
            f"{_PAPER['num_tasks']} / {PRESETS[('stream', 'fashion_mnist')]['num_tasks']})",
        )
    p.add_argument(
        "--epochs", type=int, help=f"epochs per task (paper: {_PAPER['epochs']})"
    )
    p.add_argument("--meta", "-m", type=float, help="metaplasticity m; 0 = plain Adam")
    p.add_argument("--lr", dest="learning_rate", type=float, help="learning rate")
    p.add_argument("--batch-size", type=int)
    p.add_argument(
        "--weight-decay",
        type=float,
        help="L2 term added to the gradient before Adam's moments (paper: 1e-7; "
        f"1e-8 in its width sweeps; default {RunConfig.weight_decay:g})",
    )
    p.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        help="constant (the paper's) or cosine: decays the learning rate to 0 over "
        "each optimizer's lifetime (a task, or the run with --shared-optimizer)",
    )
    if command == "stream":
        p.add_argument(
            "--stream-split",
            choices=STREAM_SPLITS,
            help="balanced (default): every subset holds as many images of each "
            "class; chunks: consecutive chunks of one seeded random permutation, as "
            "the reference code",
        )
    p.add_argument(
        "--model",
        choices=registry.model_names(),
        help="zoo model; a float model (mlp_float: full-precision MLP of the same "
        "shape) is trained with the metaplastic rule on its float kernels",
    )
    p.add_argument(
        "--hidden-units",
        type=int,
        nargs="+",
        metavar="H",
        help=f"MLP widths (default {' '.join(map(str, RunConfig.hidden_units))})",
    )
    p.add_argument(
        "--baseline",
        choices=baselines.BASELINES,
        help="continual-learning baseline with task boundaries: EWC, EWC with "
        "shuffled Fisher (random consolidation) or Synaptic Intelligence; "
        "combines with --meta (the paper's EWC runs: --meta 0)",
    )
    p.add_argument(
        "--baseline-on",
        choices=BASELINE_TARGETS,
        help="consolidate the binarized weights sign(Wh), as the paper, or the latent "
        f"weights Wh (default {RunConfig.baseline_on})",
    )
    p.add_argument(
        "--ewc-lambda",
        type=float,
        help=f"EWC strength (default: paper's {RunConfig.ewc_lambda:g})",
    )
    p.add_argument(
        "--fisher-samples",
        type=int,
        metavar="N",
        help="training examples of each task's Fisher estimate "
        f"(default {RunConfig.fisher_samples})",
    )
    p.add_argument(
        "--si-c", type=float, help=f"SI strength (default {RunConfig.si_c:g})"
    )
    p.add_argument(
        "--si-xi", type=float, help=f"SI damping (default {RunConfig.si_xi:g})"
    )
    p.add_argument(
        "--joint",
        action="store_true",
        help="train on the union of all tasks (upper-bound reference)",
    )
    optimizer = p.add_mutually_exclusive_group()
    optimizer.add_argument(
        "--shared-optimizer",
        dest="optimizer_per_task",
        action="store_const",
        const=False,
        help="one optimizer for the whole run (the default of streams, as the paper)",
    )
    optimizer.add_argument(
        "--optimizer-per-task",
        dest="optimizer_per_task",
        action="store_const",
        const=True,
        help="a fresh optimizer for every task (the default except for streams)",
    )
    affine = p.add_mutually_exclusive_group()
    affine.add_argument(
        "--bn-affine",
        dest="batch_norm_affine",
        action="store_const",
        const=True,
        help="BatchNorm learns gamma and beta (the default except for streams of "
        "mlp_meta / mlp_float)",
    )
    affine.add_argument(
        "--no-bn-affine",
        dest="batch_norm_affine",
        action="store_const",
        const=False,
        help="BatchNorm only normalizes, no gamma and beta (the default of streams "
        "of mlp_meta / mlp_float, as the paper's)",
    )
    p.add_argument(
        "--bn",
        dest="batch_norm",
        choices=BATCH_NORM,
        help=f"BatchNorm state per task or shared (default {RunConfig.batch_norm})",
    )
    p.add_argument(
        "--recalibrate-bn",
        type=int,
        metavar="N",
        help="batches used to re-estimate a finished task's BatchNorm statistics "
        "under the current weights before evaluating it, beyond the paper (0: the "
        f"statistics saved at the task's end, as the paper; default "
        f"{RunConfig.recalibrate_bn})",
    )
    p.add_argument("--augment", choices=data.AUGMENTATIONS)
    p.add_argument(
        "--evaluate",
        choices=EVALUATE,
        help="evaluate every task after every epoch or at task ends only "
        f"(default {RunConfig.evaluate})",
    )
    p.add_argument("--seed", type=int, help=f"(default {RunConfig.seed})")
    p.add_argument(
        "--initial-weights",
        metavar="SOURCE",
        help="start from a run directory's last weights, a pretrained model name "
        "or a weights file, with a fresh optimizer (e.g. a lower learning rate)",
    )
    p.add_argument(
        "--jit",
        dest="jit_compile",
        action="store_true",
        help="compile the training step with XLA",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="bf16: binary layers compute in bfloat16, latent weights, BatchNorm and "
        f"loss stay float32 (default {RunConfig.precision})",
    )
    p.add_argument(
        "--strategy",
        choices=["none", "mirrored", "multiworker"],
        default="none",
        help="mirrored: all local GPUs; multiworker: machines in TF_CONFIG",
    )
    p.add_argument(
        "--data-dir",
        help="dataset directory (else $METAPLASTIC_DATA_DIR, then tensorflow-datasets)",
    )
    p.add_argument("--run-dir", help="run directory (default: runs/<command>-...)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh instead of resuming an existing run directory",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="one line per epoch instead of progress bars",
    )


def _add_paper_command(commands) -> None:
    help_text = (
        "one run of one of the paper's experiments at its settings or a named smaller "
        "scale (training.paper)"
    )
    p = commands.add_parser("paper", help=help_text, description=help_text)
    p.add_argument("experiment", choices=paper.experiment_names())
    p.add_argument("run", help="one of the experiment's runs, e.g. m1.35")
    p.add_argument(
        "--scale",
        default=paper.PAPER_SCALE,
        help="paper (default: the published settings) or a smaller named scale",
    )
    p.add_argument("--seed", type=int, default=0, help="(default 0)")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="bf16: binary layers compute in bfloat16 (default float32)",
    )
    p.add_argument("--jit", dest="jit_compile", action="store_true", help="XLA")
    p.add_argument(
        "--strategy", choices=["none", "mirrored", "multiworker"], default="none"
    )
    p.add_argument("--data-dir", help="dataset directory")
    p.add_argument("--run-dir", help="default runs/paper/EXPERIMENT/SCALE/RUN-seedSEED")
    p.add_argument("--overwrite", action="store_true", help="start afresh")
    p.add_argument("--quiet", action="store_true", help="one line per epoch")


def build_parser() -> argparse.ArgumentParser:
    """The parser of `python -m training`."""
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train metaplastic BNNs on continual-learning protocols.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    helps = {
        "train": "train on one dataset and report test accuracy",
        "permuted": "learn N permuted versions of a dataset one after another",
        "sequence": "learn several datasets one after another",
        "stream": "learn one dataset as a stream of class-balanced subsets",
    }
    for command, help_text in helps.items():
        p = commands.add_parser(command, help=help_text, description=help_text)
        _add_run_options(p, command)
    _add_paper_command(commands)
    help_text = "package a finished run as a pretrained model (SavedModel, LCE, card)"
    p = commands.add_parser("package", help=help_text, description=help_text)
    p.add_argument(
        "run_dir",
        help="a finished run directory, or a pretrained model directory whose card "
        "to bring up to date (usage, data, per-class accuracy; model files unchanged)",
    )
    p.add_argument("--name", help="pretrained model name (required for a run)")
    p.add_argument(
        "--output-dir",
        default="saved_models",
        help="where to write NAME/ (saved_models)",
    )
    p.add_argument(
        "--command",
        dest="training_command",
        help="the exact training command (default: the one the run recorded)",
    )
    p.add_argument("--budget", help="compute used, in words, for the model card")
    p.add_argument("--data-dir", help="dataset directory")
    p.add_argument(
        "--lce-samples", type=int, help="test images to check LCE on (default: all)"
    )
    p.add_argument(
        "--recalibrate-bn",
        type=int,
        default=0,
        metavar="N",
        help="ship BatchNorm statistics re-estimated from N training batches of "
        "each task (beyond the paper; the card keeps both accuracies); default 0: "
        "the statistics the run ended with or saved",
    )
    p.add_argument("--overwrite", action="store_true", help="replace NAME/")
    help_text = "say which runs finished, are running or stopped, and how far"
    p = commands.add_parser("status", help=help_text, description=help_text)
    p.add_argument(
        "paths",
        nargs="*",
        default=None,
        metavar="PATH",
        help="run directories, or folders to search for them (default runs)",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The `RunConfig` a parsed command line describes: the options given, else the
    paper's preset for the protocol and first dataset (`RunConfig.from_preset`).

    # Raises
        ValueError: for an invalid option value.
    """
    if args.command == "paper":
        extra = {
            k: getattr(args, k)
            for k in ("precision", "data_dir")
            if getattr(args, k) is not None
        }
        return paper.run_config(
            args.experiment,
            args.run,
            scale=args.scale,
            seed=args.seed,
            run_dir=args.run_dir,
            jit_compile=args.jit_compile,
            **extra,
        )
    protocol = "sequence" if args.command == "train" else args.command
    fields = {
        k: getattr(args, k) for k in _FIELDS if getattr(args, k, None) is not None
    }
    if args.command == "train":
        fields.setdefault("epochs", TRAIN_EPOCHS)
    if args.hidden_units:
        fields["hidden_units"] = tuple(args.hidden_units)
    config = RunConfig.from_preset(
        protocol,
        tuple(args.datasets),
        joint=args.joint,
        jit_compile=args.jit_compile,
        **fields,
    )
    if args.run_dir:
        return dataclasses.replace(config, run_dir=args.run_dir)
    name = "-".join(canonical_name(d) for d in config.datasets)
    run_dir = (
        f"runs/{args.command}-{name}-m{config.meta:g}-seed{config.seed}"
        + ("-joint" if config.joint else "")
        + ("" if registry.get_model(config.model).binary else "-float")
        + (f"-{config.baseline}" if config.baseline else "")
        + ("" if config.precision == "float32" else f"-{config.precision}")
    )
    return dataclasses.replace(config, run_dir=run_dir)


@contextlib.contextmanager
def _stderr_closed() -> Iterator[None]:
    """Within the block, what is written to file descriptor 2 (C++ logs) is dropped."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no standard error to protect
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """Within the block, hides the log lines TensorFlow prints on a default run.

    TensorFlow's C++ lines follow `TF_CPP_MIN_LOG_LEVEL`, read once when TensorFlow is
    imported (`python -m training` sets it to 3, see `training/__init__.py`). Python's
    absl and TensorFlow loggers are set to errors in the block. XLA logs "Compiled
    cluster using XLA!" (after absl's "All log messages before absl::InitializeLog()"
    notice) through C++ absl logging, which no setting governs, once per process, when
    the first function is compiled: `MetaplasticAdam`'s update. A trivial function is
    compiled first with standard error closed to spend those lines. With
    TF_CPP_MIN_LOG_LEVEL=0 nothing is hidden.
    """
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") == "0":
        yield
        return
    loggers = [logging.getLogger("absl"), tf.get_logger()]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    with _stderr_closed():
        tf.function(lambda x: x + 1.0, jit_compile=True)(tf.constant(0.0))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextlib.contextmanager
def run_warnings() -> Iterator[None]:
    """Within the block, every `RunWarning` is printed as one `warning: ...` line on
    standard error; other warnings as usual."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", RunWarning)
        show = warnings.showwarning

        def show_run_warning(message, category, *args, **kwargs):
            if issubclass(category, RunWarning):
                print(f"warning: {message}", file=sys.stderr, flush=True)
            else:
                show(message, category, *args, **kwargs)

        warnings.showwarning = show_run_warning
        yield


def _strategy(name: str) -> tf.distribute.Strategy | None:
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return None


def _status(args: argparse.Namespace) -> int:
    paths = args.paths or ["runs"]
    try:
        directories = [
            directory
            for path in paths
            if args.paths or Path(path).exists()  # no runs/ yet: nothing to list
            for directory in find_run_directories(path)
        ]
        statuses = [run_status(directory) for directory in directories]
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not statuses:
        print(f"no run directories under {', '.join(paths)}")
        return 0
    print(format_statuses(statuses))
    return 0


def _package(args: argparse.Namespace) -> int:
    pretrained_dir = (Path(args.run_dir) / "model_card.json").is_file()
    if not pretrained_dir and not args.name:
        print("error: --name is required to package a run directory", file=sys.stderr)
        return 2
    try:
        if pretrained_dir:
            card = refresh_pretrained(args.run_dir, data_dir=args.data_dir)
            written = Path(args.run_dir)
        else:
            card = package_run(
                args.run_dir,
                name=args.name,
                directory=args.output_dir,
                command=args.training_command,
                budget=args.budget,
                data_dir=args.data_dir,
                lce_samples=args.lce_samples,
                recalibrate_bn=args.recalibrate_bn,
                overwrite=args.overwrite,
            )
            written = Path(args.output_dir) / args.name
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    results = card["results"]
    lce = results.get("lce") or {}
    print(f"Wrote {written}")
    print(f"Keras test accuracy: {100 * results['keras_test_accuracy']:.2f}%")
    if "test_accuracy" in lce:
        print(
            f"LCE test accuracy: {100 * lce['test_accuracy']:.2f}% on "
            f"{lce['samples']:,} images (argmax agreement with Keras "
            f"{100 * lce['agreement']:.2f}%)"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Runs `python -m training` with `argv` (default `sys.argv[1:]`); returns the exit
    code: 0, 2 for invalid input, a run directory in use or a NaN loss, 130 when
    interrupted."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.command == "package":
        return _package(args)
    if args.command == "status":
        return _status(args)
    try:
        config = config_from_args(args)
        with quiet_logs(), run_warnings():
            summary = run(
                config,
                strategy=_strategy(args.strategy),
                overwrite=args.overwrite,
                verbose=2 if args.quiet else 1,
            )
    except ValueError as error:  # bad input, missing data, run directory, NaN loss
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; run the same command again to resume from the last "
            f"completed epoch ({config.run_dir}).",
            file=sys.stderr,
        )
        return 130
    RunDirectory(config.run_dir).record_command(
        f"python -m training {shlex.join(argv)}"
    )
    final = summary["final_accuracy"]
    print(
        "Final test accuracy: "
        + ", ".join(f"{k} {100 * v:.2f}%" for k, v in final.items())
    )
    print(
        f"Mean: {100 * summary['mean_accuracy']:.2f}%  "
        f"(wall time {summary['wall_time_s']:.0f} s)"
    )
    if summary["warnings"]:
        print(
            f"{len(summary['warnings'])} warning(s), listed in "
            f"{Path(config.run_dir) / 'summary.json'}: the run diverges."
        )
    return 0
