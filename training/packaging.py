"""Packages a finished run directory as a pretrained model of the zoo.

`package_run(run_dir, name=...)` rebuilds the run's model from its last checkpoint and
writes `saved_models/<name>/` with `zoo.publishing.package_pretrained`: the SavedModel
(latent weights), the Larq Compute Engine flatbuffer and a model card that says how the
model was trained (dataset, protocol, hyperparameters, the exact command, epochs, wall
time, compute budget) and what it scores (Keras and LCE accuracy on the run's test split).
A run trained in bf16 (`zoo.precision`) is packaged as its float32 twin (same weights),
so that the pretrained model loads anywhere; its card's hyperparameters say `precision`.
A run over tasks learned one after another is measured on its last task (permuted
MNIST: that task's permuted test images) and its card holds the accuracy matrix and,
for permuted tasks, the permutation seed, so that users can continue the sequence.

```bash
python -m training package runs/fmnist-stream-m2.5 --name mlp_meta_fashion_mnist_stream \
    --budget "2 CPU cores, 566 s"
```
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from training.assembly import restore_run
from training.rundir import RunDirectory
from zoo import registry
from zoo.precision import as_float32

PROTOCOLS = {
    "sequence": "datasets learned one after another (one dataset: plain training)",
    "permuted": "permuted versions of one dataset learned one after another",
    "stream": "one dataset learned as a stream of class-balanced subsets",
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
    overwrite: bool = False,
) -> dict:
    """Writes `directory/name/` from the last checkpoint of a finished run.

    # Arguments
        run_dir: a run directory written by `training.runner.run`, with `summary.json`.
        name: the pretrained model's name (e.g. one of `zoo.pretrained_models()`).
        directory: where to write `name/`; default the repository's `saved_models/`.
        command: the exact training command(s) for the card; default the last command
            recorded in `run_dir/commands.txt` by `python -m training` (preceded by
            that of the run it started from, with `initial_weights`).
        budget: the compute the run used, in words (e.g. "2 CPU cores, 40 min").
        data_dir: where the datasets are; default the run's, else
            `$METAPLASTIC_DATA_DIR`.
        lce_samples: test images the LCE flatbuffer is checked on (default: all).
        overwrite: replace an existing `directory/name/`.

    # Returns
        The model card written.

    # Raises
        ValueError: if the run is unfinished, no command is known, or as
            `zoo.publishing.package_pretrained`.
    """
    from zoo.pretrained import ARCHITECTURE_ARGUMENTS, architecture
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
    # both, their epochs, wall times and commands.
    runs = [(run_dir, summary)]
    source = summary["config"].get("initial_weights")
    if source and RunDirectory(source).summary_path.exists():
        runs.insert(0, (Path(source), RunDirectory(source).read_summary()))
    if command is None:
        recorded = [RunDirectory(directory).last_command() for directory, _ in runs]
        if None in recorded:
            missing = runs[recorded.index(None)][0]
            raise ValueError(
                f"{missing} records no training command; pass the exact command(s) "
                "(--command)"
            )
        command = "\n".join(recorded)
    epochs = sum(s["epochs"] for _, s in runs)
    wall_time_s = round(sum(s["wall_time_s"] for _, s in runs), 1)
    restored = restore_run(run_dir, data_dir=data_dir)
    config, model, eval_tasks = restored.config, restored.model, restored.eval_tasks
    test = eval_tasks[-1]
    x_test = test.x_test
    if test.permutation is not None:
        # The last task's images, as the model learned them.
        n, height, width, channels = x_test.shape
        x_test = x_test.reshape(n, height * width, channels)[:, test.permutation]
        x_test = x_test.reshape(n, height, width, channels)
    kwargs = {
        "input_shape": tuple(test.x_test.shape[1:]),
        "num_classes": int(model.output_shape[-1]),
    }
    if registry.get_model(config.model).takes("hidden_units"):
        kwargs["hidden_units"] = tuple(config.hidden_units)
    if registry.get_model(config.model).takes("batch_norm_affine"):
        kwargs["batch_norm_affine"] = config.batch_norm_affine
    card = {
        "factory": config.model,
        "kwargs": architecture(config.model, kwargs),
        "dataset": config.datasets[0],
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
        "budget": budget or f"{epochs} epochs, {wall_time_s / 60:.0f} min wall time",
        "initial_weights": source,
    }
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
            "the matrix evaluated each finished task with its own saved state"
            if config.batch_norm == "task"
            else "one BatchNorm state for every task",
        }
    return package_pretrained(
        as_float32(model),
        name=name,
        card=card,
        directory=directory,
        verify_data=(x_test, test.y_test),
        lce_samples=lce_samples,
        overwrite=overwrite,
    )
