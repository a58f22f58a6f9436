"""The quadratic binary task of Laborieux et al. 2021 (Fig. 5a-b): why |Wh| measures importance.

Binary weights `W = sign(Wh)` minimize a quadratic loss

    L(W) = ½ (W − W*)ᵀ H (W − W*)

by plain gradient descent on the hidden weights, the gradient being taken at the binary
point: `Wh ← Wh − lr · H (sign(Wh) − W*)`. No binary point is a stationary point, so
`Wh` never settles: a component whose sign is right keeps being pushed outwards and its
`|Wh|` grows linearly, at a speed `lr · |(H (sign(Wh) − W*))_i|`; a component for which
either sign costs about the same oscillates around zero. The more a binary weight
matters (the more the loss rises when it is flipped), the faster its hidden weight
diverges: `|Wh|` is an importance measure for free, which metaplasticity
(`MetaplasticAdam`) exploits by making large `|Wh|` hard to flip.

This module reproduces the reference notebook
(`Quadratic_Binary_Task_Fig-5ab/Fig-5ab.ipynb` of Laborieux-Axel/SynapticMetaplasticityBNN)
in NumPy:

- `run_2d`: the 2-D picture (Fig. 5a), with the notebook's Hessian, optimum and start;
- `random_problem` + `train_binary` + `analyze_divergence`: the 500-dimensional
  experiment (Fig. 5b): eigenvalues `20 + 19 · (U(0, 1) − ½)` in a random (Haar)
  orthogonal eigenbasis, `W* ~ U(−4, 4)` per component, `Wh₀ ~ 0.01 · N(0, 1)`,
  1000 steps at lr 0.01; importance of a component = loss increase when its sign is
  flipped at the end (as the notebook's Fig. 5b);
- `run_experiment` and `python -m experiments.toy_quadratic --out DIR`: both, with PNGs and
  a JSON of the numbers.

Deviations from the notebook: NumPy's generator instead of torch's (other random draws);
the eigenbasis is drawn by QR of a Gaussian matrix (Haar, as the notebook's
Shahshahani subgroup algorithm); `sign(0) = +1` (Larq's convention; torch gives 0,
never reached from a random start); the 2-D trajectory is run for 15 steps (the notebook
runs 500 but its figure shows the first ~10).

!!! example
    ```python
    from experiments.toy_quadratic import random_problem, train_binary, analyze_divergence

    problem = random_problem(dim=500, seed=0)
    trajectory = train_binary(problem, steps=1000, lr=0.01, seed=0)
    print(analyze_divergence(problem, trajectory).spearman)
    ```
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.validation import check_positive_int, check_real

__all__ = [
    "QuadraticProblem",
    "BinaryTrajectory",
    "DivergenceAnalysis",
    "binary_sign",
    "quadratic_loss",
    "binary_gradient_step",
    "random_problem",
    "reference_2d_problem",
    "train_binary",
    "flip_loss_increase",
    "analyze_divergence",
    "best_binary_point",
    "run_2d",
    "run_experiment",
    "main",
]

# Fig. 5a, the notebook's 2-D problem (torch seed 11): the Hessian it printed, W*, Wh₀, lr.
REFERENCE_2D_HESSIAN = ((2.4047, 0.2158), (0.2158, 0.7733))
REFERENCE_2D_OPTIMUM = (1.5, 0.5)
REFERENCE_2D_INITIAL = (0.01, 0.02)
REFERENCE_2D_LR = 0.35
STEPS_2D = 15  # enough to leave the [-1, 1]² box; the notebook's figure shows ~10

# Fig. 5b, the notebook's high-dimensional problem.
DIM = 500
STEPS = 1000
LR = 0.01
EIGENVALUE_MEAN = 20.0  # eigenvalues: mean + spread · (U(0, 1) − ½)
EIGENVALUE_SPREAD = 19.0
OPTIMUM_RANGE = 4.0  # W*_i ~ U(−4, 4)
INIT_STD = 0.01  # Wh₀ ~ 0.01 · N(0, 1)
IMPORTANCE_BINS = 15  # bins of |Wh| / max |Wh| in the notebook's Fig. 5b


@dataclass(frozen=True)
class QuadraticProblem:
    """`L(W) = ½ (W − W*)ᵀ H (W − W*)`, with `H = Qᵀ diag(eigenvalues) Q`.

    # Arguments
        hessian: `H`, symmetric positive definite, shape `(d, d)`.
        optimum: `W*`, the real-valued minimizer, shape `(d,)`.
        eigenvalues: eigenvalues of `H`, shape `(d,)`.
        eigenvectors: `Q`, rows are the eigenvectors, shape `(d, d)`.
    """

    hessian: np.ndarray
    optimum: np.ndarray
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.optimum.shape[0])


@dataclass(frozen=True)
class BinaryTrajectory:
    """Hidden weights and binary loss at every step of `train_binary`.

    # Arguments
        hidden: `Wh` at steps 0..T, shape `(T + 1, d)`.
        loss: `L(sign(Wh))` at steps 0..T, shape `(T + 1,)`.
        lr: the learning rate used.
    """

    hidden: np.ndarray
    loss: np.ndarray
    lr: float

    @property
    def steps(self) -> int:
        return int(self.hidden.shape[0] - 1)


@dataclass(frozen=True)
class DivergenceAnalysis:
    """How fast each hidden weight diverges, and how that relates to its importance.

    # Arguments
        growth_rate: slope of `|Wh_i|` against the step over the last half of the
            steps (least squares), shape `(d,)`.
        importance: loss increase when component i of the final binary point is
            flipped (the notebook's Fig. 5b), shape `(d,)`.
        diverging: components whose sign stayed fixed over the last half of the steps
            while `|Wh|` grew, shape `(d,)`, boolean.
        pearson, spearman: correlations of `growth_rate` with `importance`.
        pearson_diagonal: correlation of `growth_rate` with `H_ii` (a weaker proxy).
        linearity_r2: median R² of the linear fit of `|Wh|` over the last half, among
            diverging components (1 = perfectly linear growth).
        fraction_diverging: `diverging.mean()`.
        bin_edges, bin_mean_abs_wh, bin_mean_increase, bin_std_increase, bin_counts:
            the notebook's Fig. 5b: importance averaged in `IMPORTANCE_BINS` equal bins of
            `|Wh| / max |Wh|` (NaN where a bin is empty).
    """

    growth_rate: np.ndarray
    importance: np.ndarray
    diverging: np.ndarray
    pearson: float
    spearman: float
    pearson_diagonal: float
    linearity_r2: float
    fraction_diverging: float
    bin_edges: np.ndarray
    bin_mean_abs_wh: np.ndarray
    bin_mean_increase: np.ndarray
    bin_std_increase: np.ndarray
    bin_counts: np.ndarray


def binary_sign(hidden: np.ndarray) -> np.ndarray:
    """`sign(Wh)` with `sign(0) = +1`, as Larq's binary quantizers.

    # Arguments
        hidden: hidden weights, any shape.

    # Returns
        An array of ±1.0 of the same shape.
    """
    return np.where(np.asarray(hidden) >= 0, 1.0, -1.0)


def quadratic_loss(
    weights: np.ndarray, *, hessian: np.ndarray, optimum: np.ndarray
) -> np.ndarray:
    """`½ (W − W*)ᵀ H (W − W*)` for one point or a batch of points (last axis).

    # Arguments
        weights: a point `(d,)` or points `(..., d)`.
        hessian: `H`, `(d, d)`.
        optimum: `W*`, `(d,)`.

    # Returns
        The loss: a float for one point, else an array of shape `(...)`.
    """
    diff = np.asarray(weights, dtype=np.float64) - optimum
    loss = 0.5 * np.einsum("...i,ij,...j->...", diff, hessian, diff)
    return float(loss) if np.ndim(loss) == 0 else loss


def binary_gradient_step(
    hidden: np.ndarray, *, hessian: np.ndarray, optimum: np.ndarray, lr: float
) -> np.ndarray:
    """One step of gradient descent on `Wh` with the gradient at the binary point.

    `Wh ← Wh − lr · ∇L(sign(Wh)) = Wh − lr · H (sign(Wh) − W*)` (the notebook's
    `step_sgd`).

    # Arguments
        hidden: `Wh`, `(d,)`.
        hessian: `H`, `(d, d)`.
        optimum: `W*`, `(d,)`.
        lr: learning rate.

    # Returns
        The new hidden weights (a new array).
    """
    return hidden - lr * hessian @ (binary_sign(hidden) - optimum)


def random_problem(
    *,
    dim: int = DIM,
    eigenvalue_mean: float = EIGENVALUE_MEAN,
    eigenvalue_spread: float = EIGENVALUE_SPREAD,
    optimum_range: float = OPTIMUM_RANGE,
    seed: int = 0,
) -> QuadraticProblem:
    """A random quadratic problem as in the notebook's Fig. 5b.

    Eigenvalues `mean + spread · (U(0, 1) − ½)`, a Haar-random orthogonal eigenbasis
    `Q` (QR of a Gaussian matrix, signs fixed), `H = Qᵀ diag(λ) Q` symmetrized, and
    `W*_i ~ U(−range, range)` independently per component.

    # Arguments
        dim: dimension d.
        eigenvalue_mean, eigenvalue_spread: the eigenvalue distribution; `spread` must be
            below `2 · mean` so that H is positive definite.
        optimum_range: half-width of the uniform distribution of `W*`.
        seed: seed of NumPy's generator.

    # Returns
        A `QuadraticProblem`.

    # Raises
        ValueError: for a non-positive dimension, or eigenvalues that could be <= 0.
    """
    dim = check_positive_int(dim, "dim")
    mean = check_real(eigenvalue_mean, "eigenvalue_mean", low=0, low_open=True)
    if not 0 <= eigenvalue_spread < 2 * mean:
        raise ValueError(
            f"eigenvalue_spread must be in [0, 2 * eigenvalue_mean) so that H is "
            f"positive definite, got {eigenvalue_spread!r}."
        )
    half_width = check_real(optimum_range, "optimum_range", low=0, low_open=True)
    rng = np.random.default_rng(seed)
    eigenvalues = mean + eigenvalue_spread * (rng.uniform(size=dim) - 0.5)
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    basis = (q * np.sign(np.diag(r))).T  # Haar: fix the signs of QR's factor
    hessian = basis.T @ (eigenvalues[:, None] * basis)
    hessian = 0.5 * (hessian + hessian.T)
    optimum = rng.uniform(-half_width, half_width, size=dim)
    return QuadraticProblem(hessian, optimum, eigenvalues, basis)


def reference_2d_problem() -> QuadraticProblem:
    """The notebook's 2-D problem of Fig. 5a: its printed `H` and `W* = (1.5, 0.5)`.

    # Returns
        A `QuadraticProblem` of dimension 2.
    """
    hessian = np.array(REFERENCE_2D_HESSIAN)
    eigenvalues, vectors = np.linalg.eigh(hessian)
    return QuadraticProblem(
        hessian, np.array(REFERENCE_2D_OPTIMUM), eigenvalues, vectors.T
    )


def train_binary(
    problem: QuadraticProblem,
    *,
    steps: int = STEPS,
    lr: float = LR,
    initial: Sequence[float] | np.ndarray | None = None,
    init_std: float = INIT_STD,
    seed: int = 0,
) -> BinaryTrajectory:
    """Runs `binary_gradient_step` for `steps` steps and records every `Wh` and loss.

    # Arguments
        problem: the quadratic problem.
        steps: number of steps T.
        lr: learning rate.
        initial: `Wh₀`; default `init_std · N(0, 1)` drawn with `seed`.
        init_std: scale of the random start.
        seed: seed of the random start.

    # Returns
        A `BinaryTrajectory` (`hidden` of shape `(T + 1, d)`).

    # Raises
        ValueError: for bad `steps`, `lr` or an `initial` of the wrong shape.
    """
    steps = check_positive_int(steps, "steps")
    lr = check_real(lr, "lr", low=0, low_open=True)
    if initial is None:
        hidden = init_std * np.random.default_rng(seed).standard_normal(problem.dim)
    else:
        hidden = np.array(initial, dtype=np.float64)
        if hidden.shape != (problem.dim,):
            raise ValueError(
                f"initial must have shape ({problem.dim},), got {hidden.shape}."
            )
    history = np.empty((steps + 1, problem.dim))
    history[0] = hidden
    for t in range(steps):
        hidden = binary_gradient_step(
            hidden, hessian=problem.hessian, optimum=problem.optimum, lr=lr
        )
        history[t + 1] = hidden
    loss = quadratic_loss(
        binary_sign(history), hessian=problem.hessian, optimum=problem.optimum
    )
    return BinaryTrajectory(history, np.atleast_1d(loss), lr)


def flip_loss_increase(problem: QuadraticProblem, weights: np.ndarray) -> np.ndarray:
    """`L(W with component i negated) − L(W)` for every i, in closed form.

    Negating `W_i` adds `δ = −2 W_i e_i`, so the increase is
    `δᵀ H (W − W*) + ½ δᵀ H δ = −2 W_i (H (W − W*))_i + 2 W_i² H_ii`.

    # Arguments
        problem: the quadratic problem.
        weights: the point W, `(d,)` (binary in the paper's use).

    # Returns
        The increases, shape `(d,)`.
    """
    weights = np.asarray(weights, dtype=np.float64)
    gradient = problem.hessian @ (weights - problem.optimum)
    return -2.0 * weights * gradient + 2.0 * weights**2 * np.diag(problem.hessian)


def best_binary_point(
    problem: QuadraticProblem, start: np.ndarray
) -> tuple[np.ndarray, float]:
    """Greedy single-flip descent over binary points from `start` (exhaustive for d <= 12).

    # Arguments
        problem: the quadratic problem.
        start: a binary point (or hidden weights, binarized).

    # Returns
        `(point, loss)`: the global minimum over `{−1, +1}^d` when d <= 12, else a point
        where no single flip lowers the loss.
    """
    if problem.dim <= 12:
        points = np.array(list(itertools.product((-1.0, 1.0), repeat=problem.dim)))
        losses = quadratic_loss(
            points, hessian=problem.hessian, optimum=problem.optimum
        )
        best = int(np.argmin(losses))
        return points[best], float(losses[best])
    point = binary_sign(start)
    while True:
        increase = flip_loss_increase(problem, point)
        best = int(np.argmin(increase))
        if increase[best] >= -1e-12:
            break
        point[best] = -point[best]
    return point, quadratic_loss(
        point, hessian=problem.hessian, optimum=problem.optimum
    )


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1, ties given their average rank."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=np.float64)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else float("nan")


def analyze_divergence(
    problem: QuadraticProblem,
    trajectory: BinaryTrajectory,
    *,
    bins: int = IMPORTANCE_BINS,
) -> DivergenceAnalysis:
    """Growth rate of every `|Wh_i|` over the last half of the steps vs its importance.

    Importance is the notebook's (Fig. 5b): the loss increase when component i of the
    final binary point `sign(Wh_T)` is flipped.

    # Arguments
        problem: the quadratic problem the trajectory was trained on.
        trajectory: from `train_binary`, with at least 2 steps.
        bins: number of equal bins of `|Wh| / max |Wh|` for the Fig. 5b summary.

    # Returns
        A `DivergenceAnalysis`.

    # Raises
        ValueError: for a trajectory of fewer than 2 steps or bad `bins`.
    """
    bins = check_positive_int(bins, "bins")
    if trajectory.steps < 2:
        raise ValueError("the trajectory needs at least 2 steps to fit a growth rate.")
    half = trajectory.steps // 2
    magnitude = np.abs(trajectory.hidden[half:])  # (n, d)
    t = np.arange(half, trajectory.steps + 1, dtype=np.float64)
    t_centered = t - t.mean()
    m_centered = magnitude - magnitude.mean(axis=0)
    slope = t_centered @ m_centered / (t_centered @ t_centered)
    fitted = np.outer(t_centered, slope)
    residual = ((m_centered - fitted) ** 2).sum(axis=0)
    total = (m_centered**2).sum(axis=0)
    r2 = 1.0 - residual / np.where(total > 0, total, 1.0)
    signs = binary_sign(trajectory.hidden[half:])
    diverging = (signs == signs[0]).all(axis=0) & (magnitude[-1] > magnitude[0])

    final = trajectory.hidden[-1]
    importance = flip_loss_increase(problem, binary_sign(final))
    spearman = _pearson(_ranks(slope), _ranks(importance))

    abs_final = np.abs(final)
    edges = np.linspace(0.0, abs_final.max(), bins + 1)
    index = np.clip(np.searchsorted(edges, abs_final, side="right") - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    mean_wh, mean_inc, std_inc = (np.full(bins, np.nan) for _ in range(3))
    for k in np.flatnonzero(counts):
        members = index == k
        mean_wh[k] = abs_final[members].mean()
        mean_inc[k] = importance[members].mean()
        std_inc[k] = importance[members].std()
    return DivergenceAnalysis(
        growth_rate=slope,
        importance=importance,
        diverging=diverging,
        pearson=_pearson(slope, importance),
        spearman=spearman,
        pearson_diagonal=_pearson(slope, np.diag(problem.hessian)),
        linearity_r2=float(np.median(r2[diverging])) if diverging.any() else 0.0,
        fraction_diverging=float(diverging.mean()),
        bin_edges=edges,
        bin_mean_abs_wh=mean_wh,
        bin_mean_increase=mean_inc,
        bin_std_increase=std_inc,
        bin_counts=counts,
    )


def run_2d(*, steps: int = STEPS_2D, path: str | os.PathLike | None = None) -> dict:
    """The notebook's 2-D experiment (Fig. 5a); optionally plots it.

    # Arguments
        steps: gradient steps from the notebook's start `(0.01, 0.02)` at lr 0.35.
        path: PNG to write (landscape, binary points, trajectory, W*), or `None`.

    # Returns
        A dict: `hessian`, `optimum`, `trajectory` (`(steps + 1, 2)`), `losses` (at
        the 4 binary points, keyed `"(+1, -1)"` etc.), `final_binary`, `best_binary`.
    """
    from training import plots

    problem = reference_2d_problem()
    trajectory = train_binary(
        problem, steps=steps, lr=REFERENCE_2D_LR, initial=REFERENCE_2D_INITIAL
    )
    corners = np.array(list(itertools.product((-1.0, 1.0), repeat=2)))
    corner_losses = quadratic_loss(
        corners, hessian=problem.hessian, optimum=problem.optimum
    )
    best = corners[int(np.argmin(corner_losses))]
    if path is not None:
        plots.plot_quadratic_landscape(
            hessian=problem.hessian,
            optimum=problem.optimum,
            trajectory=trajectory.hidden,
            path=path,
            title=f"Binary weights on a quadratic loss: {steps} steps, lr {REFERENCE_2D_LR}",
        )
    return {
        "hessian": problem.hessian.tolist(),
        "optimum": problem.optimum.tolist(),
        "lr": REFERENCE_2D_LR,
        "trajectory": trajectory.hidden.tolist(),
        "losses": {
            f"({int(x):+d}, {int(y):+d})": float(v)
            for (x, y), v in zip(corners, corner_losses)
        },
        "final_binary": binary_sign(trajectory.hidden[-1]).tolist(),
        "best_binary": best.tolist(),
    }


def run_experiment(
    *,
    out: str | os.PathLike | None = None,
    dim: int = DIM,
    steps: int = STEPS,
    lr: float = LR,
    seed: int = 0,
) -> dict:
    """Both experiments; with `out`, writes the PNGs and `toy_quadratic.json` there.

    # Arguments
        out: output directory (created), or `None` for no files.
        dim, steps, lr: the high-dimensional experiment (notebook: 500, 1000, 0.01).
        seed: seed of the problem (H, W*) and of the start `Wh₀` (seed + 1).

    # Returns
        The JSON-ready dict of settings and numbers (see `main`).

    # Raises
        ValueError: for invalid settings.
    """
    from training import plots

    started = time.perf_counter()
    problem = random_problem(dim=dim, seed=seed)
    trajectory = train_binary(problem, steps=steps, lr=lr, seed=seed + 1)
    analysis = analyze_divergence(problem, trajectory)
    final_binary = binary_sign(trajectory.hidden[-1])
    _, local_loss = best_binary_point(problem, final_binary)
    _, local_from_optimum = best_binary_point(problem, binary_sign(problem.optimum))
    files = {}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        files["landscape_2d"] = str(out / "toy_quadratic_2d.png")
        files["divergence"] = str(out / "toy_quadratic_divergence.png")
        files["importance_bins"] = str(out / "toy_quadratic_importance_bins.png")
    result_2d = run_2d(path=files.get("landscape_2d"))
    result = {
        "settings": {
            "dim": problem.dim,
            "steps": trajectory.steps,
            "lr": trajectory.lr,
            "seed": seed,
            "eigenvalues": f"{EIGENVALUE_MEAN} + {EIGENVALUE_SPREAD} * (U(0,1) - 0.5)",
            "eigenbasis": "Haar-random orthogonal (QR of a Gaussian matrix)",
            "optimum": f"U(-{OPTIMUM_RANGE}, {OPTIMUM_RANGE}) per component",
            "initial_hidden": f"{INIT_STD} * N(0, 1)",
            "importance": "loss increase when a component of sign(Wh_T) is flipped",
            "growth_rate": "least-squares slope of |Wh| over the last half of the steps",
        },
        "correlation": {
            "spearman_growth_vs_importance": analysis.spearman,
            "pearson_growth_vs_importance": analysis.pearson,
            "pearson_growth_vs_hessian_diagonal": analysis.pearson_diagonal,
        },
        "fraction_diverging": analysis.fraction_diverging,
        "median_linearity_r2_diverging": analysis.linearity_r2,
        "loss": {
            "initial": float(trajectory.loss[0]),
            "final_sign_wh": float(trajectory.loss[-1]),
            "min_over_steps": float(trajectory.loss.min()),
            "sign_optimum": quadratic_loss(
                binary_sign(problem.optimum),
                hessian=problem.hessian,
                optimum=problem.optimum,
            ),
            "single_flip_descent_from_sign_wh": local_loss,
            "single_flip_descent_from_sign_optimum": local_from_optimum,
            "fraction_of_flips_that_raise_loss": float(
                (analysis.importance > 0).mean()
            ),
        },
        "importance_by_hidden_weight_bin": {
            "edges": analysis.bin_edges.tolist(),
            "mean_abs_wh": _nan_to_none(analysis.bin_mean_abs_wh),
            "mean_increase": _nan_to_none(analysis.bin_mean_increase),
            "std_increase": _nan_to_none(analysis.bin_std_increase),
            "counts": analysis.bin_counts.tolist(),
        },
        "two_d": result_2d,
    }
    if out is not None:
        plots.plot_hidden_weight_divergence(
            np.abs(trajectory.hidden),
            importance=analysis.importance,
            growth_rate=analysis.growth_rate,
            path=files["divergence"],
            title=(
                f"d = {problem.dim}, lr {trajectory.lr}: Spearman(growth, importance) = "
                f"{analysis.spearman:.3f}"
            ),
        )
        plots.plot_loss_increase_by_hidden_weight(
            {
                "mean_abs_wh": analysis.bin_mean_abs_wh,
                "mean_increase": analysis.bin_mean_increase,
                "std_increase": analysis.bin_std_increase,
            },
            path=files["importance_bins"],
            title="Quadratic binary task: loss increase of a flip vs |Wh|",
            ylabel="ΔL of one flip",
        )
        files["json"] = str(out / "toy_quadratic.json")
    result["files"] = files
    result["wall_time_s"] = round(time.perf_counter() - started, 3)
    if out is not None:
        Path(files["json"]).write_text(json.dumps(result, indent=2))
    return result


def _nan_to_none(values: np.ndarray) -> list:
    return [None if np.isnan(v) else float(v) for v in values]


def summary_lines(result: dict) -> list[str]:
    """The three summary lines printed by the command line."""
    s, c, loss = result["settings"], result["correlation"], result["loss"]
    two_d = result["two_d"]
    return [
        f"2-D (Fig. 5a): after {len(two_d['trajectory']) - 1} steps sign(Wh) = "
        f"{tuple(int(v) for v in two_d['final_binary'])}, best binary point "
        f"{tuple(int(v) for v in two_d['best_binary'])}; Wh_T = "
        f"({two_d['trajectory'][-1][0]:.2f}, {two_d['trajectory'][-1][1]:.2f})",
        f"d = {s['dim']}, {s['steps']} steps, lr {s['lr']}: "
        f"{100 * result['fraction_diverging']:.1f}% of |Wh| diverge; growth rate vs "
        f"flip importance: Spearman {c['spearman_growth_vs_importance']:.3f}, "
        f"Pearson {c['pearson_growth_vs_importance']:.3f}",
        f"loss at sign(Wh_T) {loss['final_sign_wh']:.1f} (start "
        f"{loss['initial']:.1f}, sign(W*) {loss['sign_optimum']:.1f}, single-flip "
        f"local optimum from sign(Wh_T) {loss['single_flip_descent_from_sign_wh']:.1f})",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m experiments.toy_quadratic --out DIR [--seed 0] [--dim 500 --steps 1000
    --lr 0.01]`: writes `toy_quadratic_2d.png`, `toy_quadratic_divergence.png`,
    `toy_quadratic_importance_bins.png` and `toy_quadratic.json` to DIR and prints a
    three-line summary. Returns the exit code (2 for invalid arguments)."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments.toy_quadratic",
        description="The quadratic binary task of Laborieux et al. 2021 (Fig. 5a-b).",
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dim", type=int, default=DIM)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--lr", type=float, default=LR)
    args = parser.parse_args(argv)
    try:
        result = run_experiment(
            out=args.out, dim=args.dim, steps=args.steps, lr=args.lr, seed=args.seed
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
