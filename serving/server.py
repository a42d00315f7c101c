"""Run a real ``tritonserver`` on loopback over a built model repository.

The binary is the one the nvidia-pytriton wheel ships (``pytriton/tritonserver``), or
``$MAVIN_TRITONSERVER`` / a ``tritonserver`` on PATH. :func:`serve`:

1. picks the repository variant the binary can serve (``onnxruntime`` when it has the ONNX
   Runtime backend, else ``python``);
2. prepares a backend folder with the Python backend and the stub for *this* interpreter;
3. fixes the library path itself: the running interpreter's LIBDIR first (with a pyenv
   Python the stub could otherwise load the system libpython and crash), then the wheel's
   bundled libraries; and puts this interpreter's ``bin`` first on PATH so the Python models
   run in this environment;
4. serves a private hard-linked copy of the variant folder (the Python backend writes
   ``__pycache__`` beside each model.py; the built or published repository stays exactly as
   its manifest says);
5. starts it with explicit model control (``--load-model`` for every model of the repository),
   HTTP and gRPC on 127.0.0.1, a short exit timeout, and waits until every model is ready;
6. stops it cleanly (SIGTERM, then SIGKILL after the exit timeout) and removes its temp files.

A process that exits while loading raises :class:`ServerError` with the log's error line.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mavin_ops.safety import UnsafePath, check_name

from .repository import REPOSITORY_MANIFEST, read_repository
from .spec import VARIANTS
from mavin_ops.errors import MavinError

__all__ = ["ServerError", "TritonInstall", "TritonServer", "find_tritonserver", "free_port", "run_server", "serve", "verify_repository"]


class ServerError(MavinError, RuntimeError):
    """tritonserver could not be found, started or made ready."""


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    backends: Path  # folder holding <backend>/ subfolders
    stubs: Path | None  # pytriton's per-Python-version stubs
    libs: Path | None  # bundled shared libraries

    @property
    def backend_names(self) -> tuple[str, ...]:
        return tuple(sorted(p.name for p in self.backends.iterdir() if p.is_dir() and not p.name.startswith("_")))


def find_tritonserver() -> TritonInstall:
    """The tritonserver to run: ``$MAVIN_TRITONSERVER``, the nvidia-pytriton wheel's, or one
    on PATH (with its backends in ``/opt/tritonserver/backends``)."""
    explicit = os.environ.get("MAVIN_TRITONSERVER")
    if explicit:
        binary = Path(explicit)
        if not binary.is_file():
            raise ServerError(f"MAVIN_TRITONSERVER={explicit} does not exist; point it at a tritonserver binary")
        root = binary.resolve().parent.parent
        return TritonInstall(binary, root / "backends", None, None)
    try:
        import pytriton
    except ImportError:
        pytriton = None
    if pytriton is not None:
        base = Path(pytriton.__file__).resolve().parent / "tritonserver"
        binary = base / "bin" / "tritonserver"
        if binary.is_file():
            libs = base.parent.parent / "nvidia_pytriton.libs"
            return TritonInstall(binary, base / "backends", base / "python_backend_stubs", libs if libs.is_dir() else None)
    found = shutil.which("tritonserver")
    if found:
        return TritonInstall(Path(found), Path("/opt/tritonserver/backends"), None, None)
    raise ServerError("no tritonserver found: install nvidia-pytriton (make install) or set MAVIN_TRITONSERVER to a tritonserver binary")


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    """Block until something listens on 127.0.0.1:``port``; RuntimeError after ``timeout``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def _prepare_backends(install: TritonInstall, workdir: Path) -> Path:
    """A backend folder with the stub that matches this interpreter (pytriton ships one per
    Python version beside the backend)."""
    if install.stubs is None:
        return install.backends
    out = workdir / "backends"
    for backend in install.backends.iterdir():
        if backend.is_dir():
            shutil.copytree(backend, out / backend.name, ignore=shutil.ignore_patterns("__pycache__"))
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = install.stubs / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerError(f"this tritonserver has no Python backend stub for Python {version} (looked in {stub.parent}); use Python 3.8-3.13")
    shutil.copy2(stub, out / "python" / "triton_python_backend_stub")
    return out


def _link_tree(src: Path, dst: Path) -> Path:
    """A private copy of the model repository to serve: files hard-linked (a copy across file
    systems), folders new. The Python backend writes ``__pycache__`` beside each model.py; this
    keeps the built or published repository byte-for-byte as its manifest says."""

    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=link, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def _environment(install: TritonInstall) -> dict[str, str]:
    env = os.environ.copy()
    libdir = sysconfig.get_config_var("LIBDIR")
    paths = [p for p in (libdir, str(install.libs) if install.libs else None, env.get("LD_LIBRARY_PATH")) if p]
    env["LD_LIBRARY_PATH"] = ":".join(paths)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@dataclass
class TritonServer:
    """A running tritonserver; stop it with :meth:`stop` or use it as a context manager."""

    process: subprocess.Popen
    repository: Path
    variant: str
    models: tuple[str, ...]
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int
    log_path: Path
    exit_timeout_s: int
    workdir: Path
    _log_handle: object = field(default=None, repr=False)

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def url(self, protocol: str = "http") -> str:
        return self.http_url if protocol == "http" else self.grpc_url

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}{path}", timeout=2) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except (urllib.error.URLError, OSError):
            return 0

    def ready(self) -> bool:
        return self.alive() and self._get("/v2/health/ready") == 200 and all(self._get(f"/v2/models/{m}/ready") == 200 for m in self.models)

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise ServerError(f"tritonserver exited with code {self.process.returncode} while loading {self.repository}: {_error_line(self.log_tail(200))}; full log: {self.log_path}")
            if self.ready():
                return
            time.sleep(0.25)
        raise ServerError(f"tritonserver did not become ready in {timeout_s:g} s ({_error_line(self.log_tail(200))}); full log: {self.log_path}")

    def stop(self) -> int:
        """SIGTERM, wait up to the exit timeout (+10 s), then SIGKILL; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=self.exit_timeout_s + 10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        if self.process.returncode == 0 and self.log_path.parent == self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)  # clean exit: nothing to look at
        else:
            for sub in ("backends", "models"):  # keep the log for the error message
                shutil.rmtree(self.workdir / sub, ignore_errors=True)
        return self.process.returncode

    def __enter__(self) -> "TritonServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _error_line(log: str) -> str:
    for line in reversed(log.splitlines()):
        low = line.lower()
        if line.startswith("E") or "error" in low or "failed" in low:
            return " ".join(line.split())[:400]
    return "no error line in the log"


def _repository_root(repository: str | Path) -> Path:
    """The build folder of ``repository`` (a build, or one of its variant folders)."""
    root = Path(repository)
    if not (root / REPOSITORY_MANIFEST).is_file() and (root.parent / REPOSITORY_MANIFEST).is_file():
        return root.parent
    return root


def verify_repository(repository: str | Path) -> dict:
    """Check every sha256 a repository records before it is served, as a fetch from the model
    store does: the store's ``MANIFEST.json`` when the folder has one (a store version folder
    or a fetched copy), then ``mavin_repository.json``. Raises :class:`ServerError` (or
    :class:`~mavin_ops.safety.UnsafePath` for a listed name outside the folder) naming the file."""
    from .store import STORE_MANIFEST, verify_fetched

    root = _repository_root(repository)
    if (root / STORE_MANIFEST).is_file():
        verify_fetched(root)
    try:
        return read_repository(root, verify=True)
    except UnsafePath:
        raise
    except ValueError as exc:  # a file that does not match its sha256, a manifest of another format
        raise ServerError(str(exc)) from None


def _resolve(repository: str | Path, variant: str | None, install: TritonInstall) -> tuple[Path, str, tuple[str, ...]]:
    root = Path(repository)
    try:
        info = read_repository(root)
    except FileNotFoundError:
        info = None
    if info is None and (root.parent / "mavin_repository.json").is_file():
        root, variant = root.parent, variant or root.name
        info = read_repository(root)
    if info is None:
        raise FileNotFoundError(f"{repository} is not a built mavin-ops model repository (no mavin_repository.json); build it with build_repository")
    backends = install.backend_names
    if variant is None:
        variant = "onnxruntime" if "onnxruntime" in backends and "onnxruntime" in info["variants"] else "python"
    if variant not in VARIANTS or variant not in info["variants"]:
        raise ValueError(f"repository {root} has no '{variant}' variant (it has {', '.join(info['variants'])})")
    if variant == "onnxruntime" and "onnxruntime" not in backends:
        raise ServerError(f"this tritonserver has no onnxruntime backend (it has {', '.join(backends)}); serve the 'python' variant or use a Triton image with the ONNX Runtime backend")
    models = tuple(check_name(m, f"model name in {root / REPOSITORY_MANIFEST}") for m in info["models"])  # each becomes a folder name
    return root / variant, variant, models


def serve(
    repository: str | Path,
    *,
    variant: str | None = None,
    host: str = "127.0.0.1",
    http_port: int | None = None,
    grpc_port: int | None = None,
    metrics_port: int | None = None,
    exit_timeout_s: int = 5,
    ready_timeout_s: float = 180.0,
    log_path: str | Path | None = None,
    log_verbose: int = 0,
) -> TritonServer:
    """Start tritonserver over a built repository (or one of its variant folders) and
    return once every model is ready. Ports default to free ones on loopback."""
    install = find_tritonserver()
    model_root, variant, models = _resolve(repository, variant, install)
    workdir = Path(tempfile.mkdtemp(prefix="mavin-triton-"))
    try:
        backends = _prepare_backends(install, workdir)
        served = _link_tree(model_root, workdir / "models")
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    http_port, grpc_port, metrics_port = http_port or free_port(), grpc_port or free_port(), metrics_port or free_port()
    log = Path(log_path) if log_path else workdir / "tritonserver.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(install.binary),
        f"--model-repository={served}",
        f"--backend-directory={backends}",
        "--model-control-mode=explicit",
        *(f"--load-model={m}" for m in models),
        "--strict-readiness=true",
        f"--http-address={host}",
        f"--http-port={http_port}",
        f"--grpc-address={host}",
        f"--grpc-port={grpc_port}",
        f"--metrics-address={host}",
        f"--metrics-port={metrics_port}",
        "--allow-cpu-metrics=false",
        "--allow-gpu-metrics=false",
        f"--exit-timeout-secs={exit_timeout_s}",
        f"--log-verbose={log_verbose}",
    ]
    handle = open(log, "w", encoding="utf-8")
    try:
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=_environment(install), cwd=workdir, start_new_session=True)
    except BaseException:
        handle.close()
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    server = TritonServer(proc, model_root, variant, models, host, http_port, grpc_port, metrics_port, log, exit_timeout_s, workdir, handle)
    try:
        server.wait_ready(ready_timeout_s)
    except BaseException:
        server.stop()
        raise
    return server


def run_server(
    repository: str | Path | None = None,
    *,
    store: str | None = None,
    name: str = "mavin",
    version: int | None = None,
    endpoint_url: str | None = None,
    http_port: int = 8000,
    grpc_port: int = 8001,
    metrics_port: int = 8002,
    echo: Callable[[str], None] = print,
    **kwargs,
) -> int:
    """``mavin-ops serve``: serve a built repository (or a local store's version folder), or
    with ``store`` a published version fetched (verified) from a local or S3 model store
    (default: its newest complete version). Prints where it listens, blocks until SIGINT or
    SIGTERM (or the server exits), then stops it. Returns the server's exit code.
    ``kwargs`` go to :func:`serve` (variant, host, exit_timeout_s, log_path, ...)."""
    fetched: Path | None = None
    if repository is None and not store:
        raise ValueError("serve needs a repository folder or --store; build one with 'mavin-ops export'")
    try:
        if store:
            from .store import fetch

            fetched = Path(tempfile.mkdtemp(prefix="mavin-serve-")) / "repository"
            repository = fetch(store, fetched, name=name, version=version, endpoint_url=endpoint_url)
            echo(f"fetched {store}/{name} (version {version or 'newest'}) into {repository}")
        else:  # the store path verified every file on fetch; a folder gets the same check first
            verify_repository(repository)
            echo(f"verified the sha256 of every file of {_repository_root(repository)}")
        server = serve(repository, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, **kwargs)
        stop = {"now": False}

        def handler(signum, frame):
            stop["now"] = True

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            echo(f"tritonserver ready: {server.variant} variant of {server.repository}")
            echo(f"  HTTP  {server.http_url}   gRPC  {server.grpc_url}   models: {', '.join(server.models)}")
            echo(f"  log   {server.log_path}   (Ctrl-C stops it)")
            while not stop["now"] and server.alive():
                time.sleep(0.5)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            code = server.stop()
        return code
    finally:
        if fetched is not None:
            shutil.rmtree(fetched.parent, ignore_errors=True)
