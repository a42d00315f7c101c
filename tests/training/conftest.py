"""Fixtures for the training tests: a synthetic debug dataset, the toy adapter, a clean
environment for child processes, and helpers to read MLflow runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

from toy_adapter import ToyAdapter


@pytest.fixture(scope="session", autouse=True)
def _training_env():
    """DeepSpeed's shared-memory op is compiled once into the repo's cache (as the Makefile
    does), and tests run in one thread (2 shared cores; also the same sums every run)."""
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".mavin" / "torch_extensions"))
    import torch

    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def toy_latents(tmp_path_factory) -> Path:
    """One precompute folder shared by the toy-adapter tests (keyed by digest, reused)."""
    return tmp_path_factory.mktemp("toy-latents")


@pytest.fixture
def toy() -> ToyAdapter:
    return ToyAdapter()
