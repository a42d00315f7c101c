"""The ``trainjob`` launch backend: a training stage as a Kubeflow Trainer ``TrainJob``,
created through the Kubernetes API and followed to its end.

:func:`run_trainjob` takes the object :func:`training.manifests.render_trainjob` renders and

1. checks it against the Trainer's published API models (``kubeflow-trainer-api``): every
   field must parse with its type, and every field we send must survive the round trip (a
   field the schema does not know is an error here, not something the API server drops);
2. creates it, or, when a TrainJob of that name exists (a retried pipeline step: the name is
   derived from the release and the stage), re-attaches to it while it runs, returns at once
   when it already completed, and deletes and re-creates it when it failed, so the trainer
   resumes from the newest checkpoint on the shared volume;
3. follows it: the conditions (``Complete``, ``Failed``) and the log of rank 0's pod (node 0,
   container ``node``) streamed line by line into this process's output (the step log);
4. on SIGTERM or Ctrl-C (a cancelled pipeline run) or a timeout deletes the TrainJob (its
   pods go with it) before the step ends.

The API client is configured the usual way: in a pod, from its service account; elsewhere
from ``$KUBECONFIG`` (or ``~/.kube/config``); tests start a local stand-in of the API server.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from typing import Any, Callable

__all__ = ["GROUP", "PLURAL", "VERSION", "TrainJobError", "api_clients", "run_trainjob", "validate_trainjob"]

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
#: Rank 0 runs on node 0 of the JobSet the Trainer makes for a TrainJob (same name).
RANK0_SELECTOR = "jobset.sigs.k8s.io/jobset-name={name},batch.kubernetes.io/job-completion-index=0"
TRAINER_CONTAINER = "node"
_ERROR_LINE = re.compile(r"^(?:\[[^\]]*\]\s*)?((?:[\w.]+(?:Error|Exception)\b.*)|error: .*)$")


class TrainJobError(RuntimeError):
    """A TrainJob that could not be submitted, failed, or was stopped; one line."""


def _dropped(sent: Any, back: Any, path: str = "") -> list[str]:
    """Paths of fields in ``sent`` that the model round trip ``back`` does not have."""
    out: list[str] = []
    if isinstance(sent, dict):
        for k, v in sent.items():
            here = f"{path}.{k}" if path else k
            if not isinstance(back, dict) or k not in back:
                out.append(here)
            else:
                out += _dropped(v, back[k], here)
    elif isinstance(sent, list):
        for i, v in enumerate(sent):
            out += _dropped(v, back[i] if isinstance(back, list) and i < len(back) else None, f"{path}[{i}]")
    return out


def validate_trainjob(body: dict[str, Any]) -> None:
    """Check ``body`` against the Trainer's published ``TrainJob`` model (v1alpha1): wrong
    types and missing required fields fail pydantic's validation, fields the schema does not
    know are found by the round trip. Raises :class:`TrainJobError` naming the field."""
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob
    from pydantic import ValidationError

    name = (body.get("metadata") or {}).get("name", "?")
    try:
        model = TrainerV1alpha1TrainJob.from_dict(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise TrainJobError(f"TrainJob {name}: {where}: {first.get('msg')} (Trainer API {GROUP}/{VERSION})") from None
    dropped = _dropped(body, model.to_dict())
    if dropped:
        raise TrainJobError(f"TrainJob {name}: {', '.join(dropped[:5])}: not in the Trainer API {GROUP}/{VERSION} schema")


def api_clients() -> tuple[Any, Any]:
    """(CustomObjectsApi, CoreV1Api) configured from the pod's service account when in a
    cluster, else from the kubeconfig."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            # $KUBECONFIG read now (the client's own default is read once, at its import)
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
        except (config.ConfigException, OSError) as exc:
            raise TrainJobError(
                f"no Kubernetes API to submit the TrainJob to: not in a pod and no kubeconfig ({exc}); "
                "set KUBECONFIG or run the step in the cluster"
            ) from None
    return client.CustomObjectsApi(), client.CoreV1Api()


def _condition(obj: dict[str, Any]) -> tuple[str, str, str]:
    """("Complete" | "Failed" | "", reason, message) from a TrainJob's status."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and str(cond.get("status")) == "True":
            return cond["type"], str(cond.get("reason") or ""), str(cond.get("message") or "")
    return "", "", ""


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


class _Log:
    """Rank 0's log, printed as it grows (whole-log reads; only new lines are printed)."""

    def __init__(self, core: Any, ns: str, name: str, say: Callable[[str], None]):
        self.core, self.ns, self.name, self.say = core, ns, name, say
        self.seen = 0
        self.lines: list[str] = []

    def poll(self) -> None:
        from kubernetes.client.rest import ApiException

        try:
            pods = self.core.list_namespaced_pod(self.ns, label_selector=RANK0_SELECTOR.format(name=self.name)).items
            if not pods:
                return
            text = self.core.read_namespaced_pod_log(pods[0].metadata.name, self.ns, container=TRAINER_CONTAINER)
        except ApiException:
            return  # the pod is not there yet (or gone): the status still tells the end
        self.lines = (text or "").splitlines()
        for line in self.lines[self.seen:]:
            self.say(f"[rank 0] {line}")
        self.seen = len(self.lines)

    def last_error(self) -> str:
        """The trainer's own one-line error (``error: ...``) when it wrote one, else the last
        exception line that is not torchrun's own wrapper, else the log's last line."""
        found = [m.group(1) for m in (_ERROR_LINE.match(x.strip()) for x in self.lines) if m]
        ours = [x for x in found if x.startswith("error: ")]
        theirs = [x for x in found if not x.startswith("torch.distributed.elastic")]
        for pick in (ours, theirs, found):
            if pick:
                return pick[-1]
        return self.lines[-1].strip() if self.lines else "no log"


def run_trainjob(
    body: dict[str, Any],
    *,
    apis: tuple[Any, Any] | None = None,
    poll_s: float = 2.0,
    timeout_s: float | None = None,
    say: Callable[[str], None] = lambda s: print(s, flush=True),
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Submit (or re-attach to) the TrainJob ``body`` and follow it to its end; returns the
    final object. Raises :class:`TrainJobError` when it fails (with rank 0's last error line)
    or runs past ``timeout_s``; SIGTERM/KeyboardInterrupt or ``stop`` delete it first."""
    from kubernetes.client.rest import ApiException

    validate_trainjob(body)
    custom, core = apis or api_clients()
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    where = f"TrainJob {ns}/{name}"

    def get() -> dict[str, Any] | None:
        try:
            return custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise TrainJobError(f"{where}: the API answered {exc.status} {exc.reason}") from None

    def delete() -> None:
        try:
            custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, propagation_policy="Foreground")
        except ApiException as exc:
            if exc.status != 404:
                raise TrainJobError(f"{where}: could not delete it: {exc.status} {exc.reason}") from None

    stop = stop or threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():  # a cancelled step gets SIGTERM, at any point from here
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        existing = get()
        state = _condition(existing)[0] if existing else ""
        if existing is not None and state == "Complete":
            say(f"{where} already completed; re-attached")
            return existing
        if existing is not None and state == "Failed":
            say(f"{where} failed before; deleting and submitting it again (training resumes from its newest checkpoint)")
            delete()
            deadline = time.monotonic() + 120
            while get() is not None and time.monotonic() < deadline:
                time.sleep(poll_s)
            existing = None
        if existing is None:
            try:
                custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
            except ApiException as exc:
                detail = re.sub(r"\s+", " ", str(exc.body or exc.reason))[:300]
                raise TrainJobError(f"{where}: the API refused it: {exc.status} {detail}") from None
            say(f"{where} submitted: {body['spec']['trainer'].get('numNodes', 1)} node(s) x "
                f"{body['spec']['trainer'].get('numProcPerNode', 1)} process(es)")
        else:
            say(f"{where} is running; re-attached")
        return _follow(get, delete, _Log(core, ns, name, say), where, poll_s, timeout_s, stop, say)
    except KeyboardInterrupt:  # stopped while submitting or following: the job goes too
        delete()
        say(f"{where} deleted: the step was stopped")
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _follow(get: Callable[[], dict | None], delete: Callable[[], None], log: _Log, where: str, poll_s: float,
            timeout_s: float | None, stop: threading.Event, say: Callable[[str], None]) -> dict[str, Any]:
    """Poll the TrainJob and rank 0's log until it completes (returned) or fails (raised)."""
    start = time.monotonic()
    while True:
        if stop.is_set():
            raise KeyboardInterrupt
        obj = get()
        log.poll()
        if obj is None:
            raise TrainJobError(f"{where} was deleted by someone else while the step followed it")
        state, reason, message = _condition(obj)
        if state == "Complete":
            say(f"{where} completed")
            return obj
        if state == "Failed":
            raise TrainJobError(f"{where} failed: {reason}: {message}; rank 0: {log.last_error()}")
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            delete()
            raise TrainJobError(f"{where} ran past {timeout_s:g} s and was deleted")
        stop.wait(poll_s)
