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

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """No test touches ./.mavin or another test's MLflow store."""
    home = tmp_path / "mavin-home"
    monkeypatch.setenv("MAVIN_HOME", str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.setenv("GIT_AUTHOR_NAME", "mavin-ops-tests")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "tests@localhost")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "mavin-ops-tests")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "tests@localhost")
    return home




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
