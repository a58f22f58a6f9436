"""Command line: `python -m tuning search ...`.

A thin layer over `tuning.search`: builds the base `RunConfig` and the
`MetaplasticHyperModel`, runs the search (or, in distributed mode, the chief's oracle
or one worker), then prints the results table, the best hyperparameters and the test
accuracies of the best hyperparameters retrained on all training data. Running the
same command again continues the search.
"""

from __future__ import annotations

import argparse
import os
import sys

import zoo  # noqa: F401  (the zoo's models join the registry on import)
from training.cli import quiet_logs, run_warnings
from training.config import DEFAULT_DATASETS, PROTOCOLS, RunConfig
from tuning.hypermodel import MetaplasticHyperModel
from tuning.search import (
    ORACLE_IP_ENV,
    ORACLE_PORT_ENV,
    TUNER_ID_ENV,
    TUNERS,
    distributed_role,
    make_tuner,
    summarize_search,
)
from zoo import registry
from zoo.datasets import canonical_name, load_dataset
from zoo.precision import DEFAULT_PRECISION, PRECISIONS

__all__ = ["main", "set_distributed_environment"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tuning",
        description="Keras Tuner search over metaplasticity m and learning rate.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser(
        "search",
        help="search m and the learning rate on a continual-learning protocol",
        description="Each trial is a whole continual-learning run scored on a "
        "validation split of the training data.",
    )
    p.add_argument("--protocol", choices=PROTOCOLS, default="permuted")
    p.add_argument(
        "--datasets",
        "--dataset",
        nargs="+",
        metavar="NAME",
        help="datasets (default: mnist; sequence: mnist fashion_mnist; "
        "stream: fashion_mnist)",
    )
    p.add_argument(
        "--tasks",
        "--subsets",
        dest="num_tasks",
        type=int,
        default=3,
        help="permuted tasks or stream subsets (--subsets: the same; default 3)",
    )
    p.add_argument("--tuner", choices=TUNERS, default="bayesian")
    p.add_argument(
        "--max-trials",
        type=int,
        default=12,
        help="trials (random, bayesian; default 12)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=1,
        help="epochs per task (hyperband: the largest budget)",
    )
    p.add_argument("--hyperband-factor", type=int, default=3)
    p.add_argument(
        "--model", choices=registry.model_names(binary=True), default="mlp_meta"
    )
    p.add_argument(
        "--hidden-units",
        type=int,
        nargs="+",
        metavar="H",
        default=[512, 512],
        help="MLP widths (default 512 512)",
    )
    p.add_argument(
        "--hidden-units-choices",
        type=int,
        nargs="+",
        metavar="H",
        help="tune the width of every hidden layer among these",
    )
    p.add_argument(
        "--meta-range",
        type=float,
        nargs=2,
        metavar=("MIN", "MAX"),
        default=[0.0, 3.0],
        help="range of m (default 0 3)",
    )
    p.add_argument(
        "--lr-range",
        type=float,
        nargs=2,
        metavar=("MIN", "MAX"),
        default=[1e-4, 1e-2],
        help="learning-rate range, log scale (default 1e-4 1e-2)",
    )
    p.add_argument(
        "--lr",
        type=float,
        metavar="LR",
        help="a fixed learning rate instead of --lr-range (tune m alone)",
    )
    p.add_argument(
        "--per-layer-meta",
        action="store_true",
        help="one m per binary layer instead of one for all",
    )
    p.add_argument(
        "--validation-split",
        type=float,
        default=0.1,
        help="fraction of training data that scores trials (default 0.1)",
    )
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=DEFAULT_PRECISION,
        help="bf16: binary layers compute in bfloat16 (default %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help="dataset directory")
    p.add_argument(
        "--directory",
        default="tuning_runs",
        help="tuner directory, shared by chief and workers",
    )
    p.add_argument(
        "--project", help="search name (default: <protocol>-<dataset>-<tuner>)"
    )
    p.add_argument("--overwrite", action="store_true", help="start the search afresh")
    p.add_argument(
        "--no-retrain",
        action="store_true",
        help="skip retraining the best hyperparameters on all training data",
    )
    p.add_argument(
        "--role",
        choices=["chief", "worker"],
        help="distributed tuning: serve the oracle (chief) or run trials "
        "(worker); else KERASTUNER_* environment variables are used as set",
    )
    p.add_argument(
        "--worker-id",
        type=int,
        default=0,
        help="this worker's number (KERASTUNER_TUNER_ID=tuner<N>)",
    )
    p.add_argument("--oracle-ip", help="the chief's address (KERASTUNER_ORACLE_IP)")
    p.add_argument(
        "--oracle-port", type=int, help="the chief's port (KERASTUNER_ORACLE_PORT)"
    )
    p.add_argument("--quiet", action="store_true", help="less output")
    return parser


def set_distributed_environment(args: argparse.Namespace) -> None:
    """Sets Keras Tuner's `KERASTUNER_*` variables from `--role` and the oracle flags.

    # Raises
        ValueError: if `--role` is given without `--oracle-ip` and `--oracle-port`.
    """
    if args.role is None:
        return
    if args.oracle_ip is None or args.oracle_port is None:
        raise ValueError("--role needs --oracle-ip and --oracle-port")
    if args.worker_id < 0:
        raise ValueError("--worker-id must be >= 0")
    os.environ[TUNER_ID_ENV] = (
        "chief" if args.role == "chief" else f"tuner{args.worker_id}"
    )
    os.environ[ORACLE_IP_ENV] = args.oracle_ip
    os.environ[ORACLE_PORT_ENV] = str(args.oracle_port)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        set_distributed_environment(args)
        datasets = args.datasets or DEFAULT_DATASETS[args.protocol]
        base_config = RunConfig(
            protocol=args.protocol,
            datasets=tuple(datasets),
            num_tasks=args.num_tasks,
            model=args.model,
            hidden_units=tuple(args.hidden_units),
            batch_size=args.batch_size,
            epochs=args.epochs,
            seed=args.seed,
            data_dir=args.data_dir,
            precision=args.precision,
        )
        if not 0 < args.validation_split < 1:
            raise ValueError("--validation-split must be in (0, 1)")
        data = load_dataset(datasets[0], data_dir=args.data_dir)
        num_classes = (
            max(
                len(load_dataset(d, data_dir=args.data_dir).class_names)
                for d in datasets[1:]
            )
            if len(datasets) > 1
            else len(data.class_names)
        )
        num_classes = max(num_classes, len(data.class_names))
        hypermodel = MetaplasticHyperModel(
            model=args.model,
            input_shape=data.x_train.shape[1:],
            num_classes=num_classes,
            meta_range=tuple(args.meta_range),
            per_layer_meta=args.per_layer_meta,
            learning_rate_range=tuple(args.lr_range),
            learning_rate=args.lr,
            hidden_units_choices=args.hidden_units_choices,
            hidden_units=tuple(args.hidden_units),
            precision=args.precision,
        )
        name = "-".join(canonical_name(d) for d in datasets)
        tuner = make_tuner(
            args.tuner,
            base_config=base_config,
            hypermodel=hypermodel,
            max_trials=args.max_trials,
            directory=args.directory,
            project_name=args.project or f"{args.protocol}-{name}-{args.tuner}",
            validation_split=args.validation_split,
            max_epochs=args.epochs,
            factor=args.hyperband_factor,
            seed=args.seed,
            overwrite=args.overwrite,
        )
        with quiet_logs(), run_warnings():
            tuner.search(verbose=0 if args.quiet else 1)
        if distributed_role() == "worker":
            print(f"Worker {os.environ[TUNER_ID_ENV]} done.")
            return 0
        summarize_search(tuner, retrain=not args.no_retrain, verbose=1)
    except ValueError as error:  # bad input, missing data, foreign run directory
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\ninterrupted; run the same command again to continue the search.",
            file=sys.stderr,
        )
        return 130
    return 0
