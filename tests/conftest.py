"""Shared fixtures: every test gets its own MAVIN_HOME and MLflow store; `moto_server` is a
real S3 endpoint on loopback, started once per session and always stopped."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mavin_ops.serving.server import free_port, wait_for_port  # shared with the server code
from release_support import use_home

VENV_BIN = Path(sys.executable).parent

#: Modules that take minutes: run first, so that with workers (pytest-xdist, `make test`) the
#: rest of the suite fills the other worker meanwhile.
LONG_MODULES = ("test_release.py",)


def pytest_configure(config):
    """Under pytest-xdist every worker and the processes it starts (pipeline steps, trainers)
    use one thread: two workers on two cores, never more threads than cores."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = "1"
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: item.path.name not in LONG_MODULES)  # stable: the rest keep their order


@pytest.fixture(scope="session")
def empty_mlflow_store(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store at the current schema, made once per session. Each test's
    home starts with a copy: creating MLflow's schema costs about a second per store, and
    hundreds of tests (and every pipeline step) would otherwise pay it."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(path.parent)  # MLflow puts the default experiment's ./mlruns in the working folder
        client = MlflowClient(f"sqlite:///{path}")
        client.search_experiments()
        client.search_registered_models()
    return path


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch, empty_mlflow_store):
    """No test touches ./.mavin or another test's MLflow store (tests/test_release.py
    overrides this with its module's shared home). The home is beside the test's tmp_path,
    not in it, so a test sees only its own files there."""
    home = tmp_path_factory.mktemp("mavin-home")
    shutil.copyfile(empty_mlflow_store, home / "mlflow.db")
    return use_home(monkeypatch, home)




@pytest.fixture(scope="session")
def debug_dataset(tmp_path_factory) -> Path:
    """MAVINSet-mini ``debug`` (data/synth.py): 4 train + 2 eval clips, seed 0; generated
    once per session and read-only for tests (copy it to change it)."""
    from mavin_ops.data import synth

    root = tmp_path_factory.mktemp("mavinset") / "debug"
    synth.generate(root, preset="debug", seed=0, progress=False)
    return root


@pytest.fixture(scope="session")
def moto_server():
    """A real S3 API (moto_server) on loopback. Yields (endpoint_url, process); the process is
    terminated at the end of the session even when tests fail."""
    exe = shutil.which("moto_server", path=str(VENV_BIN)) or shutil.which("moto_server")
    if exe is None:
        pytest.fail("moto_server is not installed; run `make install`")
    port = free_port()
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def s3_env(monkeypatch, moto_server):
    """Fake credentials for moto, from the environment only (as on a cluster)."""
    endpoint, _ = moto_server
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return endpoint
