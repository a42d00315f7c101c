"""A local stand-in of the Kubernetes API server and the Kubeflow Trainer controller, for the
``trainjob`` launch backend's tests. A real cluster cannot run here; this is the boundary.

What it serves (plain HTTP on loopback, JSON, the paths and shapes the ``kubernetes`` client
uses):

- ``POST/GET/DELETE /apis/trainer.kubeflow.org/v1alpha1/namespaces/{ns}/trainjobs[/{name}]``.
  A created TrainJob is checked against the Trainer's published models (as the API server
  checks it against the CRD's schema) and refused with 422 when it does not fit; a second
  create of the same name is a 409.
- ``GET /api/v1/namespaces/{ns}/pods?labelSelector=...`` and ``.../pods/{pod}/log``: one pod
  per TrainJob, node 0, labelled as the Trainer's JobSet labels it.

What it does in place of the controller and the kubelet (``run=True``): runs the trainer
container's command on this machine (the job's plain env values on top of this process's
environment; ``secretKeyRef`` values from the ``secrets`` it was given, as Kubernetes would
mount them), with the pod log being that process's output, and sets the TrainJob's
``Complete`` or ``Failed`` condition from its exit code. Deleting the TrainJob kills the
process group. With ``run=False`` nothing runs and the test sets conditions by hand.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

__all__ = ["StandIn", "kubeconfig"]

_JOBS = re.compile(r"^/apis/trainer\.kubeflow\.org/v1alpha1/namespaces/([^/]+)/trainjobs(?:/([^/]+))?$")
_PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods$")
_LOG = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$")


def _status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code}


class StandIn:
    """Start with :meth:`start`, always :meth:`stop` (kills what still runs)."""

    def __init__(self, *, run: bool = True, workdir: Path, secrets: dict[tuple[str, str], str] | None = None):
        self.run, self.workdir, self.secrets = run, Path(workdir), dict(secrets or {})
        self.jobs: dict[tuple[str, str], dict] = {}
        self.procs: dict[tuple[str, str], subprocess.Popen] = {}
        self.logs: dict[tuple[str, str], Path] = {}
        self.creates: list[str] = []
        self.deletes: list[str] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> str:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, code: int, body, content_type: str = "application/json"):
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self):
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n) or b"{}")

            def do_POST(self):
                m = _JOBS.match(urlparse(self.path).path)
                if not m or m.group(2):
                    return self._send(404, _status(404, "NotFound", self.path))
                self._send(*standin.create(m.group(1), self._body()))

            def do_GET(self):
                url = urlparse(self.path)
                if m := _JOBS.match(url.path):
                    return self._send(*standin.get(m.group(1), m.group(2)))
                if m := _PODS.match(url.path):
                    selector = parse_qs(url.query).get("labelSelector", [""])[0]
                    return self._send(200, standin.pods(m.group(1), selector))
                if m := _LOG.match(url.path):
                    return self._send(*standin.log(m.group(1), m.group(2)), content_type="text/plain")
                self._send(404, _status(404, "NotFound", self.path))

            def do_DELETE(self):
                m = _JOBS.match(urlparse(self.path).path)
                if not m or not m.group(2):
                    return self._send(404, _status(404, "NotFound", self.path))
                self._send(*standin.delete(m.group(1), m.group(2)))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        with self.lock:
            procs = list(self.procs.values())
        for p in procs:
            _kill(p)
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    # ------------------------------------------------------------------ API
    def create(self, ns: str, body: dict) -> tuple[int, dict]:
        from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob
        from pydantic import ValidationError

        from mavin_ops.training.k8s import _dropped

        name = (body.get("metadata") or {}).get("name", "")
        try:  # what the API server's schema validation would refuse
            dropped = _dropped(body, TrainerV1alpha1TrainJob.from_dict(body).to_dict())
        except ValidationError as exc:
            return 422, _status(422, "Invalid", f"TrainJob.trainer.kubeflow.org \"{name}\" is invalid: {exc.errors()[0]}")
        if dropped:
            return 422, _status(422, "Invalid", f"TrainJob.trainer.kubeflow.org \"{name}\" is invalid: unknown field(s) {dropped}")
        with self.lock:
            if (ns, name) in self.jobs:
                return 409, _status(409, "AlreadyExists", f"trainjobs.trainer.kubeflow.org \"{name}\" already exists")
            obj = {**body, "metadata": {**body["metadata"], "uid": str(uuid.uuid4()), "creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ")},
                   "status": {"conditions": []}}
            self.jobs[(ns, name)] = obj
            self.creates.append(name)
        if self.run:
            self._start_pod(ns, name, obj)
        return 201, obj

    def get(self, ns: str, name: str | None) -> tuple[int, dict]:
        with self.lock:
            if name is None:
                return 200, {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJobList", "metadata": {},
                             "items": [o for (n, _), o in self.jobs.items() if n == ns]}
            obj = self.jobs.get((ns, name))
        if obj is None:
            return 404, _status(404, "NotFound", f"trainjobs.trainer.kubeflow.org \"{name}\" not found")
        return 200, obj

    def delete(self, ns: str, name: str) -> tuple[int, dict]:
        with self.lock:
            obj = self.jobs.pop((ns, name), None)
            proc = self.procs.pop((ns, name), None)
            if obj is not None:
                self.deletes.append(name)
        if obj is None:
            return 404, _status(404, "NotFound", f"trainjobs.trainer.kubeflow.org \"{name}\" not found")
        if proc is not None:
            _kill(proc)
        return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}}

    def pods(self, ns: str, selector: str) -> dict:
        want = dict(x.split("=", 1) for x in selector.split(",") if "=" in x)
        items = []
        with self.lock:
            for (n, name), _ in self.jobs.items():
                labels = {"jobset.sigs.k8s.io/jobset-name": name, "batch.kubernetes.io/job-completion-index": "0"}
                if n == ns and all(labels.get(k) == v for k, v in want.items()) and (n, name) in self.logs:
                    items.append({"metadata": {"name": f"{name}-node-0-0", "namespace": ns, "labels": labels},
                                  "spec": {"containers": [{"name": "node"}]}})
        return {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}

    def log(self, ns: str, pod: str) -> tuple[int, str]:
        name = pod.removesuffix("-node-0-0")
        path = self.logs.get((ns, name))
        if path is None:
            return 404, json.dumps(_status(404, "NotFound", f"pods \"{pod}\" not found"))
        return 200, path.read_text(errors="replace") if path.exists() else ""

    # ------------------------------------------------------------------ test hooks
    def set_condition(self, ns: str, name: str, kind: str, reason: str = "", message: str = "") -> None:
        with self.lock:
            obj = self.jobs[(ns, name)]
            obj["status"] = {"conditions": [{"type": kind, "status": "True", "reason": reason, "message": message,
                                             "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ")}]}

    def write_log(self, ns: str, name: str, text: str) -> None:
        path = self.workdir / f"{ns}-{name}.log"
        path.write_text(text)
        with self.lock:
            self.logs[(ns, name)] = path

    def running(self, ns: str, name: str) -> bool:
        with self.lock:
            p = self.procs.get((ns, name))
        return p is not None and p.poll() is None

    # ------------------------------------------------------------------ the "controller"
    def _start_pod(self, ns: str, name: str, obj: dict) -> None:
        trainer = obj["spec"]["trainer"]
        env = dict(os.environ)
        for e in trainer.get("env") or []:
            if "value" in e:
                env[e["name"]] = e["value"]
            elif ref := (e.get("valueFrom") or {}).get("secretKeyRef"):
                value = self.secrets.get((ref["name"], ref["key"]))
                if value is not None:
                    env[e["name"]] = value
        # What the Trainer's torch plugin sets for torchrun on node 0 (one node here).
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env.update({"PET_NNODES": str(trainer.get("numNodes", 1)), "PET_NPROC_PER_NODE": str(trainer.get("numProcPerNode", 1)),
                    "PET_NODE_RANK": "0", "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(port)})
        log = self.workdir / f"{ns}-{name}.log"
        fh = open(log, "w")
        proc = subprocess.Popen(trainer["command"], env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True)
        fh.close()
        with self.lock:
            self.procs[(ns, name)] = proc
            self.logs[(ns, name)] = log

        def watch():
            code = proc.wait()
            with self.lock:
                if self.jobs.get((ns, name)) is not obj:
                    return  # deleted meanwhile
            if code == 0:
                self.set_condition(ns, name, "Complete", "JobsCompleted", "jobs completed")
            else:
                self.set_condition(ns, name, "Failed", "BackoffLimitExceeded", f"node-0 exited with code {code}")

        threading.Thread(target=watch, daemon=True).start()


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)


def kubeconfig(path: Path, server: str) -> Path:
    """A kubeconfig naming the stand-in (what KUBECONFIG points the client at)."""
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "standin",
        "clusters": [{"name": "standin", "cluster": {"server": server}}],
        "users": [{"name": "tester", "user": {"token": "standin-token"}}],
        "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "tester", "namespace": "mavin"}}],
    }))
    return path
