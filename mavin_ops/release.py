"""Run the release pipeline on this machine with the KFP local runner, then say where
everything landed (pipeline outputs, dataset version, reports, the MLflow runs).

Resuming: every run records its pipeline arguments on its MLflow parent run
(``mavin.release_args``) and, with ``cache`` on (the default), the KFP local runner writes
each finished step's outputs to its cache (``$MAVIN_HOME/pipelines/.kfp_cache``). Every
step receives ``release_id``, so cache keys never match across releases: the cache only
serves a re-run of the same release. ``run_release(resume=ID)`` is that re-run: same
release id and arguments, the parent run reopened (RUNNING, ``mavin.attempt`` + 1), the
steps that finished before reused from the cache, and the train step resuming from its
working checkpoints under ``$MAVIN_HOME/runs/<release>/train/<stage>``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
import sys
from typing import Callable, Iterator, TextIO

from mavin_ops import settings, tracking
from mavin_ops.console import ReleaseConsole, task_names
from mavin_ops.errors import MavinError

__all__ = ["PreflightError", "ReleaseResult", "ResumeError", "preflight", "run_release"]

#: The parent-run tag holding the pipeline arguments a release ran with (JSON).
ARGS_TAG = "mavin.release_args"


#: What a release's verdict can be (the ``mavin.verdict`` tag; a failed release has none).
VERDICTS = ("promoted", "not promoted")


class ResumeError(MavinError, ValueError):
    """A release cannot be (re)run under this release id."""


class PreflightError(MavinError, ValueError):
    """A release argument that would only fail deep inside the pipeline: refused before it starts."""


def preflight(args: dict) -> None:
    """Check what a release would otherwise find wrong only minutes in: the preset, the
    dataset revision (resolved in the registry now), the gate policy file, every name that
    becomes a path and every URL (no credentials in them). Raises a one-line error."""
    from mavin_ops.evaluation.gate import load_policy
    from mavin_ops.presets import RELEASE_PRESETS
    from mavin_ops.safety import check_parameters

    check_parameters(args, "release")
    for key, low in (("seed", 0), ("train_steps", 0), ("sample_steps", 0), ("sample_limit", 0)):
        value = args.get(key, low)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise PreflightError(f"--{key.replace('_', '-')} must be an integer >= {low}, got {value!r}")
    from mavin_ops.presets import MIN_BASE_SEED as MIN_SEED

    if args.get("seed", 0) >= MIN_SEED:
        raise PreflightError(f"--seed {args['seed']}: seeds from {MIN_SEED} up generate the foundation model's worlds; a release benchmark uses a lower one")
    share = args.get("max_quarantine_share", 0.0)
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share <= 1.0:
        raise PreflightError(f"--max-quarantine-share must be between 0 and 1, got {share!r}")
    preset = args.get("preset")
    if preset not in RELEASE_PRESETS:
        raise PreflightError(f"--preset '{preset}' is not a release preset; use one of {', '.join(RELEASE_PRESETS)}")
    if args.get("gate_policy"):
        load_policy(args["gate_policy"])  # PolicyError names the file and the field
    if args.get("source"):
        from mavin_ops.data.ingest import find_sources

        if args.get("dataset_rev"):
            raise PreflightError("--source ingests new footage and --dataset-rev reuses a registry version; pass one of them")
        try:
            there = Path(args["source"]).exists()
        except OSError as exc:  # a name too long for the file system
            raise PreflightError(f"--source {args['source'][:200]}: {exc.strerror or type(exc).__name__}; pass the folder of your videos") from None
        if not there:
            raise PreflightError(f"--source {args['source']}: no such file or folder; pass the folder of your videos")
        if not find_sources([args["source"]])[0]:
            raise PreflightError(f"--source {args['source']}: no video files (.mp4, .mov, .mkv, .webm) in it")
        args["source"] = str(Path(args["source"]).resolve())
    shards = args.get("ingest_shards", 1)
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise PreflightError(f"--ingest-shards must be an integer >= 1, got {shards!r}")
    if args.get("dataset_rev"):
        from mavin_ops.data.versioning import resolve_version

        resolve_version(args.get("registry") or None, name=args.get("dataset_name") or "mavinset-mini", rev=args["dataset_rev"])


@dataclass
class ReleaseResult:
    release_id: str
    succeeded: bool
    error: str
    parent_run_id: str
    parent_status: str
    pipeline_dir: str
    steps: list[dict] = field(default_factory=list)  # name, status, run_id, artifact_uri (every attempt's)
    tags: dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0
    attempt: int = 1  # 2 and up: a resumed release
    reused: list[str] = field(default_factory=list)  # steps finished by an earlier attempt, not run again
    interrupted: int = 0  # the signal (SIGINT / SIGTERM) that stopped the release itself, else 0
    #: What the terminal showed per step (name, status, seconds, headline, log file).
    step_lines: list[dict] = field(default_factory=list)
    #: The release's own folder ($MAVIN_HOME/releases/<id>): logs/, release.json, release.html.
    folder: str = ""
    #: The release's report page (release.html), or "" when it could not be built.
    page: str = ""

    def lines(self) -> list[str]:
        """What a person wants to see after a release run (URLs shown without credentials)."""
        from mavin_ops.safety import redact

        uri = redact(settings.tracking_uri())
        out = [
            f"release {self.release_id}: {'SUCCEEDED' if self.succeeded else 'FAILED'} in {self.wall_s:.0f} s"
            + (f" (attempt {self.attempt})" if self.attempt > 1 else "")
            + (f" ({self.error})" if self.error else ""),
            f"  pipeline outputs : {self.pipeline_dir}",
            f"  MLflow           : {uri}  parent run {self.parent_run_id} [{self.parent_status}]",
        ]
        for key, label in (
            ("mavin.dataset_rev", "dataset asked   "),
            ("mavin.dataset_tag", "dataset version "),
            ("mavin.dataset_digest", "dataset digest  "),
            ("mavin.dataset_commit", "registry commit "),
            ("mavin.git_commit", "code commit     "),
            ("mavin.base", "fine-tuned base "),
            ("mavin.verdict", "verdict         "),
            ("mavin.verdict_reason", "reason          "),
            ("mavin.model_version", "model version   "),
            ("mavin.triton_version", "served version  "),
        ):
            if key in self.tags:
                out.append(f"  {label} : {redact(self.tags[key])}")
        if self.folder:
            out.append(f"  step logs        : {Path(self.folder) / 'logs'}")
        if self.page:
            out.append(f"  report page      : {self.page}")
        if self.reused:
            out.append(f"  reused (cached)  : {', '.join(self.reused)}")
        if not self.succeeded:
            out.append(f"  resume it with   : mavin-ops release --resume {self.release_id}")
        out.append(f"  browse the runs  : mlflow ui --backend-store-uri {uri}")
        return out


class _Interrupted(BaseException):
    """SIGINT or SIGTERM reached the release process itself."""


@contextlib.contextmanager
def _stopped_by_signals() -> Iterator[list[int]]:
    """Turn SIGINT and SIGTERM into :class:`_Interrupted` while the pipeline runs (main
    thread only); yields a list that receives the signal number."""
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def handler(signum, _frame):
        if not caught:
            caught.append(signum)
            raise _Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _stop_steps(grace_s: float = 30.0) -> None:
    """Terminate every process this release started (the running step and its children):
    SIGTERM first, so a train step writes its checkpoint, then SIGKILL after ``grace_s``."""
    import psutil

    procs = psutil.Process().children(recursive=True)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)


def _new_release_id() -> str:
    return time.strftime("r%Y%m%d-%H%M%S-", time.gmtime()) + uuid.uuid4().hex[:6]


def _find_parent(c, release_id: str):
    found = c.search_runs(
        [tracking.experiment_id()],
        filter_string=f"tags.`mavin.release_id` = '{release_id}' and tags.`mavin.step` = 'pipeline'",
        max_results=1,
    )
    return found[0] if found else None


def _reopen(c, release_id: str) -> tuple[str, dict, int]:
    """The recorded arguments of a failed or interrupted release, its parent run set RUNNING
    again for one more attempt. Returns (release_id, arguments, attempt)."""
    parent = _find_parent(c, release_id)
    if parent is None:
        raise ResumeError(f"no release {release_id} in {settings.tracking_uri()}")
    recorded = parent.data.tags.get(ARGS_TAG)
    if not recorded:
        raise ResumeError(f"release {release_id} did not record its arguments ({ARGS_TAG}); it cannot be resumed")
    if parent.info.status == "FINISHED":
        raise ResumeError(f"release {release_id} already succeeded; nothing to resume")
    args = _recorded_args(release_id, recorded)
    preflight({**args, "release_id": release_id})  # what a new release is checked for, before anything changes
    run_id = parent.info.run_id
    attempt = int(parent.data.tags.get("mavin.attempt", "1")) + 1
    # FAILED / CANCELLED as the exit handler wrote it; a parent still RUNNING was interrupted
    # (the process that ran it died before the exit handler).
    before = parent.data.tags.get("mavin.final_state") or ("INTERRUPTED" if parent.info.status == "RUNNING" else parent.info.status)
    c.set_tag(run_id, "mavin.attempt", str(attempt))
    c.set_tag(run_id, f"mavin.attempt_{attempt - 1}_state", before)
    for stale in ("mavin.final_state", "mavin.final_message"):
        if stale in parent.data.tags:
            c.delete_tag(run_id, stale)
    c.update_run(run_id, status="RUNNING")
    return release_id, args, attempt


def _recorded_args(release_id: str, recorded: str) -> dict:
    """The arguments a release recorded (``mavin.release_args``), read as untrusted: JSON, a
    mapping, only run_release's own options; else ResumeError, and nothing is changed."""
    import inspect

    from mavin_ops.bounded import InputError, load_json

    def bad(why: str) -> ResumeError:
        return ResumeError(f"release {release_id}: its {ARGS_TAG} tag {why} (edited outside mavin-ops); it cannot be resumed, "
                           "start a new release")

    try:
        args = load_json(recorded[:1_000_000], ARGS_TAG)
    except InputError:
        raise bad("is not JSON") from None
    if not isinstance(args, dict):
        raise bad("is not a mapping of options")
    unknown = sorted(set(args) - set(inspect.signature(run_release).parameters))
    if unknown:
        raise bad(f"names options a release does not have ({', '.join(u[:40] for u in unknown[:3])})")
    return args


def run_release(
    preset: str = "tiny",
    seed: int = 0,
    *,
    release_id: str | None = None,
    registry: str = "",
    remote: str = "",
    endpoint_url: str = "",
    max_quarantine_share: float = 0.05,
    train_steps: int = 0,
    sample_steps: int = 0,
    sample_limit: int = 0,
    model_name: str = "mavin",
    model_store: str = "",
    gate_policy: str = "",
    dataset_rev: str = "",
    source: str = "",
    ingest_shards: int = 1,
    train_procs: int = 1,
    base: str = "",
    cache: bool = True,
    resume: str | None = None,
    echo: Callable[[str], None] | None = None,
    check: bool = True,
    verbose: bool = False,
    terminal: TextIO | None = None,
) -> ReleaseResult:
    """Run the release pipeline locally. Never raises for a failed pipeline: the result says
    what failed, and the MLflow parent run carries the final status.

    ``cache``: let the KFP local runner record (and reuse) finished steps, which is what
    makes a release resumable; keys include the release id, so a new release never reuses
    another's steps. ``resume``: the id of a failed or interrupted release to run again
    with the arguments it was started with (the pipeline arguments given here are ignored):
    its finished steps are reused from the cache, its MLflow parent run is reopened and
    closed with the new final status. Raises :class:`ResumeError` when ``resume`` names no
    resumable release, or ``release_id`` one that already exists, and :class:`PreflightError`
    (or the checker's own one-line error) for arguments :func:`preflight` refuses; ``check``
    False skips that (tests of failures inside the pipeline).

    SIGINT / SIGTERM to this process stops the release itself: the running steps are
    terminated, the MLflow parent run ends KILLED, the result says how to resume, and the
    champion is not touched (``interrupted`` holds the signal number).

    Output (:mod:`mavin_ops.console`): every step's full log goes to
    ``$MAVIN_HOME/releases/<id>/logs/<step>.log``; ``terminal`` (default: standard error when
    ``echo`` is given, else nothing) gets one line per step and a progress bar in long steps,
    or every log line with ``verbose``."""
    home = local_runner_env()
    args = dict(
        preset=preset,
        seed=seed,
        registry=registry,
        remote=remote,
        endpoint_url=endpoint_url,
        max_quarantine_share=max_quarantine_share,
        train_steps=train_steps,
        sample_steps=sample_steps,
        sample_limit=sample_limit,
        model_name=model_name,
        model_store=model_store,
        gate_policy=gate_policy,
        dataset_rev=dataset_rev,
        source=source,
        ingest_shards=ingest_shards,
        train_procs=train_procs,
        base=base,
    )
    if check and not resume:
        checked = {**args, "release_id": release_id or ""}
        preflight(checked)
        args["source"] = checked["source"]  # the steps run elsewhere: an absolute path
        # Before any run exists, so a base that cannot be used changes nothing (the train step
        # resolves it again: on a cluster, that is where it is read). Pinned: a resumed release
        # fine-tunes the same version even if the shipped base or the champion changed since.
        found = _resolve_base(args)
        args["base"] = found.ref if found is not None else args.get("base", "")
    if not resume:
        release_id = release_id or _new_release_id()
    with _one_release_at_a_time(home, resume or release_id):
        return _run(args, home, release_id=release_id, cache=cache, resume=resume, echo=echo, verbose=verbose, terminal=terminal)


@contextlib.contextmanager
def _one_release_at_a_time(home: Path, release_id: str) -> Iterator[None]:
    """Hold the state folder's release lock for the whole run; a second release on the same
    home is refused up front (both would pick the same next Triton version, and the second
    would fail at publish after its whole training). The lock goes with the process."""
    import fcntl

    folder = home / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    fh = open(folder / "release.lock", "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = " ".join(fh.read(200).split()) or "unknown"
            raise PreflightError(
                f"another release is running on the state folder {home} ({holder}); wait for it to end, or give this one "
                "its own MAVIN_HOME: two releases on one home would publish the same Triton version"
            ) from None
        fh.truncate(0)
        fh.write(f"release {release_id or '(new)'}, pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        fh.flush()
        yield
    finally:
        fh.close()


def _run(args: dict, home: Path, *, release_id: str | None, cache: bool, resume: str | None, echo: Callable[[str], None] | None,
         verbose: bool, terminal: TextIO | None) -> ReleaseResult:
    from mavin_ops.pipelines.release import PIPELINE_NAME, release_pipeline

    c = tracking.client()
    if resume:
        from mavin_ops.safety import check_name

        check_name(resume, "release id")
        release_id, args, attempt = _reopen(c, resume)
        cache = True  # the point of a resume: reuse what the earlier attempts finished
    else:
        release_id = release_id or _new_release_id()
        if _find_parent(c, release_id) is not None:
            raise ResumeError(f"release {release_id} already exists; resume it (mavin-ops release --resume {release_id}) or pick a new id")
        attempt = 1
        parent_id = tracking.parent_run(release_id)
        c.set_tag(parent_id, ARGS_TAG, json.dumps(args, sort_keys=True))
        from mlflow.entities import Param

        from mavin_ops.safety import redact

        # The release's options as params, so runs compare by them in the MLflow UI.
        c.log_batch(parent_id, params=[Param(k, redact(str(v))[:500]) for k, v in sorted(args.items())])
        c.set_tag(parent_id, "mavin.attempt", "1")
    root = start_local_runner(home, cache)
    before = {p.name for p in root.iterdir()}
    folder = home / "releases" / release_id
    log_dir = folder / "logs" if attempt == 1 else folder / "logs" / f"attempt-{attempt}"
    if terminal is None:
        terminal = sys.stderr if echo else open(os.devnull, "w")
    console = ReleaseConsole(log_dir, task_names(release_pipeline), terminal=terminal, verbose=verbose)
    model = str(args.get("model_name") or "mavin")
    champion_before = _champion(model)
    start = time.time()
    error = ""
    interrupted = 0
    try:
        with _stopped_by_signals() as caught:
            with console:
                release_pipeline(**{**args, "base": args.get("base") or ""}, release_id=release_id)
    except _Interrupted:
        interrupted = caught[0]
        error = f"interrupted by {signal.Signals(interrupted).name}"
        if echo:
            echo(f"release {release_id}: {error}; stopping the running step (up to 30 s) and closing the MLflow run")
        # A second Ctrl-C must not cut the clean-up short: the steps are stopped and the run closed.
        held = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            _stop_steps()
        finally:
            for sig, old in held.items():
                signal.signal(sig, old)
    except Exception as exc:  # the local runner raises when the pipeline fails: say which step and why, not its wrapper
        from mavin_ops.console import plain
        from mavin_ops.safety import redact

        failed = [s for s in console.steps if s.status not in ("RUNNING", "SUCCESS", "SUCCEEDED") and s.error]
        error = redact(plain(f"{failed[-1].name} failed: {failed[-1].error}" if failed else " ".join(str(exc).split())))[:300]
    wall = time.time() - start
    new_dirs = sorted((p for p in root.iterdir() if p.name not in before and p.name.startswith(PIPELINE_NAME)), key=os.path.getmtime)
    pipeline_dir = str(new_dirs[-1]) if new_dirs else str(root)

    parent_id = tracking.parent_run(release_id)
    if new_dirs:  # the local run of this attempt (its outputs folder under the pipeline root)
        c.set_tag(parent_id, "mavin.kfp_run_id", Path(pipeline_dir).name)
    if interrupted:
        tracking.close_parent_run(release_id, "", "CANCELLED", error)
    elif c.get_run(parent_id).info.status == "RUNNING":
        # The exit handler did not close it: the local runner stopped before it, or served
        # it from the cache (a resumed attempt that ends like an earlier one).
        tracking.close_parent_run(release_id, "", "FAILED" if error else "SUCCEEDED", error)
    parent = c.get_run(parent_id)
    children = c.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'", order_by=["attributes.start_time ASC"]
    )
    steps = [
        {
            "name": r.data.tags.get("mavin.step", r.info.run_name),
            "status": r.info.status,
            "run_id": r.info.run_id,
            "artifact_uri": r.info.artifact_uri,
        }
        for r in children
    ]
    # Steps an earlier attempt finished and this one did not run again (cache hits).
    started_ms = int(start * 1000)
    ran_now = {s["name"] for s, r in zip(steps, children) if r.info.start_time >= started_ms}
    reused = [
        s["name"] for s, r in zip(steps, children) if r.info.start_time < started_ms and s["status"] == "FINISHED" and s["name"] not in ran_now
    ] if attempt > 1 else []
    _headline_metrics(c, parent_id, children)
    lines = [s.to_dict() for s in console.steps]
    _write_release_record(folder, release_id, attempt, start, wall, error, lines, parent_id, pipeline_dir,
                          {"model": model, "champion_before": champion_before, "champion_after": _champion(model),
                           "verdict": parent.data.tags.get("mavin.verdict", ""), "succeeded": not error and parent.info.status == "FINISHED"})
    result = ReleaseResult(
        step_lines=lines,
        folder=str(folder),
        release_id=release_id,
        succeeded=not error and parent.info.status == "FINISHED",
        error=error,
        parent_run_id=parent_id,
        parent_status=parent.info.status,
        pipeline_dir=pipeline_dir,
        steps=steps,
        tags={k: v for k, v in parent.data.tags.items() if k.startswith("mavin.")},
        wall_s=wall,
        attempt=attempt,
        reused=reused,
        interrupted=interrupted,
    )
    try:
        from mavin_ops.release_page import build_release_page

        page = build_release_page(release_id, folder, lines, succeeded=result.succeeded, error=error, wall_s=wall,
                                  attempt=attempt, parent_run_id=parent_id)
        # The page with its logs and assets, so its relative links hold in the artifact store too.
        c.log_artifacts(parent_id, str(folder), "release")
        result.page = str(page)
    except Exception as exc:  # noqa: BLE001 - a page that cannot be drawn must not turn a release into a failure
        if echo:
            echo(f"release {release_id}: the report page could not be built ({exc.__class__.__name__}: {exc})")
    if echo:
        for line in result.lines():
            echo(line)
    return result


def _headline_metrics(c, parent_id: str, children: list) -> None:
    """The benchmark metrics (and the gate's answer) on the parent run too, where a release
    list in the MLflow UI shows them side by side."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = []
    for r in children:
        step = r.data.tags.get("mavin.step")
        if step == "evaluate":
            metrics += [Metric(k, v, now, 0) for k, v in r.data.metrics.items() if k.startswith("eval/") and "/" not in k[5:]]
        elif step == "gate":
            metrics += [Metric(k, v, now, 0) for k, v in r.data.metrics.items()]
        elif step == "validate_data":
            metrics += [Metric(f"data/{k}", v, now, 0) for k, v in r.data.metrics.items()]
    if metrics:
        try:
            c.log_batch(parent_id, metrics=metrics)
        except Exception:  # noqa: BLE001 - a closed or remote run that refuses: the step runs keep them
            pass
    # The datasets the steps used (the versioned training data, the benchmark) as the parent's inputs.
    seen, inputs = set(), []
    for r in children:
        for di in getattr(r.inputs, "dataset_inputs", None) or []:
            ctx = tuple(sorted((t.key, t.value) for t in di.tags))
            key = (di.dataset.name, di.dataset.digest, ctx)
            if key not in seen:
                seen.add(key)
                inputs.append(di)
    if inputs:
        try:
            c.log_inputs(parent_id, datasets=inputs)
        except Exception:  # noqa: BLE001 - as above
            pass


def local_runner_env() -> Path:
    """Prepare this process to run a pipeline with the KFP local runner; returns the home.
    Steps run as subprocesses: they must see the same state folder and tracking store."""
    import warnings

    # Local-runner notes that do not apply here: cluster-only settings are ignored locally,
    # and the component image is this very environment.
    warnings.filterwarnings("ignore", message=".*have no effect in the current local runner")
    warnings.filterwarnings("ignore", message=".*custom or non-Python base image")
    home = settings.home()
    os.environ["MAVIN_HOME"] = str(home)
    os.environ["MLFLOW_TRACKING_URI"] = settings.tracking_uri()
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    return home


def start_local_runner(home: Path, cache: bool = True) -> Path:
    """``kfp.local`` with the subprocess runner, outputs (and the step cache) under
    ``<home>/pipelines``; returns that folder."""
    from kfp import local

    root = home / "pipelines"
    root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), enable_caching=cache)
    return root


def _resolve_base(args: dict):
    """The foundation model the release fine-tunes (``args["base"]``; registered in MLflow as
    ``mavin-base`` on first use), or None for a preset that trains from scratch."""
    from mavin_ops import foundation

    return foundation.resolve(str(args.get("base") or ""), str(args.get("preset") or "tiny"))


def _champion(model: str) -> str | None:
    from mavin_ops import registry

    try:
        return registry.champion_version(model)
    except Exception:  # noqa: BLE001 - no registered model yet, or a store that cannot answer: no champion to show
        return None


def _write_release_record(folder: Path, release_id: str, attempt: int, start: float, wall: float, error: str,
                          steps: list[dict], parent_id: str, pipeline_dir: str, outcome: dict) -> None:
    """``releases/<id>/release.json``: what `mavin-ops releases` and the report page read (one
    entry per attempt; the newest last), written atomically."""
    from mavin_ops.evaluation.results import write_json

    path = folder / "release.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        attempts = [a for a in record.get("attempts", []) if isinstance(a, dict) and a.get("attempt") != attempt]
    except (OSError, ValueError, AttributeError):
        attempts = []
    attempts.append({"attempt": attempt, "started": start, "wall_s": round(wall, 2), "error": error,
                     # logs named relative to the state folder, which can move
                     "steps": [{**st, "log": os.path.relpath(st["log"], settings.home()) if st.get("log") else ""} for st in steps],
                     "pipeline_dir": os.path.relpath(pipeline_dir, settings.home()), **outcome})
    write_json(path, {"release_id": release_id, "parent_run_id": parent_id, "attempts": attempts})


def rebase_cache(root: Path) -> int:
    """Point the KFP local runner's cache (``<root>/.kfp_cache``) at this state folder again
    after it moved: the runner records each output artifact's absolute path, so an output of
    ``<old home>/pipelines/<run>/<step>/x`` that no longer exists there but does under
    ``root`` is rewritten to it (atomically, per file). An entry that does not resolve either
    way is left alone (the runner then runs the step again). Returns the files rewritten."""
    from mavin_ops.data.manifest import atomic_writer

    marker = f"/{root.name}/"

    def rebase(node) -> bool:
        changed = False
        if isinstance(node, dict):
            uri = node.get("uri")
            if node.get("__kfp_artifact__") and isinstance(uri, str) and marker in uri and not os.path.exists(uri):
                moved = root / uri.rsplit(marker, 1)[1]
                if moved.exists() and root in moved.resolve().parents:
                    node["uri"], changed = str(moved), True
            for v in node.values():
                changed |= rebase(v)
        elif isinstance(node, list):
            for v in node:
                changed |= rebase(v)
        return changed

    count = 0
    for f in sorted((root / ".kfp_cache").glob("*.json")):
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # not ours to repair: the runner treats it as it would have
        if rebase(data):
            with atomic_writer(f.parent, f.name) as fh:
                json.dump(data, fh)
            count += 1
    return count


def list_releases(limit: int = 20) -> list[dict]:
    """The newest releases first (``mavin-ops releases``), from ``$MAVIN_HOME/releases/*/release.json``:
    id, start, duration, verdict, champion before and after, the report page. A record that
    cannot be read is listed with its error, not skipped."""
    import datetime as dt

    from mavin_ops.bounded import load_json, read_text
    from mavin_ops.safety import NAME_PATTERN, check_name

    root = settings.home() / "releases"
    out = []
    def version(v: object) -> str | None:  # what a record may say of a champion: a version number
        return str(v) if isinstance(v, (str, int)) and str(v).isascii() and str(v).isdecimal() and len(str(v)) <= 18 else None

    for folder in (root.iterdir() if root.is_dir() else []):
        try:
            check_name(folder.name, "release id")
        except ValueError:
            continue  # not a folder a release wrote
        if folder.is_symlink() or not folder.is_dir():
            continue
        entry: dict = {"release_id": folder.name, "page": ""}
        try:
            record = load_json(read_text(folder / "release.json", "a release record"), "release.json")
            last = record["attempts"][-1]
            started, wall = float(last["started"]), float(last.get("wall_s", 0.0))
            if not (0 <= started < 1e11 and 0 <= wall < 1e9):  # NaN and Infinity fail these too
                raise ValueError(f"started {str(last['started'])[:24]} or wall_s {str(last.get('wall_s'))[:24]} is not a time")
            entry.update({
                "started": dt.datetime.fromtimestamp(started, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
                "_t": started, "duration_s": wall, "attempts": len(record["attempts"]),
                "succeeded": bool(last.get("succeeded")),
                "verdict": next((v for v in VERDICTS if v == last.get("verdict")), "failed" if last.get("error") else ""),
                "model": str(last.get("model") or "") if NAME_PATTERN.match(str(last.get("model") or "-")) else "?",
                "champion_before": version(last.get("champion_before")), "champion_after": version(last.get("champion_after")),
            })
        except (OSError, ValueError, KeyError, IndexError, TypeError, OverflowError) as exc:
            why = str(exc).splitlines()[0][:120] if isinstance(exc, ValueError) else exc.__class__.__name__
            entry.update({"_t": folder.stat().st_mtime, "error": f"release.json unreadable ({why})"})
        if (folder / "release.html").is_file():
            entry["page"] = str(folder / "release.html")
        out.append(entry)
    out.sort(key=lambda e: e["_t"], reverse=True)
    for e in out:
        e.pop("_t")
    return out[:limit]
