"""The paper's experiments as data: each figure's runs at the authors' settings, and
named smaller scales.

Laborieux et al., "Synaptic metaplasticity in binarized neural networks", Nature
Communications 12, 2549 (2021). The settings are those of the commands in the authors'
README (GitHub `Laborieux-Axel/SynapticMetaplasticityBNN`); `RunConfig`'s defaults
already follow their code's protocol (BatchNorm statistics saved per task, weight decay,
EWC on the binarized weights, one optimizer per stream). Every run of an experiment is
named by `(experiment, run, scale, seed)`, and so is every result file made from it
(`benchmarks/paper.py`).

!!! example
    ```python
    from training import paper

    paper.experiment_names()  # ("fig2", "fig2f", "table1", ...)
    config = paper.run_config("fig2", "m1.35", scale="quick", seed=1)
    ```
    and on the command line: `python -m training paper fig2 m1.35 --scale quick`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from training.config import PRESETS, WEIGHT_DECAY, RunConfig
from zoo.validation import check_choice, check_nonnegative_int

__all__ = [
    "EXPERIMENTS",
    "PAPER_SCALE",
    "Experiment",
    "experiment",
    "experiment_names",
    "run_config",
]

# The scale that runs an experiment exactly at the paper's settings.
PAPER_SCALE = "paper"

# Fig. 2's settings are the command line's permuted-MNIST defaults (`PRESETS`).
_FIG2 = dict(protocol="permuted", datasets=("mnist",), **PRESETS[("permuted", "mnist")])
_WIDTHS = (512, 1024, 2048, 4096)


def _frozen(mapping: Mapping) -> Mapping:
    return MappingProxyType({k: MappingProxyType(dict(v)) for k, v in mapping.items()})


@dataclass(frozen=True)
class Experiment:
    """One figure or table of the paper, as runs of `training.runner.run`.

    # Arguments
        name: short name (`"fig2"`).
        figure: what it reproduces (`"Fig. 2a-e, 2g-h"`).
        title: one line on what it shows.
        command: the authors' command(s) it follows, as in their README (abridged).
        fields: `RunConfig` fields shared by all its runs, at the paper's scale.
        runs: run name -> the fields that make that run (over `fields`).
        scales: scale name -> field overrides of a smaller setting (`"paper"` is the
            experiment as published and needs none).
        notes: what differs from the paper at every scale, if anything.
        shared: run name -> `(experiment, run)`: a run that is another experiment's
            run with the same configuration, trained once in that run's directory
            (Table 1's metaplastic run is Fig. 2d's).
    """

    name: str
    figure: str
    title: str
    command: str
    fields: Mapping[str, Any]
    runs: Mapping[str, Mapping[str, Any]]
    scales: Mapping[str, Mapping[str, Any]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    notes: str = ""
    shared: Mapping[str, tuple[str, str]] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def scale_names(self) -> tuple[str, ...]:
        """`"paper"`, then the smaller scales."""
        return (PAPER_SCALE, *self.scales)

    def fields_of(self, run: str, scale: str = PAPER_SCALE) -> dict:
        """The `RunConfig` fields of run `run` at `scale` (without seed and run
        directory).

        # Raises
            ValueError: for an unknown run or scale.
        """
        check_choice(run, "run", tuple(self.runs))
        check_choice(scale, "scale", self.scale_names())
        overrides = {} if scale == PAPER_SCALE else self.scales[scale]
        return {**self.fields, **self.runs[run], **overrides}


EXPERIMENTS: Mapping[str, Experiment] = MappingProxyType(
    {
        e.name: e
        for e in (
            Experiment(
                name="fig2",
                figure="Fig. 2a-e, 2g-h",
                title="Permuted MNIST, 6 tasks: a BNN with increasing metaplasticity m",
                command="main.py --net bnn --hidden-layers 4096 4096 --lr 0.005 "
                "--decay 1e-7 --meta {0,0.5,1,1.35} --epochs-per-task 40 "
                "--task-sequence pMNIST x6",
                fields=_FIG2,
                runs=_frozen({f"m{m:g}": dict(meta=m) for m in (0.0, 0.5, 1.0, 1.35)}),
                scales=_frozen({"quick": dict(hidden_units=(1024, 1024), epochs=10)}),
            ),
            Experiment(
                name="fig2f",
                figure="Fig. 2f",
                title="Permuted MNIST, 6 tasks: a full-precision network with the "
                "metaplastic rule on its kernels",
                command="main.py --net dnn --hidden-layers 4096 4096 --lr 0.005 "
                "--decay 1e-7 --meta {0,0.5,1,1.35} --epochs-per-task 40 "
                "--task-sequence pMNIST x6",
                fields=dict(_FIG2, model="mlp_float"),
                runs=_frozen({f"m{m:g}": dict(meta=m) for m in (0.0, 0.5, 1.0, 1.35)}),
                scales=_frozen({"quick": dict(hidden_units=(1024, 1024), epochs=10)}),
            ),
            Experiment(
                name="table1",
                figure="Table 1",
                title="Permuted MNIST, 6 tasks: metaplasticity against EWC and random "
                "consolidation",
                command="main.py --net bnn --hidden-layers 4096 4096 --lr 0.005 "
                "--decay 1e-7 --ewc --ewc-lambda 5000 [--rnd-consolidation] "
                "--epochs-per-task 40 --task-sequence pMNIST x6 (the README's command "
                "omits --ewc, which its main.py needs to use EWC)",
                fields=_FIG2,
                runs=_frozen(
                    {
                        "m1.35": dict(meta=1.35),
                        "m0": dict(meta=0.0),
                        "ewc": dict(meta=0.0, baseline="ewc", ewc_lambda=5e3),
                        "random": dict(meta=0.0, baseline="ewc_random", ewc_lambda=5e3),
                    }
                ),
                scales=_frozen({"quick": dict(hidden_units=(1024, 1024), epochs=10)}),
                shared=MappingProxyType(
                    {"m1.35": ("fig2", "m1.35"), "m0": ("fig2", "m0")}
                ),
            ),
            Experiment(
                name="fig3ab",
                figure="Fig. 3a-b",
                title="Permuted MNIST, 10 tasks, widths 512 to 4096: metaplasticity "
                "(m = 1.35) against EWC (m = 0)",
                command="main.py --net bnn --hidden-layers W W --lr 0.005 --decay 1e-8 "
                "{--meta 1.35 | --ewc --ewc-lambda 5e3 --meta 0} --epochs-per-task 40 "
                "--task-sequence pMNIST x10",
                # The figure plots the accuracies after the last task: evaluating at
                # task ends only spares 10 test sets after every epoch.
                fields=dict(_FIG2, num_tasks=10, weight_decay=1e-8, evaluate="task"),
                runs=_frozen(
                    {
                        **{
                            f"m1.35-w{w}": dict(meta=1.35, hidden_units=(w, w))
                            for w in _WIDTHS
                        },
                        **{
                            f"ewc-w{w}": dict(
                                meta=0.0,
                                baseline="ewc",
                                ewc_lambda=5e3,
                                hidden_units=(w, w),
                            )
                            for w in _WIDTHS
                        },
                    }
                ),
                scales=_frozen({"quick": dict(epochs=5)}),
            ),
            Experiment(
                name="fig3cd",
                figure="Fig. 3c-d",
                title="Permuted MNIST, 10 tasks learned interleaved (all at once), "
                "widths 512 to 4096, m = 0 and 1.35",
                command="main.py --net bnn --interleaved --hidden-layers W W --lr 0.005 "
                "--decay 1e-8 --meta {0,1.35} --epochs-per-task 40 "
                "--task-sequence pMNIST x10",
                fields=dict(
                    _FIG2, num_tasks=10, joint=True, weight_decay=1e-8, evaluate="task"
                ),
                runs=_frozen(
                    {
                        f"m{m:g}-w{w}": dict(meta=m, hidden_units=(w, w))
                        for m in (0.0, 1.35)
                        for w in _WIDTHS
                    }
                ),
                scales=_frozen({"quick": dict(epochs=5)}),
            ),
            Experiment(
                name="fig4ab",
                figure="Fig. 4a-b (published as Fig. 3 in the authors' README)",
                title="MNIST then Fashion-MNIST, m = 0 against m = 1.5",
                command="main.py --net bnn --hidden-layers 4096 4096 --lr 0.005 "
                "--decay 1e-7 --meta {0,1.5} --epochs-per-task 50 "
                "--task-sequence MNIST FMNIST",
                fields=dict(
                    protocol="sequence",
                    datasets=("mnist", "fashion_mnist"),
                    **PRESETS[("sequence", "mnist+fashion_mnist")],
                ),
                runs=_frozen({"m0": dict(meta=0.0), "m1.5": dict(meta=1.5)}),
                scales=_frozen({"quick": dict(hidden_units=(1024, 1024), epochs=10)}),
            ),
            Experiment(
                name="supp6cd",
                figure="Supp. Fig. 6c-d",
                title="Fashion-MNIST then MNIST, m = 0 against m = 1.5",
                command="main.py --net bnn --hidden-layers 4096 4096 --lr 0.005 "
                "--decay 1e-7 --meta {0,1.5} --epochs-per-task 50 "
                "--task-sequence FMNIST MNIST",
                fields=dict(
                    protocol="sequence",
                    datasets=("fashion_mnist", "mnist"),
                    **PRESETS[("sequence", "fashion_mnist+mnist")],
                ),
                runs=_frozen({"m0": dict(meta=0.0), "m1.5": dict(meta=1.5)}),
                scales=_frozen({"quick": dict(hidden_units=(1024, 1024), epochs=10)}),
            ),
            Experiment(
                name="stream_fmnist",
                figure="Stream Fashion-MNIST (Fig. 4a of the authors' README)",
                title="Fashion-MNIST learned as 60 subsets of 1,000 images, m = 2.5 "
                "against m = 0, and the whole set at once (joint)",
                command="main.py --task FMNIST --hidden-layers 1024 1024 --lr 0.005 "
                "--decay 1e-7 --meta {2.5,0} --epochs-per-task 20 --nb-subset {60,1}",
                fields=dict(
                    protocol="stream",
                    datasets=("fashion_mnist",),
                    **PRESETS[("stream", "fashion_mnist")],
                    evaluate="task",
                ),
                runs=_frozen(
                    {
                        "m2.5": dict(meta=2.5),
                        "m0": dict(meta=0.0),
                        "joint-m2.5": dict(meta=2.5, joint=True),
                        "joint-m0": dict(meta=0.0, joint=True),
                        # Beyond the paper: the effect of BatchNorm's gamma and beta,
                        # which the reference's stream network does not have.
                        "m2.5-affine": dict(meta=2.5, batch_norm_affine=True),
                        # The reference's split: consecutive chunks of one random
                        # permutation, against the default class-balanced subsets.
                        "m2.5-chunks": dict(meta=2.5, stream_split="chunks"),
                    }
                ),
                scales=_frozen({"quick": dict(num_tasks=20, epochs=5)}),
                notes="Subsets are class-balanced by default; the reference takes "
                "consecutive chunks of one random permutation (run m2.5-chunks "
                "measures the difference); accuracy is measured at the end "
                "of each subset (the reference: every epoch). BatchNorm has no gamma "
                "and beta, as the reference's stream network (results written before "
                "that default show batch_norm_affine true in their configs).",
            ),
            Experiment(
                name="stream_cifar10",
                figure="Stream CIFAR-10 (Fig. 4b of the authors' README)",
                title="CIFAR-10 learned as 20 subsets of 2,500 images by VGG-Small, "
                "m = 13 against m = 0, and the whole set at once (joint)",
                command="main.py --lr 0.0001 --mbs 64 --nb-subset {20,1} "
                "--epochs-per-task 200 --meta {13,0} --init gauss --init-width 0.007",
                fields=dict(
                    protocol="stream",
                    datasets=("cifar10",),
                    **PRESETS[("stream", "cifar10")],
                    evaluate="task",
                ),
                runs=_frozen(
                    {
                        "m13": dict(meta=13.0),
                        "m0": dict(meta=0.0),
                        "joint-m13": dict(meta=13.0, joint=True),
                        "joint-m0": dict(meta=0.0, joint=True),
                    }
                ),
                scales=_frozen({"quick": dict(num_tasks=5, epochs=4)}),
                notes="CIFAR-10 is the JPEG (quality 75) re-encoding of "
                "../shared/data; subsets are class-balanced; kernels start from the "
                "Xavier normal the reference script applies (its --init flags are "
                "ignored by its model); a dropped unit binarizes to +1 (Larq's "
                "sign(0)), 0 in the reference.",
            ),
            Experiment(
                name="fig5cde",
                figure="Fig. 5c-e",
                title="MNIST, 1024-1024, m = 1.35: the loss increase when binary "
                "weights of a given |Wh| switch sign",
                command="main.py --net bnn --hidden-layers 1024 1024 --decay 1e-7 "
                "--meta 1.35 --lr 0.005 --epochs-per-task 40 --task-sequence MNIST",
                fields=dict(
                    protocol="sequence",
                    datasets=("mnist",),
                    epochs=40,
                    hidden_units=(1024, 1024),
                    learning_rate=0.005,
                    batch_size=100,
                    weight_decay=WEIGHT_DECAY,
                ),
                runs=_frozen({"m1.35": dict(meta=1.35)}),
                scales=_frozen({"quick": dict(epochs=5)}),
            ),
        )
    }
)


def experiment_names() -> tuple[str, ...]:
    """The names of `EXPERIMENTS`, in the paper's order."""
    return tuple(EXPERIMENTS)


def experiment(name: str) -> Experiment:
    """The experiment called `name`.

    # Raises
        ValueError: for an unknown name (the message lists the known ones).
    """
    return EXPERIMENTS[check_choice(name, "experiment", experiment_names())]


def run_config(
    name: str,
    run: str,
    *,
    scale: str = PAPER_SCALE,
    seed: int = 0,
    run_dir: str | None = None,
    **fields: Any,
) -> RunConfig:
    """The configuration of one run of a paper experiment.

    # Arguments
        name: an experiment of `EXPERIMENTS`.
        run: one of its runs (`experiment(name).runs`).
        scale: `"paper"` (the published settings) or one of its smaller scales.
        seed: the run's seed.
        run_dir: its run directory; default `runs/paper/<name>/<scale>/<run>-seed<seed>`
            (for a run shared with another experiment, that experiment's name and run).
        **fields: other `RunConfig` fields (e.g. `precision`, `data_dir`); they take
            precedence over the experiment's.

    # Returns
        A `RunConfig`.

    # Raises
        ValueError: for an unknown experiment, run or scale, or an invalid field.
    """
    spec = experiment(name)
    check_nonnegative_int(seed, "seed")
    values = {**spec.fields_of(run, scale), "seed": seed, **fields}
    owner, owner_run = spec.shared.get(run, (name, run))
    values["run_dir"] = run_dir or f"runs/paper/{owner}/{scale}/{owner_run}-seed{seed}"
    known = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{unknown} are not RunConfig fields.")
    return RunConfig(**values)
