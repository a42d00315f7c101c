"""Fixtures for the serving tests: a debug checkpoint the tests build themselves, its ONNX
export and model repository (once per session), and a real tritonserver over it that is
always stopped."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mavin_ops.model import build_model, save_checkpoint
from mavin_ops.serving.server import free_port, wait_for_port  # shared with the server code

torch.set_num_threads(1)

VENV_BIN = Path(sys.executable).parent
LINEAGE = {"mlflow_run_id": "0123456789abcdef", "dataset_digest": "md5:feedbeef.dir", "release_id": "r-test"}


def debug_model(seed: int = 0, std: float = 0.1):
    """The debug preset with small random weights (adaLN-Zero would make a fresh model output
    zeros, which hides every mistake an export could make)."""
    torch.manual_seed(seed)
    model = build_model("debug")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in list(model.denoiser.parameters()) + list(model.text_encoder.parameters()):
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


@pytest.fixture(scope="session")
def model():
    """The debug model the session's checkpoint holds (read-only)."""
    return debug_model()


@pytest.fixture(scope="session")
def debug_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "debug.safetensors"
    save_checkpoint(debug_model(), path, LINEAGE)
    return path


@pytest.fixture(scope="session")
def exported(debug_checkpoint, tmp_path_factory):
    from mavin_ops.serving.export import export_model

    return export_model(debug_checkpoint, tmp_path_factory.mktemp("export") / "onnx")


@pytest.fixture(scope="session")
def built(exported, tmp_path_factory):
    from mavin_ops.serving.repository import build_repository

    return build_repository(exported.path, tmp_path_factory.mktemp("repo") / "repository")


@pytest.fixture(scope="session")
def triton(built):
    """A real tritonserver (python variant) over the session's repository; always stopped."""
    from mavin_ops.serving.server import serve

    server = serve(built.path, variant="python", exit_timeout_s=3)
    try:
        yield server
    finally:
        server.stop()




class OwnMoto:
    """A moto_server this test owns (so it may kill it), recording every request to a file
    so a restarted server can replay them: S3 objects survive the crash, as on real S3."""

    def __init__(self, workdir: Path):
        self.exe = shutil.which("moto_server", path=str(VENV_BIN)) or shutil.which("moto_server")
        if self.exe is None:
            pytest.fail("moto_server is not installed; run `make install`")
        self.port = free_port()
        self.recording = workdir / "moto-recording.jsonl"
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, replay: bool = False) -> None:
        env = dict(os.environ, MOTO_ENABLE_RECORDING="1", MOTO_RECORDER_FILEPATH=str(self.recording))
        self.proc = subprocess.Popen([self.exe, "-H", "127.0.0.1", "-p", str(self.port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)
        if replay:
            import urllib.request

            req = urllib.request.Request(f"{self.endpoint}/moto-api/recorder/replay-recording", method="POST")
            with urllib.request.urlopen(req, timeout=60) as resp:
                assert resp.status == 200

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def own_moto(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    moto = OwnMoto(tmp_path)
    try:
        yield moto
    finally:
        moto.stop()


class Kit:
    """Helpers handed to tests (tests import nothing from conftest under importlib mode)."""

    debug_model = staticmethod(debug_model)
    LINEAGE = LINEAGE


@pytest.fixture
def kit() -> type[Kit]:
    return Kit
