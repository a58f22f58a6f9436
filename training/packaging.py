"""Packages a finished run directory as a pretrained model of the zoo.

`package_run(run_dir, name=...)` rebuilds the run's model from its last checkpoint and
writes `saved_models/<name>/` with `zoo.publishing.package_pretrained`: the SavedModel
(latent weights), the Larq Compute Engine flatbuffer and a model card that says how the
model was trained (dataset, protocol, hyperparameters, the exact command, epochs, wall
time, compute budget), which copy of the data it was measured on (format, JPEG quality:
`zoo.datasets.provenance`) and what it scores (Keras and LCE accuracy on the run's test
split, Keras accuracy per class).
A run started from another run or from a pretrained model (`--initial-weights`) gets a
card covering both: commands, epochs and wall time added up, and for a pretrained model
`continued_from` (`continued_from(name)`), read before `name/` may be overwritten.
A run trained in bf16 (`zoo.precision`) is packaged as its float32 twin (same weights),
so that the pretrained model loads anywhere; its card's hyperparameters say `precision`.
A run over tasks learned one after another is measured on its last task (permuted
MNIST: that task's permuted test images) and its card holds the accuracy matrix and,
for permuted tasks, the permutation seed, so that users can continue the sequence.
With per-task BatchNorm (the paper's protocol) the model also ships every task's
BatchNorm state, the one the run evaluated that task with at its end
(`zoo.load_pretrained(name, task="task_1")`), and the card each task's accuracy with it.
`recalibrate_bn=N` (`--recalibrate-bn N`) ships BatchNorm moving statistics re-estimated
from N training batches of each task under the final weights instead of those the run
ended with or saved (beyond the paper: at the paper's width the moving statistics can go
stale, `benchmarks/bn_drift.py`); the card keeps the accuracy with both.

```bash
python -m training package runs/fmnist-stream-m2.5 --name mlp_meta_fashion_mnist_stream \
    --budget "2 CPU cores, 566 s"
```
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Optional

import numpy as np

from training.assembly import restore_run
from training.batchnorm import (
    TaskBatchNorm,
    batch_norm_layers,
    recalibrate,
    recalibration_batches,
    uses_task_statistics,
)
from training.rundir import RunDirectory, summed_machine_seconds
from zoo import registry
from zoo.datasets import load_dataset
from zoo.datasets.provenance import encoding_note, image_encoding
from zoo.precision import as_float32
from zoo.pretrained import (
    ARCHITECTURE_ARGUMENTS,
    architecture,
    is_pretrained_name,
    pretrained_card,
)

PROTOCOLS = {
    "sequence": "datasets learned one after another (one dataset: plain training)",
    "permuted": "permuted versions of one dataset learned one after another",
    "stream": "one dataset learned as a stream of class-balanced subsets",
}


def _data_card(dataset, *, test_images: int) -> dict:
    """A card's `data`: the source of the test images, its encoding and, for a lossy
    copy, the sentence saying so (`zoo.datasets.provenance`)."""
    encoding = image_encoding(dataset)
    return {
        **encoding,
        "test_images": int(test_images),
        "note": encoding_note(dataset.name, encoding),
    }


def _test_accuracy(model, task) -> float:
    logits = model.predict(task.test_images(), batch_size=256, verbose=0)
    return float(np.mean(logits.argmax(-1) == task.y_test))


def _task_batch_norm(restored, model, recalibrate_bn: int):
    """Each task's BatchNorm state, by layer, and the task's test accuracy with it: an
    earlier task's saved state (its moving statistics re-estimated from
    `recalibrate_bn` batches of it if positive), the last task's the model's own."""
    config, tasks = restored.config, restored.eval_tasks
    last = len(tasks) - 1
    if last < 1 or not all(
        uses_task_statistics(config, i, current_task=last, saved=restored.bn_states)
        for i in range(last)
    ):
        return None, None
    saved = TaskBatchNorm(model, restored.bn_states)
    states, accuracy = {}, {}
    for index, task in enumerate(tasks):
        if index < last:
            batches = recalibration_batches(config, task, index, count=recalibrate_bn)
            holding = saved.evaluating(index, batches=batches)
        else:
            holding = contextlib.nullcontext()
        with holding:
            accuracy[task.name] = round(_test_accuracy(model, task), 6)
            states[task.name] = {
                layer.name: layer.get_weights() for layer in batch_norm_layers(model)
            }
    if recalibrate_bn:
        statistics = (
            "every task's moving statistics re-estimated under the final weights from "
            f"{recalibrate_bn} of its training batches (beyond the paper); the last row "
            "of the accuracy matrix gives each task with the statistics saved at its end"
        )
    else:
        statistics = (
            "each earlier task's state is the one saved at its end (the paper's "
            "protocol), the last task's the one the run ended with"
        )
    card = {
        "keras_test_accuracy": accuracy,
        "recalibrated_batches": recalibrate_bn,
        "statistics": statistics,
    }
    return states, card


def continued_from(name: str) -> dict:
    """What a model card says of the pretrained model `name` a run continued from.

    # Arguments
        name: a registered pretrained model name (a run's `initial_weights`).

    # Returns
        `name`, its `card_sha256`, its training `command`(s), `epochs`, `wall_time_s`
        (and `machines`, where the card has them), `budget` and Keras test accuracy,
        from its verified card.

    # Raises
        ValueError: as `zoo.pretrained.pretrained_card`.
    """
    card = pretrained_card(name)
    return {
        "name": name,
        "card_sha256": card.get("card_sha256"),
        "command": card["command"],
        "epochs": card["epochs"],
        "wall_time_s": card["wall_time_s"],
        **({"machines": card["machines"]} if "machines" in card else {}),
        "budget": card.get("budget"),
        "keras_test_accuracy": card["results"].get("keras_test_accuracy"),
    }


def package_run(
    run_dir: str | os.PathLike,
    *,
    name: str,
    directory: str | os.PathLike = "saved_models",
    command: Optional[str] = None,
    budget: Optional[str] = None,
    data_dir: Optional[str | os.PathLike] = None,
    lce_samples: Optional[int] = None,
    recalibrate_bn: int = 0,
    overwrite: bool = False,
) -> dict:
    """Writes `directory/name/` from the last checkpoint of a finished run.

    # Arguments
        run_dir: a run directory written by `training.runner.run`, with `summary.json`.
        name: the pretrained model's name (e.g. one of `zoo.pretrained_models()`).
        directory: where to write `name/`; default the repository's `saved_models/`.
        command: the exact training command(s) for the card; default the last command
            recorded in `run_dir/commands.txt` by `python -m training` (preceded by
            that of the run it started from, with `initial_weights`, or by the
            commands in the card of the pretrained model it started from).
        budget: the compute the run used, in words (e.g. "2 CPU cores, 40 min").
        data_dir: where the datasets are; default the run's, else
            `$METAPLASTIC_DATA_DIR`.
        lce_samples: test images the LCE flatbuffer is checked on (default: all).
        recalibrate_bn: if positive, the BatchNorm moving statistics are re-estimated
            from this many training batches of the evaluated task (the batches
            `training.batchnorm.recalibration_batches` gives a run) before packaging;
            the card's `batch_norm_statistics` gives the accuracy with the statistics
            the run ended with too.
        overwrite: replace an existing `directory/name/`.

    # Returns
        The model card written.

    # Raises
        ValueError: if the run is unfinished, no command is known, `recalibrate_bn`
            is negative or given for a model without BatchNorm, or as
            `zoo.publishing.package_pretrained`.
    """
    from zoo.publishing import package_pretrained

    run_dir = Path(run_dir)
    summary = RunDirectory(run_dir).read_summary()
    factory = summary["config"].get("model")
    if factory not in ARCHITECTURE_ARGUMENTS:
        raise ValueError(
            f"{run_dir} trained {factory!r}; pretrained models are "
            f"{', '.join(ARCHITECTURE_ARGUMENTS)}"
        )
    # A run started from another run's weights (`initial_weights`): the card covers
    # both, their epochs, wall times and commands. Started from a pretrained model, it
    # covers that model's whole training as its card gives it (read before `name/`
    # may be overwritten by the continued model).
    runs = [(run_dir, summary)]
    source = summary["config"].get("initial_weights")
    earlier = None
    if source and RunDirectory(source).summary_path.exists():
        runs.insert(0, (Path(source), RunDirectory(source).read_summary()))
    elif source and is_pretrained_name(source):
        earlier = continued_from(source)
    if command is None:
        recorded = [RunDirectory(directory).last_command() for directory, _ in runs]
        if None in recorded:
            missing = runs[recorded.index(None)][0]
            raise ValueError(
                f"{missing} records no training command; pass the exact command(s) "
                "(--command)"
            )
        command = "\n".join(recorded)
        if earlier:
            command = f"{earlier['command']}\n{command}"
    epochs = sum(s["epochs"] for _, s in runs) + (earlier["epochs"] if earlier else 0)
    wall_time_s = round(
        sum(s["wall_time_s"] for _, s in runs)
        + (earlier["wall_time_s"] if earlier else 0.0),
        1,
    )
    if recalibrate_bn < 0:
        raise ValueError(
            f"recalibrate_bn must be 0 or more batches, not {recalibrate_bn}"
        )
    restored = restore_run(run_dir, data_dir=data_dir)
    config, eval_tasks = restored.config, restored.eval_tasks
    model = as_float32(restored.model)
    test = eval_tasks[-1]
    x_test = test.test_images()  # the last task's, as the model learned them
    statistics = None
    if recalibrate_bn:
        if not batch_norm_layers(model):
            raise ValueError(f"{run_dir}'s model has no BatchNorm to recalibrate")
        as_trained = _test_accuracy(model, test)
        index = len(eval_tasks) - 1
        recalibrate(
            model, recalibration_batches(config, test, index, count=recalibrate_bn)
        )
        statistics = {
            "recalibrated_batches": recalibrate_bn,
            "batch_size": config.batch_size,
            "task": test.name,
            "keras_test_accuracy_as_trained": round(as_trained, 6),
            "note": "moving statistics re-estimated under the final weights from "
            f"{recalibrate_bn} training batches of {test.name} (beyond the paper); "
            "keras_test_accuracy_as_trained is the accuracy with the statistics the "
            "run ended with",
        }
    task_states, task_card = _task_batch_norm(restored, model, recalibrate_bn)
    kwargs = {
        "input_shape": tuple(test.x_test.shape[1:]),
        "num_classes": int(model.output_shape[-1]),
    }
    if registry.get_model(config.model).takes("hidden_units"):
        kwargs["hidden_units"] = tuple(config.hidden_units)
    if registry.get_model(config.model).takes("batch_norm_affine"):
        kwargs["batch_norm_affine"] = config.batch_norm_affine
    dataset = load_dataset(config.datasets[0], data_dir=config.data_dir)
    card = {
        "factory": config.model,
        "kwargs": architecture(config.model, kwargs),
        "dataset": config.datasets[0],
        "data": _data_card(dataset, test_images=len(x_test)),
        "protocol": {
            "name": config.protocol,
            "description": PROTOCOLS.get(config.protocol, config.protocol),
            "tasks": config.num_tasks if config.protocol != "sequence" else 1,
            "epochs_per_task": config.epochs,
            "batch_norm": config.batch_norm,
            "optimizer_per_task": config.optimizer_per_task,
            "evaluated_task": test.name,
        },
        "hyperparameters": {
            "optimizer": "MetaplasticAdam",
            "learning_rate": config.learning_rate,
            "lr_schedule": config.lr_schedule,
            "weight_decay": config.weight_decay,
            "meta": config.meta,
            "batch_size": config.batch_size,
            "augment": config.augment,
            "baseline": config.baseline,
            "seed": config.seed,
            "precision": config.precision,
        },
        "command": command,
        "epochs": epochs,
        "wall_time_s": wall_time_s,
        "machines": summed_machine_seconds(
            ([earlier] if earlier else []) + [s for _, s in runs]
        ),
        "budget": budget or f"{epochs} epochs, {wall_time_s / 60:.0f} min wall time",
        "initial_weights": source,
    }
    if earlier:
        card["continued_from"] = earlier
    if statistics:
        card["batch_norm_statistics"] = statistics
    if task_card:
        card["task_batch_norm"] = task_card
    if config.protocol == "permuted":
        card["protocol"]["permutations"] = {
            "seed": config.seed,
            "recipe": "training.protocols.permuted_tasks(zoo.datasets.load_dataset("
            f"{config.datasets[0]!r}), num_tasks=..., seed={config.seed}): task 1 "
            "unpermuted, then one fixed pixel permutation per task; the same seed "
            "gives the same first tasks, so more tasks continue the sequence",
        }
    if config.protocol != "stream" and len(summary.get("accuracy_matrix") or []) > 1:
        # Tasks learned one after another (a stream's subsets share one test set).
        card["sequence"] = {
            "tasks": summary["task_names"],
            "accuracy_matrix": summary["accuracy_matrix"],
            "rows": "after learning each task, the test accuracy of every task",
            "backward_transfer": summary.get("backward_transfer"),
            "batch_norm": "the saved model carries the last task's BatchNorm state; "
            "the matrix evaluated each finished task with its own saved state, "
            "shipped for every task"
            if task_card
            else "one BatchNorm state for every task",
        }
    return package_pretrained(
        model,
        name=name,
        card=card,
        directory=directory,
        verify_data=(x_test, test.y_test),
        lce_samples=lce_samples,
        class_names=dataset.class_names[: kwargs["num_classes"]],  # labels 0..n-1
        task_batch_norm=task_states,
        overwrite=overwrite,
    )


def refresh_pretrained(
    directory: str | os.PathLike,
    *,
    data_dir: Optional[str | os.PathLike] = None,
) -> dict:
    """Brings a pretrained model directory's card up to what cards say now.

    For directories written before cards held `usage` (input, outputs, class names,
    how to train further), `data` (which copy of the dataset, its encoding) and the
    per-class accuracy: the model is measured again on its dataset's test split (the
    Keras accuracy must come out as the card recorded) and the card is written again
    by `zoo.publishing.refresh_card`; the model files are left as they are.

    # Arguments
        directory: a pretrained model directory (`saved_models/<name>`).
        data_dir: where the datasets are; default `$METAPLASTIC_DATA_DIR`.

    # Returns
        The new model card.

    # Raises
        ValueError: if the directory fails verification, the model was measured on
            permuted images (package its run directory again instead), or its
            accuracy differs from the card's.
    """
    from zoo.model_directory import read_card
    from zoo.publishing import refresh_card

    card = read_card(directory)  # refresh_card verifies everything
    if "permutations" in (card.get("protocol") or {}):
        raise ValueError(
            f"{directory} was measured on permuted images; package its run directory "
            "again instead (python -m training package RUN_DIR --name ...)"
        )
    dataset = load_dataset(card["dataset"], data_dir=data_dir)
    num_classes = (card.get("kwargs") or {}).get("num_classes", dataset.num_classes)
    return refresh_card(
        directory,
        verify_data=(dataset.x_test, dataset.y_test),
        class_names=dataset.class_names[:num_classes],
        data=_data_card(dataset, test_images=len(dataset.x_test)),
    )
