"""Command line: `python -m zoo convert MODEL --output FILE.tflite [--dataset NAME ...]`.

A thin layer over `zoo.export`: `convert` loads the model (`zoo.export.load_model`: a
SavedModel directory, a zoo factory name with random weights, or a pretrained name),
converts it for Larq Compute Engine, checks that every hidden binary layer became
`LceBconv2d`, writes the flatbuffer and, given a dataset, compares LCE's predictions
with Keras' on a seeded, class-stratified sample of its test split
(`zoo.datasets.stratified_sample`; the first N images of a split may all be one class).
Bad input gives a one-line error on stderr and exit code 2.

```bash
python -m zoo convert runs/pmnist/model --output pmnist.tflite --dataset mnist --samples 2000
python -m zoo convert mlp_meta --output mlp_meta.tflite     # random weights, for trying out
```
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

from zoo import export, registry
from zoo.datasets import load_dataset, sample_description
from zoo.validation import check_nonnegative_int, check_positive_int

# Test images compared between LCE and Keras by default (LCE's Python interpreter runs
# one image at a time; on x86, 0.1 s per 1,000 MLP images, 15 s per 1,000 VGG-16 ones).
DEFAULT_SAMPLES = 1000


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: `error: ...`, exit code 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m zoo",
        description="Deploy zoo models with Larq Compute Engine.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    help_text = "convert a model to an LCE flatbuffer (.tflite) and verify it"
    p = commands.add_parser("convert", help=help_text, description=help_text)
    p.add_argument(
        "model",
        help="SavedModel directory, zoo factory name "
        f"({', '.join(registry.model_names(binary=True))}: random weights) or "
        "pretrained model name",
    )
    p.add_argument("--output", "-o", required=True, help="flatbuffer file to write")
    p.add_argument(
        "--dataset",
        help="verify on this dataset's test split: mnist, fashion_mnist, cifar10 or the "
        "path of an image-folder dataset",
    )
    p.add_argument("--data-dir", help="directory holding the dataset")
    p.add_argument(
        "--samples",
        type=int,
        default=None,
        help=f"test images to verify on, a class-stratified sample (default "
        f"{DEFAULT_SAMPLES})",
    )
    p.add_argument("--seed", type=int, help="seed of that sample (default 0)")
    p.add_argument(
        "--target", choices=export.TARGETS, default="arm", help="LCE target (arm)"
    )
    p.add_argument(
        "--batch-size", type=int, default=256, help="batch size of Keras predictions"
    )
    return parser


def convert(
    model: str | os.PathLike,
    *,
    output: str | os.PathLike,
    dataset: Optional[str] = None,
    data_dir: Optional[str | os.PathLike] = None,
    samples: Optional[int] = None,
    seed: Optional[int] = None,
    target: str = "arm",
    batch_size: int = 256,
) -> dict:
    """Converts a model for LCE, writes the flatbuffer and verifies it on a test split.

    # Arguments
        model: SavedModel directory, zoo factory name or pretrained name (see
            `zoo.export.load_model`). A factory model is built for the dataset's image
            shape and number of classes when `dataset` is given.
        output: the flatbuffer file to write.
        dataset: dataset name or path for `zoo.datasets.load_dataset`; `None` skips
            verification.
        data_dir: directory holding the dataset.
        samples: number of test images to verify on (default `DEFAULT_SAMPLES`): a
            class-stratified sample of the test split (every image if it has fewer).
        seed: the seed of that sample (default 0).
        target: LCE target, `"arm"` or `"xcore"`.
        batch_size: batch size of the Keras predictions.

    # Returns
        A dict: `model` (where it came from), `output`, `target`, `report`
        (`zoo.export.lce_op_report` with the model) and `verification`
        (`zoo.export.verify_lce` plus `dataset` and `images`, the words saying
        which images were compared; or `None`).

    # Raises
        ValueError: for bad input (unknown model, missing data, mismatching shapes).
    """
    if samples is not None and dataset is None:
        raise ValueError("--samples needs --dataset: the images to verify on")
    samples = check_positive_int(
        DEFAULT_SAMPLES if samples is None else samples, "--samples"
    )
    if seed is not None and dataset is None:
        raise ValueError("--seed needs --dataset: the images to sample")
    seed = check_nonnegative_int(0 if seed is None else seed, "--seed")
    batch_size = check_positive_int(batch_size, "--batch-size")

    data = None
    if dataset is not None:
        data = load_dataset(dataset, data_dir=data_dir)
    keras_model, source = export.load_model(
        model,
        input_shape=None if data is None else data.input_shape,
        num_classes=None if data is None else data.num_classes,
    )
    if data is not None:
        _check_matches(keras_model, data)

    flatbuffer = export.convert_to_lce(keras_model, path=output, target=target)
    result = {
        "model": source,
        "output": os.fspath(output),
        "target": target,
        "report": export.lce_op_report(flatbuffer, keras_model),
        "verification": None,
    }
    if data is not None:
        verification = export.verify_lce(
            flatbuffer,
            keras_model,
            data.x_test,
            data.y_test,
            samples=samples,
            seed=seed,
            batch_size=batch_size,
        )
        images = sample_description(
            verification["samples"],
            verification["total"],
            seed=verification["seed"],
            what=f"{data.name} test images",
        )
        result["verification"] = {"dataset": data.name, "images": images}
        result["verification"].update(verification)
    return result


def _check_matches(model, data) -> None:
    expected = tuple(model.inputs[0].shape[1:])
    if expected != tuple(data.input_shape):
        raise ValueError(
            f"model {model.name!r} takes images of shape {expected} but {data.name} has "
            f"{tuple(data.input_shape)}; pass the dataset the model was trained on"
        )
    outputs = model.outputs[0].shape[-1]
    if len(data.y_test) and int(data.y_test.max()) >= outputs:
        raise ValueError(
            f"model {model.name!r} outputs {outputs} classes but {data.name}'s test "
            f"labels go up to {int(data.y_test.max())}; pass the dataset the model was "
            "trained on"
        )


def _size(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def format_report(result: dict) -> str:
    """Returns the text `python -m zoo convert` prints for a `convert` result."""
    report = result["report"]
    ops = ", ".join(f"{name} {count}" for name, count in report["ops"].items())
    binary = report["binary_layers"]
    lines = [
        f"model: {result['model']}",
        f"wrote {result['output']}: {_size(report['size_bytes'])} (target "
        f"{result['target']})",
        f"ops: {ops}",
        f"binary layers: {len(report['converted'])}/{len(binary)} became "
        f"{export.BINARY_OP} ({', '.join(report['converted']) or 'none'}); "
        f"stay float32: {', '.join(report['float_layers']) or 'none'}",
    ]
    check = result["verification"]
    if check is not None:
        lines.append(
            f"verification on {check['images']}: "
            f"argmax agreement {100 * check['argmax_agreement']:.2f} %, "
            f"Keras accuracy {100 * check['keras_accuracy']:.2f} %, "
            f"LCE accuracy {100 * check['lce_accuracy']:.2f} %, "
            f"max |logit diff| {check['max_abs_logit_diff']:.2g}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Runs `python -m zoo` with `argv` (default `sys.argv[1:]`); returns the exit code:
    0, or 2 after a one-line error on stderr."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit:  # --help (0) or a usage error (2), already printed
        return exit.code
    try:
        result = convert(
            args.model,
            output=args.output,
            dataset=args.dataset,
            data_dir=args.data_dir,
            samples=args.samples,
            seed=args.seed,
            target=args.target,
            batch_size=args.batch_size,
        )
    except (ValueError, ImportError, OSError) as error:
        message = (str(error).strip().splitlines() or [type(error).__name__])[0]
        print(f"error: {message}", file=sys.stderr)
        return 2
    print(format_report(result))
    return 0
