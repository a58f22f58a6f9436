"""Tests of benchmarks/torch_reference.py's input checks (PyTorch is no project
dependency: where it is installed, the check that needs its absence is skipped)."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import torch_reference  # noqa: E402


def test_a_directory_without_mnist_gets_one_line(tmp_path, capsys):
    assert torch_reference.main(["--data-dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: no mnist/ under") and error.count("\n") == 1


@pytest.mark.skipif(
    importlib.util.find_spec("torch") is not None, reason="PyTorch is installed"
)
def test_without_pytorch_it_says_how_to_get_it(tmp_path, capsys, tiny_data_dir):
    code = torch_reference.main(
        ["--data-dir", str(tiny_data_dir), "--results-dir", str(tmp_path)]
    )
    assert code == 2
    error = capsys.readouterr().err
    assert "needs PyTorch" in error and error.count("\n") == 1
    assert not list(tmp_path.iterdir())  # nothing written
