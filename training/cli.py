"""Command line: `python -m training {train,permuted,sequence,stream,package} ...`.

A thin layer over `training.runner.run`: every option is a `RunConfig` field, and the
defaults are the paper's settings for the protocol and dataset (Laborieux et al. 2021).
Re-running the same command continues an interrupted run from its last completed epoch;
a finished run records its command in `commands.txt`. `package RUN_DIR --name NAME`
turns a finished run into a pretrained model (`training.packaging.package_run`).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

# The paper's hyperparameters, by (protocol, dataset).
PAPER_DEFAULTS = {
    # Fig. 2: permuted MNIST, fresh Adam per task, BN statistics kept per task.
    ("permuted", "mnist"): dict(
        meta=1.35, learning_rate=0.005, batch_size=100, epochs=20, num_tasks=10
    ),
    # Fig. 3a: stream Fashion-MNIST, 60 subsets of 1,000 images, 20 epochs each.
    ("stream", "fashion_mnist"): dict(
        meta=2.5, learning_rate=0.005, batch_size=100, epochs=20, num_tasks=60
    ),
    # Fig. 3b: stream CIFAR-10, 20 subsets, VGG-Small, augmentation.
    ("stream", "cifar10"): dict(
        meta=13.0,
        learning_rate=1e-4,
        batch_size=64,
        epochs=20,
        num_tasks=20,
        model="vgg_small_meta",
        augment="flip_crop",
    ),
}
FALLBACK = dict(meta=1.35, learning_rate=0.005, batch_size=100, epochs=20, num_tasks=10)
COMMAND_DATASETS = {
    "train": ["fashion_mnist"],
    "permuted": ["mnist"],
    "sequence": ["mnist", "fashion_mnist"],
    "stream": ["fashion_mnist"],
}


def _parser() -> argparse.ArgumentParser:
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
        p.add_argument(
            "--datasets",
            "--dataset",
            nargs="+",
            metavar="NAME",
            default=COMMAND_DATASETS[command],
            help="mnist, fashion_mnist, cifar10 or an image-folder path "
            f"(default: {' '.join(COMMAND_DATASETS[command])})",
        )
        if command in ("permuted", "stream"):
            p.add_argument(
                "--tasks" if command == "permuted" else "--subsets",
                dest="num_tasks",
                type=int,
                help="number of tasks / subsets (paper: 10 / 60)",
            )
        p.add_argument("--epochs", type=int, help="epochs per task (paper: 20)")
        p.add_argument(
            "--meta", "-m", type=float, help="metaplasticity m; 0 = plain Adam"
        )
        p.add_argument("--lr", dest="learning_rate", type=float, help="learning rate")
        p.add_argument("--batch-size", type=int)
        p.add_argument(
            "--model",
            choices=["mlp_meta", "mlp_float", "vgg16_meta", "vgg_small_meta"],
            help="zoo model; mlp_float: full-precision MLP of the same shape, "
            "metaplastic rule on its float kernels",
        )
        p.add_argument(
            "--hidden-units",
            type=int,
            nargs="+",
            metavar="H",
            help="MLP widths (default 1024 1024)",
        )
        p.add_argument(
            "--baseline",
            choices=["ewc", "ewc_random", "si"],
            help="continual-learning baseline with task boundaries: EWC, EWC with "
            "shuffled Fisher (random consolidation) or Synaptic Intelligence; "
            "combines with --meta (the paper's EWC runs: --meta 0)",
        )
        p.add_argument(
            "--ewc-lambda", type=float, help="EWC strength (default: paper's 5e3)"
        )
        p.add_argument(
            "--fisher-samples",
            type=int,
            metavar="N",
            help="training examples of each task's Fisher estimate (default 5000)",
        )
        p.add_argument("--si-c", type=float, help="SI strength (default 0.1)")
        p.add_argument("--si-xi", type=float, help="SI damping (default 0.1)")
        p.add_argument(
            "--joint",
            action="store_true",
            help="train on the union of all tasks (upper-bound reference)",
        )
        p.add_argument(
            "--shared-optimizer",
            action="store_true",
            help="one optimizer for the whole run (default: fresh per task)",
        )
        p.add_argument(
            "--bn",
            dest="batch_norm",
            choices=["task", "domain"],
            default="task",
            help="BatchNorm state per task (default) or shared",
        )
        p.add_argument(
            "--recalibrate-bn",
            type=int,
            default=20,
            metavar="N",
            help="batches used to re-estimate a finished task's BatchNorm statistics "
            "under the current weights before evaluating it (0: saved statistics)",
        )
        p.add_argument("--augment", choices=["flip_crop", "flip_rotate"])
        p.add_argument(
            "--evaluate",
            choices=["epoch", "task"],
            default="epoch",
            help="evaluate every task after every epoch (default) or task ends",
        )
        p.add_argument("--seed", type=int, default=0)
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
            "--strategy",
            choices=["none", "mirrored", "multiworker"],
            default="none",
            help="mirrored: all local GPUs; multiworker: machines in TF_CONFIG",
        )
        p.add_argument(
            "--data-dir",
            help="dataset directory (else $METAPLASTIC_DATA_DIR, "
            "then tensorflow-datasets)",
        )
        p.add_argument("--run-dir", help="run directory (default: runs/<protocol>-...)")
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
    help_text = "package a finished run as a pretrained model (SavedModel, LCE, card)"
    p = commands.add_parser("package", help=help_text, description=help_text)
    p.add_argument("run_dir", help="a finished run directory")
    p.add_argument("--name", required=True, help="pretrained model name")
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
    p.add_argument("--overwrite", action="store_true", help="replace NAME/")
    return parser


def canonical_name(dataset: str) -> str:
    """`fashion-mnist` -> `fashion_mnist`; a path -> its last component."""
    return (
        dataset.rstrip("/").rpartition("/")[2].split(".")[0].replace("-", "_").lower()
    )


def config_from_args(args: argparse.Namespace):
    """The `RunConfig` a parsed command line describes, with the paper's defaults."""
    from training.runner import RunConfig

    protocol = "sequence" if args.command == "train" else args.command
    dataset = canonical_name(args.datasets[0])
    defaults = dict(PAPER_DEFAULTS.get((protocol, dataset), FALLBACK))
    if args.command == "train":
        defaults.update(epochs=5)
    chosen = {
        k: getattr(args, k)
        for k in (
            "num_tasks",
            "epochs",
            "meta",
            "learning_rate",
            "batch_size",
            "model",
            "augment",
            "baseline",
            "ewc_lambda",
            "fisher_samples",
            "si_c",
            "si_xi",
        )
        if getattr(args, k, None) is not None
    }
    values = {**defaults, **chosen}
    if args.hidden_units:
        values["hidden_units"] = tuple(args.hidden_units)
    name = "-".join(canonical_name(d) for d in args.datasets)
    run_dir = args.run_dir or (
        f"runs/{args.command}-{name}-m{values['meta']:g}-seed{args.seed}"
        + ("-joint" if args.joint else "")
        + ("-float" if values.get("model") == "mlp_float" else "")
        + (f"-{args.baseline}" if args.baseline else "")
    )
    return RunConfig(
        protocol=protocol,
        datasets=tuple(args.datasets),
        joint=args.joint,
        optimizer_per_task=not args.shared_optimizer,
        batch_norm=args.batch_norm,
        recalibrate_bn=args.recalibrate_bn,
        evaluate=args.evaluate,
        seed=args.seed,
        jit_compile=args.jit_compile,
        initial_weights=args.initial_weights,
        data_dir=args.data_dir,
        run_dir=run_dir,
        **values,
    )


def _strategy(name: str):
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return None


def _package(args: argparse.Namespace) -> int:
    from training.packaging import package_run

    try:
        card = package_run(
            args.run_dir,
            name=args.name,
            directory=args.output_dir,
            command=args.training_command,
            budget=args.budget,
            data_dir=args.data_dir,
            lce_samples=args.lce_samples,
            overwrite=args.overwrite,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    results = card["results"]
    lce = results.get("lce") or {}
    print(f"Wrote {Path(args.output_dir) / args.name}")
    print(f"Keras test accuracy: {100 * results['keras_test_accuracy']:.2f}%")
    if "test_accuracy" in lce:
        print(
            f"LCE test accuracy: {100 * lce['test_accuracy']:.2f}% on "
            f"{lce['samples']:,} images (argmax agreement with Keras "
            f"{100 * lce['agreement']:.2f}%)"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    if args.command == "package":
        return _package(args)
    from training.runner import run

    try:
        config = config_from_args(args)
        summary = run(
            config,
            strategy=_strategy(args.strategy),
            overwrite=args.overwrite,
            verbose=2 if args.quiet else 1,
        )
    except ValueError as error:  # bad input, missing data, foreign run directory
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; run the same command again to resume from the last "
            f"completed epoch ({config.run_dir}).",
            file=sys.stderr,
        )
        return 130
    with open(Path(config.run_dir) / "commands.txt", "a") as f:
        f.write(f"python -m training {shlex.join(argv)}\n")
    final = summary["final_accuracy"]
    print(
        "Final test accuracy: "
        + ", ".join(f"{k} {100 * v:.2f}%" for k, v in final.items())
    )
    print(
        f"Mean: {100 * summary['mean_accuracy']:.2f}%  "
        f"(wall time {summary['wall_time_s']:.0f} s)"
    )
    return 0
