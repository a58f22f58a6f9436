"""The configuration of a run, and the command line's defaults as presets.

`RunConfig` holds everything that defines a continual-learning run of
`training.runner.run`; it is saved as `config.json` in the run directory, and a run
directory is only resumed by a configuration with the same `identity()`. `PRESETS`
holds the defaults per protocol and dataset, the settings of the paper's figures
(Laborieux et al. 2021; see the comment at `PRESETS`): the command line
(`python -m training`) and the tuner start from them, and so can the Python API.
`RunConfig`'s own defaults are the reference code's protocol: BatchNorm statistics
saved per task, L2 weight decay 1e-7, EWC and SI on the binarized weights, a fresh
optimizer per task except in streams.

!!! example
    ```python
    from training.config import RunConfig, preset

    preset("stream", "cifar10")["meta"]  # 13.0 (Fig. 4b)
    config = RunConfig.from_preset("permuted", num_tasks=3, run_dir="runs/pmnist")
    ```
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import zoo  # noqa: F401  (the zoo's models join the registry on import)
from training import baselines, data
from training.protocols import STREAM_SPLITS
from zoo import registry
from zoo.datasets import canonical_name
from zoo.precision import DEFAULT_PRECISION, check_precision
from zoo.validation import (
    check_choice,
    check_nonnegative_int,
    check_positive_int,
    check_real,
    check_units,
)

__all__ = [
    "AUGMENTATIONS",
    "BASELINES",
    "BATCH_NORM",
    "DEFAULT_DATASETS",
    "BASELINE_TARGETS",
    "EVALUATE",
    "FALLBACK_PRESET",
    "LR_SCHEDULES",
    "PRESETS",
    "PROTOCOLS",
    "RunConfig",
    "WEIGHT_DECAY",
    "preset",
]

PROTOCOLS = ("permuted", "sequence", "stream")
BASELINES = (None, *baselines.BASELINES)
BATCH_NORM = ("task", "domain")
EVALUATE = ("epoch", "task")
AUGMENTATIONS = (None, *data.AUGMENTATIONS)
# "constant": the paper's; "cosine": from `learning_rate` down to 0 over each
# optimizer's lifetime (a task, or the whole run with one optimizer).
LR_SCHEDULES = ("constant", "cosine")

# Fields that say where a run is, not what it is: a run directory may be resumed with
# other values (a moved data directory, a copied run directory).
_LOCATION_FIELDS = ("data_dir", "run_dir")

# The paper's L2 weight decay (the reference code's `--decay`, added to the gradient
# before Adam's moments): 1e-7 in its commands, 1e-8 in the width sweeps.
WEIGHT_DECAY = 1e-7
# What `baseline_on` consolidates: the binarized weights sign(Wh) (the reference code)
# or the latent weights Wh.
BASELINE_TARGETS = baselines.CONSOLIDATION_TARGETS

# Values of fields a `config.json` lacks because it was written before they existed:
# the behaviour of the code that wrote it (no weight decay, EWC/SI on the latent
# weights, float32), not today's defaults.
_LEGACY_VALUES = MappingProxyType(
    dict(
        weight_decay=0.0,
        baseline_on="latent",
        precision="float32",
        batch_norm_affine=True,
        stream_split="balanced",
    )
)

# The command line's defaults by (protocol, dataset), as `RunConfig` fields: the
# settings of the paper's figure for that protocol and dataset (Laborieux et al. 2021,
# the commands of the authors' README). A sequence is keyed by its datasets joined with
# "+". Smaller, named settings of every experiment: `training.paper`.
PRESETS: Mapping[tuple[str, str], Mapping[str, Any]] = MappingProxyType(
    {
        # Fig. 2d: permuted MNIST, 6 tasks x 40 epochs, 4096-4096, fresh Adam per task,
        # BatchNorm statistics saved per task.
        ("permuted", "mnist"): MappingProxyType(
            dict(
                meta=1.35,
                learning_rate=0.005,
                batch_size=100,
                epochs=40,
                num_tasks=6,
                hidden_units=(4096, 4096),
                weight_decay=WEIGHT_DECAY,
            )
        ),
        # Fig. 4b / Supp. Fig. 6d: MNIST then Fashion-MNIST (and reversed), 50 epochs.
        **{
            ("sequence", order): MappingProxyType(
                dict(
                    meta=1.5,
                    learning_rate=0.005,
                    batch_size=100,
                    epochs=50,
                    hidden_units=(4096, 4096),
                    weight_decay=WEIGHT_DECAY,
                )
            )
            for order in ("mnist+fashion_mnist", "fashion_mnist+mnist")
        },
        # Fig. 4a: stream Fashion-MNIST, 60 subsets of 1,000 images, 20 epochs each, one
        # optimizer for the stream.
        ("stream", "fashion_mnist"): MappingProxyType(
            dict(
                meta=2.5,
                learning_rate=0.005,
                batch_size=100,
                epochs=20,
                num_tasks=60,
                hidden_units=(1024, 1024),
                weight_decay=WEIGHT_DECAY,
            )
        ),
        # Fig. 4b: stream CIFAR-10, 20 subsets x 200 epochs, VGG-Small, augmentation,
        # one optimizer for the stream, no weight decay (none in its command).
        ("stream", "cifar10"): MappingProxyType(
            dict(
                meta=13.0,
                learning_rate=1e-4,
                batch_size=64,
                epochs=200,
                num_tasks=20,
                model="vgg_small_meta",
                augment="flip_rotate_or_crop",
                weight_decay=0.0,
            )
        ),
    }
)
# Every other protocol and dataset (the paper's optimizer settings).
FALLBACK_PRESET: Mapping[str, Any] = MappingProxyType(
    dict(meta=1.35, learning_rate=0.005, batch_size=100, epochs=20, num_tasks=10)
)
# The datasets of each protocol when none are named.
DEFAULT_DATASETS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "permuted": ("mnist",),
        "sequence": ("mnist", "fashion_mnist"),
        "stream": ("fashion_mnist",),
    }
)


def preset(protocol: str, datasets: str | Sequence[str]) -> dict:
    """The command line's defaults for `protocol` on `datasets`, as `RunConfig` fields.

    # Arguments
        protocol: one of `PROTOCOLS`.
        datasets: a dataset name or image-folder path (`fashion-mnist` and
            `fashion_mnist` are the same dataset), or the datasets of a sequence.

    # Returns
        A new dict of `RunConfig` fields: `PRESETS[(protocol, key)]` (the key joins a
        sequence's datasets with "+"), else `FALLBACK_PRESET`.

    # Raises
        ValueError: for an unknown protocol.
    """
    check_choice(protocol, "protocol", PROTOCOLS)
    names = [datasets] if isinstance(datasets, str) else list(datasets)
    key = "+".join(canonical_name(d) for d in names)
    return dict(PRESETS.get((protocol, key), FALLBACK_PRESET))


@dataclass
class RunConfig:
    """Everything that defines a run; saved as `config.json` in the run directory.

    # Arguments
        protocol: `"permuted"` (N permutations of one dataset), `"sequence"` (one task per
            dataset) or `"stream"` (one dataset in `num_tasks` class-balanced subsets).
        datasets: dataset names or image-folder paths (`training.data.load_dataset`).
        num_tasks: permuted tasks or stream subsets (ignored for sequences).
        joint: train on the union of all tasks at once (the upper-bound reference).
        model: a registered zoo model (`zoo.registry.model_names()`); `hidden_units`
            applies to the models that take it (`mlp_meta`, `mlp_float`). A float model
            (`mlp_float`) is trained with the metaplastic rule on its float kernels
            (`MetaplasticAdam(metaplastic_variables="kernels")`).
        meta: the metaplasticity m of `MetaplasticAdam` (0 is plain Adam), or a mapping
            from binary layer name to m (layers not named get 0).
        baseline: `None`, or a continual-learning baseline with task boundaries
            (`training.baselines`): `"ewc"`, `"ewc_random"` (EWC with shuffled Fisher
            values, the paper's control) or `"si"` (Synaptic Intelligence). It
            combines with any `meta` (the paper's EWC runs use `meta=0`).
        baseline_on: what the baseline consolidates: `"binary"`, the binarized weights
            sign(Wh) against the anchors sign(Wh*), the gradient passed straight through
            to Wh so that only flipped weights feel it (the reference code), or
            `"latent"`, the latent weights Wh (every Wh pulled back to its anchor).
            Float models consolidate their float kernels either way. A `config.json`
            written before this field existed reads as `"latent"`.
        ewc_lambda: EWC strength (paper: 5e3).
        fisher_samples: training examples of each task's Fisher estimate (reference
            code: 5000).
        si_c, si_xi: SI strength (Zenke et al. 2017: 0.1) and damping (reference
            code: 0.1).
        learning_rate, batch_size, epochs: optimizer step, batch, epochs per task.
        weight_decay: L2 coefficient added to every gradient before Adam's moments
            (`MetaplasticAdam(weight_decay=...)`, the reference code's `--decay`): 1e-7
            in the paper's commands, 1e-8 in its width sweeps, 0 in its CIFAR-10 stream.
            A `config.json` written before this field existed reads as 0.
        lr_schedule: `"constant"` (the paper's) or `"cosine"`: the learning rate
            decays from `learning_rate` to 0 along a half cosine over the optimizer's
            lifetime, the epochs of a task with `optimizer_per_task`, else the whole
            run (`tf.keras.optimizers.schedules.CosineDecay` of the optimizer's step
            count, so that a resumed run continues the same schedule). For training a
            model to convergence, beyond the paper.
        optimizer_per_task: a fresh optimizer (new Adam moments) for every task, as in the
            paper's permuted-MNIST and dataset-sequence experiments; `False`: one
            optimizer for the whole run, as in the paper's streams. `None` (default)
            picks the paper's choice for the protocol: `False` for `"stream"`, else
            `True`.
        stream_split: how a stream's subsets are cut from the training set
            (`training.protocols.stream_subsets`): `"balanced"` (default), the same
            number of images of every class in each subset; `"chunks"`, consecutive
            chunks of one seeded random permutation, as the reference code.
        batch_norm_affine: whether the BatchNorm layers learn a scale gamma and an
            offset beta, for the models whose factory takes `batch_norm_affine`
            (`mlp_meta`, `mlp_float`). `None` (default) picks the paper's choice:
            `False` for a stream (the reference's stream network normalizes without
            affine parameters), else `True`. A `config.json` written before this
            field existed reads as `True`.
        batch_norm: `"task"`: BatchNorm state saved at the end of each task and restored to
            evaluate it (`training.batchnorm`); `"domain"`: one shared BatchNorm state.
        recalibrate_bn: with `batch_norm="task"`, re-estimate a finished task's BatchNorm
            statistics under the current weights from this many batches of its training
            data before evaluating it (its saved gamma and beta are kept). 0 (default,
            the paper's protocol) evaluates with the statistics saved at the end of the
            task, as the published figures were produced. Beyond the paper: statistics
            frozen at the end of a task go stale as later tasks flip weights, and
            re-estimating them (e.g. 20 batches) recovers much of the accuracy of
            finished tasks (README, "Beyond the paper"). The authors' code switched to
            batch statistics in August 2023, a workaround for a numerical instability
            in newer PyTorch, not the paper's protocol.
        augment: CIFAR augmentation (`None`, `"flip_crop"`, `"flip_rotate"`).
        evaluate: `"epoch"`: every task after every epoch; `"task"`: at task ends only.
        seed: seeds the permutations, splits, initial weights, shuffling and dropout.
        validation_split: when > 0, this seeded random fraction of each dataset's
            training images is held out and used as its evaluation set in place of the
            test set (for hyperparameter search: `tuning`); the test set is not read.
        jit_compile: compile the training step with XLA (not with a distribution strategy).
        precision: `"float32"`, or `"bf16"`: the binary layers compute in bfloat16
            (`zoo.precision`; latent weights, batch normalization, logits and loss stay
            float32). For the models whose factory takes a `precision`; a
            `config.json` written before this field existed reads as `"float32"`.
        data_dir: where datasets are looked for first (see `training.data`).
        run_dir: the run directory.
        initial_weights: start from these weights instead of random ones: another run
            directory (the weights of its last completed epoch), a pretrained model name
            or a weights file (as a zoo factory's `weights=`). A fresh optimizer starts
            with them; resuming this run restores its own checkpoint instead.

    # Raises
        ValueError: for an invalid field (the message names the field and its value).
    """

    protocol: str = "permuted"
    datasets: tuple[str, ...] = ("mnist",)
    num_tasks: int = 5
    joint: bool = False
    model: str = "mlp_meta"
    hidden_units: tuple[int, ...] = (1024, 1024)
    meta: float | dict[str, float] = 1.35
    baseline: str | None = None
    baseline_on: str = "binary"
    ewc_lambda: float = baselines.EWC_LAMBDA
    fisher_samples: int = baselines.FISHER_SAMPLES
    si_c: float = baselines.SI_C
    si_xi: float = baselines.SI_XI
    learning_rate: float = 0.005
    batch_size: int = 100
    epochs: int = 5
    weight_decay: float = WEIGHT_DECAY
    lr_schedule: str = "constant"
    optimizer_per_task: bool | None = None
    batch_norm_affine: bool | None = None
    stream_split: str = "balanced"
    batch_norm: str = "task"
    recalibrate_bn: int = 0
    augment: str | None = None
    evaluate: str = "epoch"
    seed: int = 0
    validation_split: float = 0.0
    jit_compile: bool = False
    precision: str = DEFAULT_PRECISION
    data_dir: str | None = None
    run_dir: str = "runs/run"
    initial_weights: str | None = None

    def __post_init__(self):
        check_choice(self.protocol, "protocol", PROTOCOLS)
        if isinstance(self.datasets, str):
            self.datasets = (self.datasets,)
        self.datasets = tuple(self.datasets)
        if not self.datasets:
            raise ValueError("datasets must name at least one dataset, got ().")
        if self.protocol != "sequence" and len(self.datasets) != 1:
            raise ValueError(
                f"protocol {self.protocol!r} takes one dataset, got datasets "
                f"{self.datasets!r}."
            )
        check_choice(self.model, "model", registry.model_names())
        check_precision(self.precision)
        if self.precision != "float32" and not registry.get_model(self.model).takes(
            "precision"
        ):
            raise ValueError(
                f"precision {self.precision!r} is not available for model "
                f"{self.model!r}; use precision 'float32'."
            )
        self.hidden_units = check_units(tuple(self.hidden_units), "hidden_units")
        check_choice(self.baseline, "baseline", BASELINES)
        check_choice(self.baseline_on, "baseline_on", BASELINE_TARGETS)
        if self.optimizer_per_task is None:
            self.optimizer_per_task = self.protocol != "stream"
        check_choice(self.optimizer_per_task, "optimizer_per_task", (True, False))
        takes_affine = registry.get_model(self.model).takes("batch_norm_affine")
        if self.batch_norm_affine is None:
            self.batch_norm_affine = not (takes_affine and self.protocol == "stream")
        check_choice(self.batch_norm_affine, "batch_norm_affine", (True, False))
        if not self.batch_norm_affine and not takes_affine:
            raise ValueError(
                f"batch_norm_affine False is not available for model {self.model!r} "
                "(its BatchNorm layers always learn gamma and beta); leave it unset."
            )
        check_choice(self.lr_schedule, "lr_schedule", LR_SCHEDULES)
        check_choice(self.stream_split, "stream_split", STREAM_SPLITS)
        check_choice(self.batch_norm, "batch_norm", BATCH_NORM)
        check_choice(self.evaluate, "evaluate", EVALUATE)
        check_choice(self.augment, "augment", AUGMENTATIONS)
        for name in ("num_tasks", "batch_size", "epochs", "fisher_samples"):
            check_positive_int(getattr(self, name), name)
        check_nonnegative_int(self.recalibrate_bn, "recalibrate_bn")
        if check_nonnegative_int(self.seed, "seed") >= 2**32:
            raise ValueError(
                f"seed must be an integer >= 0 and < 2**32, got {self.seed}."
            )
        check_real(self.learning_rate, "learning_rate", low=0, low_open=True)
        check_real(self.weight_decay, "weight_decay", low=0)
        check_real(self.ewc_lambda, "ewc_lambda", low=0)
        check_real(self.si_c, "si_c", low=0)
        check_real(self.si_xi, "si_xi", low=0, low_open=True)
        check_real(
            self.validation_split, "validation_split", low=0, high=1, high_open=True
        )
        if isinstance(self.meta, Mapping):
            self.meta = {
                str(layer): check_real(m, f"meta[{str(layer)!r}]", low=0)
                for layer, m in self.meta.items()
            }
        else:
            check_real(self.meta, "meta", low=0)

    @classmethod
    def from_preset(
        cls, protocol: str, datasets: Sequence[str] | None = None, **fields: Any
    ) -> RunConfig:
        """The configuration of `protocol` with the command line's defaults (`preset`).

        # Arguments
            protocol: one of `PROTOCOLS`.
            datasets: the datasets; default `DEFAULT_DATASETS[protocol]`.
            **fields: other `RunConfig` fields; they take precedence over the preset.

        # Returns
            A `RunConfig`.

        # Raises
            ValueError: for an unknown protocol or an invalid field.
        """
        check_choice(protocol, "protocol", PROTOCOLS)
        datasets = tuple(DEFAULT_DATASETS[protocol] if datasets is None else datasets)
        if not datasets:
            raise ValueError("datasets must name at least one dataset, got ().")
        values = {**preset(protocol, datasets), **fields}
        return cls(protocol=protocol, datasets=datasets, **values)

    @classmethod
    def from_json(cls, saved: Mapping[str, Any]) -> RunConfig:
        """The configuration a `config.json` holds.

        # Arguments
            saved: the parsed `config.json`; fields it lacks (added since it was
                written) take the values of the code that wrote it where they changed
                the behaviour (no weight decay, EWC/SI on the latent weights), else
                their defaults; keys that are not fields are ignored.

        # Returns
            A `RunConfig`.

        # Raises
            ValueError: for an invalid field.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        values = {**_LEGACY_VALUES, **saved}
        return cls(**{k: v for k, v in values.items() if k in known})

    def to_json(self) -> dict:
        """The fields as JSON values (tuples as lists), as written to `config.json`."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def identity(self) -> dict:
        """The fields that must match for a run directory to be resumed: all but
        `data_dir` and `run_dir`."""
        return _identity(self.to_json())

    @classmethod
    def saved_identity(cls, saved: Mapping[str, Any]) -> dict:
        """The `identity()` of the run a `config.json` holds, as it was written; fields
        it lacks (added since) read as in `from_json`."""
        return cls.from_json(saved).identity()


def _identity(values: dict) -> dict:
    return {k: v for k, v in values.items() if k not in _LOCATION_FIELDS}
