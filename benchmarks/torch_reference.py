"""Fig. 2's first task at the paper's setting, trained by an independent PyTorch
implementation of the authors' training step, to tell whether what this project's Keras
runs show at that setting (`benchmarks/bn_drift.py`: the second layer's latent weights
shrink toward 0 under the L2 term, its binary weights flip, the BatchNorm running
statistics go stale) comes from this project or from the paper's recipe itself.

Written here from the semantics of the authors' code (GitHub
`Laborieux-Axel/SynapticMetaplasticityBNN`, none of it copied): binary kernels are the
sign of a latent copy, the gradient reaching the sign passes to the latent weight
unchanged; hidden activations are sign(x) with a gradient passed where |x| <= 1; every
layer is followed by `BatchNorm1d(affine=True)` with running statistics (momentum 0.1,
the paper-era protocol); Adam (eps 1e-8) with the L2 term added to the gradient before
the moments and the step of a kernel damped by 1 - tanh(m |Wh|)^2 where sign(Wh) and
the first moment agree; latent weights start uniform in [-0.05, 0.05]; MNIST pixels in
[0, 1], batches of 100, the training set reshuffled every epoch. Each epoch measures the
test accuracy with the running statistics (what the paper's protocol saves), the second
layer's median |Wh| and the fraction of its binary weights whose sign changed.

PyTorch is not a project dependency: run it from an environment that has it and numpy
(`pip install torch==2.13.0 "numpy<2"`); the script imports nothing of the project.

```bash
python benchmarks/torch_reference.py --data-dir ../shared/data --epochs 10
```

Writes `benchmarks/results/torch_reference-<UTC time>.json` after every epoch.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def _idx(path: Path) -> np.ndarray:
    """An IDX file's array (the project's reader imports TensorFlow)."""
    with gzip.open(path) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def _mnist(data_dir: Path) -> tuple:
    root = data_dir / "mnist"
    x_train, y_train, x_test, y_test = (
        _idx(root / f"{split}-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz")
        for split, kind in (
            ("train", "images"),
            ("train", "labels"),
            ("t10k", "images"),
            ("t10k", "labels"),
        )
    )
    return (
        x_train.reshape(-1, 784) / np.float32(255),
        y_train.astype(np.int64),
        x_test.reshape(-1, 784) / np.float32(255),
        y_test.astype(np.int64),
    )


def train(args: argparse.Namespace, torch) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x_train, y_train, x_test, y_test = (
        torch.from_numpy(np.ascontiguousarray(a)) for a in _mnist(Path(args.data_dir))
    )

    class Sign(torch.autograd.Function):
        """sign(x), gradient passed where |x| <= 1 (hidden activations)."""

        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.sign()

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * (x.abs() <= 1).to(grad.dtype)

    class LatentSign(torch.autograd.Function):
        """sign(Wh), gradient passed unchanged (kernels: no clipping)."""

        @staticmethod
        def forward(ctx, w):
            return w.sign()

        @staticmethod
        def backward(ctx, grad):
            return grad

    dims = [784, args.width, args.width, 10]
    latent = [
        torch.nn.Parameter(torch.empty(dims[i + 1], dims[i]).uniform_(-0.05, 0.05))
        for i in range(3)
    ]
    norms = [torch.nn.BatchNorm1d(d, affine=True) for d in dims[1:]]
    if args.gamma_init == "uniform":  # PyTorch 1.1's default
        for norm in norms:
            torch.nn.init.uniform_(norm.weight)

    def forward(x):
        for i in range(3):
            x = norms[i](torch.nn.functional.linear(x, LatentSign.apply(latent[i])))
            if i < 2:
                x = Sign.apply(x)
        return x

    params = latent + [p for norm in norms for p in norm.parameters()]
    moments = {id(p): (torch.zeros_like(p), torch.zeros_like(p)) for p in params}
    beta_1, beta_2, epsilon = 0.9, 0.999, 1e-8
    step = 0

    def update():
        nonlocal step
        step += 1
        size = args.lr * (1 - beta_2**step) ** 0.5 / (1 - beta_1**step)
        with torch.no_grad():
            for p in params:
                grad = p.grad + args.decay * p
                m, v = moments[id(p)]
                m.mul_(beta_1).add_(grad, alpha=1 - beta_1)
                v.mul_(beta_2).addcmul_(grad, grad, value=1 - beta_2)
                if p.dim() > 1:  # a kernel: the metaplastic damping
                    damped = (1 - torch.tanh(args.meta * p.abs()) ** 2) * m
                    m = torch.where(p.sign() * m > 0, damped, m)
                p.addcdiv_(m, v.sqrt().add_(epsilon), value=-size)

    def test_accuracy():
        for norm in norms:
            norm.eval()
        with torch.no_grad():
            logits = torch.cat(
                [forward(x_test[i : i + 1000]) for i in range(0, len(x_test), 1000)]
            )
        for norm in norms:
            norm.train()
        return float((logits.argmax(1) == y_test).float().mean())

    record = {
        "date": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
        "command": "python benchmarks/torch_reference.py " + " ".join(sys.argv[1:]),
        "torch": torch.__version__,
        "host": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "settings": {k: v for k, v in vars(args).items() if k != "results_dir"},
        "semantics": __doc__.split("\n\n")[1].replace("\n", " "),
        "epochs": [],
    }
    path = Path(args.results_dir) / f"torch_reference-{record['date']}.json"
    for epoch in range(1, args.epochs + 1):
        start = time.time()
        signs = latent[1].detach().sign().clone()
        order = torch.randperm(len(x_train))
        correct = 0
        for i in range(0, len(x_train), 100):
            batch = order[i : i + 100]
            for p in params:
                p.grad = None
            logits = forward(x_train[batch])
            torch.nn.functional.cross_entropy(logits, y_train[batch]).backward()
            update()
            correct += int((logits.argmax(1) == y_train[batch]).sum())
        second = latent[1].detach().abs()
        record["epochs"].append(
            {
                "epoch": epoch,
                "train_accuracy": round(correct / len(x_train), 6),
                "test_accuracy_running_statistics": round(test_accuracy(), 6),
                "dense_2/abs_wh_q0.5": float(second.median()),
                "dense_2/abs_wh_q0.9": float(
                    second.flatten().kthvalue(int(0.9 * second.numel())).values
                ),
                "dense_2/flipped": float(
                    (latent[1].detach().sign() != signs).float().mean()
                ),
                "bn_2/abs_gamma_q0.5": float(norms[1].weight.detach().abs().median()),
                "seconds": round(time.time() - start, 1),
            }
        )
        print(json.dumps(record["epochs"][-1]), flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1) + "\n")
    record["path"] = str(path)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("METAPLASTIC_DATA_DIR"),
        help="holds mnist/ (IDX .gz); default $METAPLASTIC_DATA_DIR",
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--meta", type=float, default=1.35)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--decay", type=float, default=1e-7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gamma-init", choices=("ones", "uniform"), default="ones")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results-dir", default=str(RESULTS))
    args = parser.parse_args(argv)
    if not args.data_dir or not (Path(args.data_dir) / "mnist").is_dir():
        print(
            f"error: no mnist/ under {args.data_dir!r}: pass --data-dir (the directory "
            "holding mnist/ IDX files) or set METAPLASTIC_DATA_DIR",
            file=sys.stderr,
        )
        return 2
    try:
        import torch
    except ImportError:
        print(
            "error: this check needs PyTorch, not a project dependency: pip install "
            'torch==2.13.0 "numpy<2" in another environment',
            file=sys.stderr,
        )
        return 2
    record = train(args, torch)
    print(f"Wrote {record['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
