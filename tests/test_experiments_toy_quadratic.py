"""Tests for experiments/toy_quadratic.py: the update rule, convergence to a binary point,
divergence of important hidden weights, and the command line."""

import itertools
import json

import numpy as np
import pytest

from experiments import toy_quadratic as tq

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_update_rule_matches_a_hand_computed_step():
    hessian = np.array([[2.0, 1.0], [1.0, 3.0]])
    optimum = np.array([0.5, -2.0])
    # sign(Wh) = (+1, -1); sign(W) - W* = (0.5, 1.0); H @ that = (2.0, 3.5).
    new = tq.binary_gradient_step(
        np.array([0.3, -0.1]), hessian=hessian, optimum=optimum, lr=0.1
    )
    np.testing.assert_allclose(new, [0.3 - 0.2, -0.1 - 0.35])
    # sign(0) = +1 (Larq's convention): (1, 1) - W* = (0.5, 3.0) -> H @ = (4.0, 9.5).
    new = tq.binary_gradient_step(
        np.array([0.0, 0.0]), hessian=hessian, optimum=optimum, lr=0.1
    )
    np.testing.assert_allclose(new, [-0.4, -0.95])
    # The loss is the quadratic form, for one point and for a batch.
    assert tq.quadratic_loss([1.0, -1.0], hessian=hessian, optimum=optimum) == (
        pytest.approx(0.5 * (2 * 0.25 + 2 * 0.5 * 1.0 + 3 * 1.0))
    )
    batch = tq.quadratic_loss(
        np.array([[1.0, -1.0], [0.5, -2.0]]), hessian=hessian, optimum=optimum
    )
    np.testing.assert_allclose(batch, [2.25, 0.0])


def test_trajectory_records_every_step():
    problem = tq.reference_2d_problem()
    trajectory = tq.train_binary(
        problem, steps=3, lr=0.35, initial=tq.REFERENCE_2D_INITIAL
    )
    expected = [np.array(tq.REFERENCE_2D_INITIAL)]
    for _ in range(3):
        expected.append(
            tq.binary_gradient_step(
                expected[-1], hessian=problem.hessian, optimum=problem.optimum, lr=0.35
            )
        )
    np.testing.assert_allclose(trajectory.hidden, np.array(expected))
    for hidden, loss in zip(trajectory.hidden, trajectory.loss):
        assert loss == pytest.approx(
            tq.quadratic_loss(
                np.where(hidden >= 0, 1.0, -1.0),
                hessian=problem.hessian,
                optimum=problem.optimum,
            )
        )


def test_2d_loss_decreases_to_the_best_binary_point():
    result = tq.run_2d()
    losses = result["losses"]
    # The notebook's H and W* = (1.5, 0.5): (+1, +1) is the best of the 4 binary points.
    assert min(losses, key=losses.get) == "(+1, +1)"
    assert result["final_binary"] == result["best_binary"] == [1.0, 1.0]
    trajectory = np.array(result["trajectory"])
    # The important component diverges, the other one oscillates around 0.
    assert trajectory[-1, 0] > 5.0
    assert np.abs(trajectory[:, 1]).max() < 0.5
    assert np.all(np.diff(trajectory[:, 0]) > 0)


def test_flip_loss_increase_matches_brute_force():
    problem = tq.random_problem(dim=6, seed=3)
    point = np.array([1.0, -1.0, -1.0, 1.0, 1.0, -1.0])
    base = tq.quadratic_loss(point, hessian=problem.hessian, optimum=problem.optimum)
    brute = []
    for i in range(6):
        flipped = point.copy()
        flipped[i] = -flipped[i]
        brute.append(
            tq.quadratic_loss(flipped, hessian=problem.hessian, optimum=problem.optimum)
            - base
        )
    np.testing.assert_allclose(tq.flip_loss_increase(problem, point), brute)
    # Exhaustive search for d <= 12.
    best, loss = tq.best_binary_point(problem, point)
    every = [
        tq.quadratic_loss(np.array(p), hessian=problem.hessian, optimum=problem.optimum)
        for p in itertools.product((-1.0, 1.0), repeat=6)
    ]
    assert loss == pytest.approx(min(every))


def test_random_problem_follows_the_notebook():
    problem = tq.random_problem(dim=200, seed=1)
    assert np.all((problem.eigenvalues > 10.5) & (problem.eigenvalues < 29.5))
    np.testing.assert_allclose(problem.hessian, problem.hessian.T)
    np.testing.assert_allclose(
        np.linalg.eigvalsh(problem.hessian), np.sort(problem.eigenvalues), rtol=1e-10
    )
    np.testing.assert_allclose(
        problem.eigenvectors @ problem.eigenvectors.T, np.eye(200), atol=1e-10
    )
    assert np.all(np.abs(problem.optimum) < 4.0)
    assert problem.optimum.std() == pytest.approx(8 / np.sqrt(12), rel=0.15)
    # A rotated basis: H is far from diagonal (the notebook: diagonal mass ~0.17).
    diagonal_mass = (
        np.abs(np.diag(problem.hessian)).sum() / np.abs(problem.hessian).sum()
    )
    assert diagonal_mass < 0.5


def test_important_hidden_weights_diverge_faster():
    problem = tq.random_problem(seed=0)  # the notebook's d = 500, 1000 steps, lr 0.01
    trajectory = tq.train_binary(problem, seed=1)
    analysis = tq.analyze_divergence(problem, trajectory)
    # Measured: Spearman 0.975-0.983, Pearson 0.954-0.960 over seeds 0-9.
    assert analysis.spearman > 0.9
    assert analysis.pearson > 0.85
    # H_ii are all close to the mean eigenvalue: they do not explain the speeds.
    assert abs(analysis.pearson_diagonal) < 0.3
    # Diverging |Wh| grow linearly (measured median R^2 > 0.99999); 73-77% diverge.
    assert analysis.linearity_r2 > 0.999
    assert 0.6 < analysis.fraction_diverging < 0.9
    assert analysis.growth_rate[analysis.diverging].min() > 0
    # Non-diverging components stay near zero (they oscillate).
    final = np.abs(trajectory.hidden[-1])
    assert final[~analysis.diverging].max() < final[analysis.diverging].min()
    # Fig. 5b: the flip's loss increase grows with |Wh| bin after the first bin.
    increase = analysis.bin_mean_increase[~np.isnan(analysis.bin_mean_increase)]
    assert np.all(np.diff(increase) > 0)
    assert analysis.bin_counts.sum() == 500
    # The loss fell to a binary point close to a single-flip local optimum.
    _, local = tq.best_binary_point(problem, trajectory.hidden[-1])
    assert trajectory.loss[-1] < 0.45 * trajectory.loss[0]
    assert trajectory.loss[-1] < 1.1 * local


def test_command_line_writes_json_and_pngs(tmp_path, capsys):
    out = tmp_path / "toy"
    code = tq.main(["--out", str(out), "--dim", "60", "--steps", "200", "--seed", "2"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    assert lines[1].startswith("d = 60, 200 steps, lr 0.01:")
    data = json.loads((out / "toy_quadratic.json").read_text())
    assert data["settings"]["dim"] == 60 and data["settings"]["steps"] == 200
    for name in (
        "toy_quadratic_2d.png",
        "toy_quadratic_divergence.png",
        "toy_quadratic_importance_bins.png",
    ):
        content = (out / name).read_bytes()
        assert content[:8] == PNG_SIGNATURE and len(content) > 10_000
    # The numbers are those of the Python API with the same settings.
    problem = tq.random_problem(dim=60, seed=2)
    analysis = tq.analyze_divergence(
        problem, tq.train_binary(problem, steps=200, lr=0.01, seed=3)
    )
    assert data["correlation"]["spearman_growth_vs_importance"] == pytest.approx(
        analysis.spearman
    )
    assert data["fraction_diverging"] == pytest.approx(analysis.fraction_diverging)
    assert data["loss"]["final_sign_wh"] <= data["loss"]["initial"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dim", "0"], "dim must be a positive integer"),
        (["--steps", "-3"], "steps must be a positive integer"),
        (["--lr", "0"], "lr must be a finite number > 0"),
    ],
)
def test_command_line_rejects_bad_settings(tmp_path, capsys, argv, message):
    assert tq.main(["--out", str(tmp_path), *argv]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error


def test_invalid_arguments():
    with pytest.raises(ValueError, match="positive definite"):
        tq.random_problem(dim=3, eigenvalue_spread=50.0)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        tq.train_binary(tq.reference_2d_problem(), steps=2, initial=[1.0, 2.0, 3.0])
    problem = tq.reference_2d_problem()
    with pytest.raises(ValueError, match="at least 2 steps"):
        tq.analyze_divergence(problem, tq.train_binary(problem, steps=1))
