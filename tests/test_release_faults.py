"""Release faults, run for real with the KFP local runner on the debug preset (issue 7):

- a step killed with SIGKILL mid-run fails the release: the MLflow parent run ends FAILED, the
  killed step's run is not FINISHED, and the previous champion is still what is served;
- ``run_release(resume=...)`` (``mavin-ops release --resume``) then finishes the same release:
  the steps that finished before the kill come from the local runner's cache (not run again),
  the same MLflow parent run is reopened and ends FINISHED, with the same dataset lineage.

One scenario (one champion release, one killed release, its resume) keeps it to three
pipeline runs."""

from __future__ import annotations

import collections
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # release_support

from release_support import DEBUG_RELEASE, descendants, lenient_policy, served, stray_processes  # noqa: E402

from mavin_ops import lineage, tracking  # noqa: E402
from mavin_ops.cli import main  # noqa: E402
from mavin_ops.release import run_release  # noqa: E402

MODEL = "mavin-faults"
FINISHED_BEFORE_KILL = ["generate_data", "version_data", "validate_data", "train_id"]


class StepKiller(threading.Thread):
    """SIGKILLs the process of one train stage while its nested MLflow run is RUNNING.

    The step is the ``python -m kfp.dsl.executor_main ... train`` process below this one
    whose executor input names the stage. Once it exists it only runs in 50 ms slices
    (SIGCONT ... SIGSTOP) and is checked while stopped, so it cannot finish between the
    check that its MLflow run is RUNNING and the kill."""

    def __init__(self, release_id: str, stage: str, timeout_s: float = 540.0):
        super().__init__(daemon=True)
        self.release_id, self.stage, self.timeout_s = release_id, stage, timeout_s
        self.killed_pid: int | None = None
        self.killed_run_id: str | None = None
        self.left_behind: list[int] = []  # the killed process's own children (there should be none alive)
        self.error = ""
        self.stop = threading.Event()

    def _find(self) -> int | None:
        for pid, cmd in descendants().items():
            if "kfp.dsl.executor_main" in cmd and cmd[-2:] == ["--function_to_execute", "train"]:
                executor_input = cmd[cmd.index("--executor_input") + 1]
                if f'"stage": "{self.stage}"' in executor_input:
                    return pid
        return None

    def _running_run(self) -> str | None:
        c = tracking.client()
        parents = c.search_runs(
            [tracking.experiment_id()], filter_string=f"tags.`mavin.release_id` = '{self.release_id}' and tags.`mavin.step` = 'pipeline'"
        )
        if not parents:
            return None
        runs = c.search_runs(
            [tracking.experiment_id()],
            filter_string=f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}' and tags.`mavin.step` = 'train_{self.stage}' "
            "and attributes.status = 'RUNNING'",
        )
        return runs[0].info.run_id if runs else None

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        pid = None
        while pid is None:
            if self.stop.is_set() or time.monotonic() > deadline:
                self.error = f"no train {self.stage} process appeared"
                return
            time.sleep(0.1)
            pid = self._find()
        while time.monotonic() < deadline:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                self.error = f"train {self.stage} (pid {pid}) ended before its MLflow run was seen RUNNING"
                return
            try:
                run_id = self._running_run()
            except Exception:  # the stopped step may hold the SQLite lock: let it go on, look again
                run_id = None
            if run_id is not None:
                self.left_behind = list(descendants(pid))
                os.kill(pid, signal.SIGKILL)
                self.killed_pid, self.killed_run_id = pid, run_id
                return
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.05)
        os.kill(pid, signal.SIGCONT)
        self.error = f"train {self.stage} never had a RUNNING MLflow run"


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and mtime."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def nested_runs(parent_run_id: str) -> dict[str, list]:
    """The parent's nested runs by step name, oldest first."""
    c = tracking.client()
    runs = c.search_runs(
        [tracking.experiment_id()], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'", order_by=["attributes.start_time ASC"]
    )
    out = collections.defaultdict(list)
    for r in runs:
        out[r.data.tags["mavin.step"]].append(r)
    return out


def test_resume_refuses_unknown_finished_or_changed_releases(isolated_home, capsys):
    assert main(["release", "--resume", "no-such-release"]) == 2
    assert "no release no-such-release" in capsys.readouterr().err
    assert main(["release", "--resume", "r1", "--preset", "debug", "--train-steps", "2"]) == 2
    assert "drop --preset, --train-steps" in capsys.readouterr().err
    assert main(["release", "--resume", "r1", "--no-cache"]) == 2
    assert "--no-cache" in capsys.readouterr().err


@pytest.mark.server
@pytest.mark.timeout(1200)
def test_killed_step_fails_release_keeps_champion_then_resume_reuses_finished_steps(tmp_path, isolated_home):
    common = dict(**DEBUG_RELEASE, model_name=MODEL, gate_policy=lenient_policy(tmp_path))
    c = tracking.client()

    # 1. A champion, published and served.
    first = run_release(**common)
    assert first.succeeded, first.error
    assert first.tags["mavin.verdict"] == "promoted"
    before = served(isolated_home, MODEL)
    assert before == {"champion": "1", "triton_version": "1", "store": ["1"]}, before
    assert not stray_processes(isolated_home)

    # 2. The next release, its "train multishot" step killed with SIGKILL while it runs.
    release_id = "r-faults-kill"
    killer = StepKiller(release_id, "multishot")
    killer.start()
    try:
        killed = run_release(release_id=release_id, **common)
    finally:
        killer.stop.set()
        killer.join(timeout=30)
    assert killer.killed_pid is not None, killer.error
    assert not killed.succeeded and killed.error
    assert "train" in killed.error
    parent = c.get_run(killed.parent_run_id)
    assert parent.info.status == "FAILED" and killed.parent_status == "FAILED"
    assert parent.data.tags["mavin.final_state"] == "FAILED"  # written by the exit handler
    runs = nested_runs(killed.parent_run_id)
    assert [r.info.run_id for r in runs["train_multishot"]] == [killer.killed_run_id]
    assert runs["train_multishot"][0].info.status != "FINISHED"
    for step in FINISHED_BEFORE_KILL:
        assert [r.info.status for r in runs[step]] == ["FINISHED"], step
    assert not {"train_av", "train_joint", "sample_benchmark", "export_model", "publish_model", "register_model"} & set(runs)
    # Nothing changed for serving: same champion, same published Triton version, same store.
    assert served(isolated_home, MODEL) == before
    assert "mavin.verdict" not in killed.tags
    # No step, server or child of the killed step is left running.
    assert not stray_processes(isolated_home), stray_processes(isolated_home)
    assert not [pid for pid in killer.left_behind if Path(f"/proc/{pid}/cmdline").exists() and Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert "mavin-ops release --resume r-faults-kill" in "\n".join(killed.lines())
    killed_end = parent.info.end_time

    # 3. Resume it: the steps finished before the kill are reused, the rest run, same parent run.
    cache_root = isolated_home / "pipelines" / ".kfp_cache"
    assert len(list(cache_root.glob("*.json"))) >= len(FINISHED_BEFORE_KILL)  # the runner recorded them
    train_id_dir = isolated_home / "runs" / release_id / "train" / "id"
    id_files = snapshot(train_id_dir)
    assert id_files
    resumed = run_release(resume=release_id, echo=None)
    assert resumed.succeeded, resumed.error
    assert resumed.release_id == release_id and resumed.attempt == 2
    assert resumed.parent_run_id == killed.parent_run_id
    parent = c.get_run(resumed.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["mavin.final_state"] == "SUCCEEDED"
    assert parent.data.tags["mavin.attempt"] == "2" and parent.data.tags["mavin.attempt_1_state"] == "FAILED"
    assert "mavin.final_message" not in parent.data.tags  # the failed attempt's message is gone
    runs = nested_runs(resumed.parent_run_id)
    for step in FINISHED_BEFORE_KILL:  # not run again: still the one run of the killed attempt
        assert len(runs[step]) == 1 and runs[step][0].info.end_time <= killed_end, step
    assert resumed.reused == FINISHED_BEFORE_KILL
    assert snapshot(train_id_dir) == id_files  # the finished stage's checkpoints were not touched
    old, new = runs["train_multishot"]
    assert old.info.run_id == killer.killed_run_id and old.info.status == "FAILED"
    assert new.info.status == "FINISHED"
    for step in ("train_av", "train_joint", "sample_benchmark", "evaluate", "gate", "export_model", "publish_model", "serving_smoke_test", "register_model"):
        assert [r.info.status for r in runs[step]] == ["FINISHED"], step

    # Same lineage: the dataset version of the killed attempt, the id stage's checkpoint of it.
    digest = killed.tags["mavin.dataset_digest"]
    assert resumed.tags["mavin.dataset_digest"] == digest
    assert new.data.params["dataset_digest"] == digest
    assert new.data.params["parent_checkpoint_sha256"] == runs["train_id"][0].data.tags["mavin.checkpoint_sha256"]
    assert resumed.tags["mavin.verdict"] == "promoted"
    after = served(isolated_home, MODEL)
    assert after == {"champion": "2", "triton_version": "2", "store": ["1", "2"]}, after
    version = c.get_model_version(MODEL, "2")
    assert version.tags["mavin.release_id"] == release_id and version.tags["mavin.dataset_digest"] == digest
    chain = lineage.lineage(f"{MODEL}@champion")
    assert chain[0].title.endswith("version 2") and chain[-2].facts["DVC digest"] == digest
    assert not stray_processes(isolated_home), stray_processes(isolated_home)

    # A release that succeeded has nothing to resume.
    assert main(["release", "--resume", release_id]) == 2
