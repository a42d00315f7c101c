"""The whole release pipeline through the KFP local runner on the debug preset (a few
training steps), on one state folder built once for this module (``released``):

1. ``mavin-ops pretrain`` makes the foundation model the releases fine-tune (mavin-base v1);
2. release A trains every stage on two local processes and passes a lenient gate: export,
   publish, real tritonserver smoke test, register, promote (v1);
3. release B has its ``train multishot`` step SIGKILLed at the trainer's hold point (its
   MLflow run RUNNING): the release fails and the champion stays v1;
4. B is resumed: the steps finished before the kill come from the cache, the rest run, and
   it promotes v2;
5. release C fails an unreachable gate: nothing changes for serving.

Each test below reads one behaviour from that folder, so each failure is reported on its
own; the last one moves the folder and checks everything from the new place."""

from __future__ import annotations

import collections
import io
import json
import os
import re
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mavin_ops import lineage, registry, settings, tracking
from mavin_ops.cli import main
from mavin_ops.release import run_release
from release_support import DEBUG_RELEASE, check_release_page, descendants, lenient_policy, served, stray_processes, use_home

pytestmark = [pytest.mark.server, pytest.mark.timeout(1800)]  # the first test builds the module's releases
MODEL = "mavin-debug"
KILLED = "r-kill"
FINISHED_BEFORE_KILL = ["generate_data", "version_data", "validate_data", "train_id"]
SECRET = "sk-test-secret-0123456789"


@dataclass
class Released:
    """The module's state folder and what was seen while it was built."""

    home: Path
    work: Path
    base: object = None
    a: object = None  # promoted, two processes
    a_terminal: str = ""
    a_said: list = field(default_factory=list)
    b_killed: object = None
    b: object = None  # the resume of b_killed
    c: object = None  # failed gate
    served: dict = field(default_factory=dict)  # after each release: a, b_killed, b, c
    strays: dict = field(default_factory=dict)
    kill: dict = field(default_factory=dict)
    id_files_before_resume: dict = field(default_factory=dict)
    id_files_after_resume: dict = field(default_factory=dict)
    cached_before_resume: int = 0
    killed_end_time: int = 0


class HoldKiller(threading.Thread):
    """SIGKILLs the ``train_<stage>`` step where the trainer holds (training/trainer.py
    ``hold_point``): its MLflow run is RUNNING and nothing is trained yet. The hold file is
    removed after the kill so the resumed attempt does not hold."""

    def __init__(self, folder: Path, stage: str, timeout_s: float = 540.0):
        super().__init__(daemon=True)
        self.hold = folder / f"train_{stage}"
        self.reached = folder / f"train_{stage}.reached"
        self.timeout_s = timeout_s
        self.pid: int | None = None
        self.run_id = ""
        self.left_behind: list[int] = []
        self.error = ""
        folder.mkdir(parents=True, exist_ok=True)
        self.hold.touch()

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while not self.reached.exists():
            if time.monotonic() > deadline:
                self.error = f"the step never reached {self.hold.name}'s hold point"
                self.hold.unlink(missing_ok=True)
                return
            time.sleep(0.05)
        pid, _, run_id = self.reached.read_text().partition(" ")
        self.pid, self.run_id = int(pid), run_id
        self.left_behind = list(descendants(self.pid))
        os.kill(self.pid, signal.SIGKILL)
        self.hold.unlink()


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


@pytest.fixture(scope="module")
def released(tmp_path_factory, empty_mlflow_store) -> Released:
    from mavin_ops.pretrain import run_pretrain

    work = tmp_path_factory.mktemp("release")
    state = Released(home=work / "mavin-home", work=work)
    state.home.mkdir()
    shutil.copyfile(empty_mlflow_store, state.home / "mlflow.db")
    with pytest.MonkeyPatch.context() as mp:
        use_home(mp, state.home)
        mp.setenv("AWS_SECRET_ACCESS_KEY", SECRET)  # must never reach params, tags, outputs or logs
        mp.setenv("MAVIN_HOLD_DIR", str(work / "hold"))
        state.base = run_pretrain("debug", 1000, steps=2, sample_limit=1, sample_steps=1, run_id="pretrain-test", echo=None)
        assert state.base.succeeded, state.base.error
        common = dict(**DEBUG_RELEASE, model_name=MODEL, base="mavin-base@champion", gate_policy=lenient_policy(work))
        terminal = io.StringIO()
        state.a = run_release(terminal=terminal, train_procs=2, **{**common, "echo": state.a_said.append})
        state.a_terminal = terminal.getvalue()
        assert state.a.succeeded, state.a.error
        state.served["a"], state.strays["a"] = served(state.home, MODEL), stray_processes(state.home)

        killer = HoldKiller(work / "hold", "multishot")
        killer.start()
        try:
            state.b_killed = run_release(release_id=KILLED, **common)
        finally:
            killer.join(timeout=60)
            killer.hold.unlink(missing_ok=True)
        assert killer.pid is not None, killer.error
        parent = tracking.client().get_run(state.b_killed.parent_run_id)
        steps = nested_runs(state.b_killed.parent_run_id)
        state.kill = {
            "run_id": killer.run_id,
            "alive_left_behind": [pid for pid in killer.left_behind if Path(f"/proc/{pid}/cmdline").exists() and Path(f"/proc/{pid}/cmdline").read_bytes()],
            "parent": (parent.info.status, parent.data.tags.get("mavin.final_state")),
            "steps": {name: [(r.info.run_id, r.info.status) for r in runs] for name, runs in steps.items()},
        }
        state.served["b_killed"], state.strays["b_killed"] = served(state.home, MODEL), stray_processes(state.home)
        state.killed_end_time = parent.info.end_time
        state.cached_before_resume = len(list((state.home / "pipelines" / ".kfp_cache").glob("*.json")))
        state.id_files_before_resume = snapshot(state.home / "runs" / KILLED / "train" / "id")
        state.b = run_release(resume=KILLED, echo=None)
        state.id_files_after_resume = snapshot(state.home / "runs" / KILLED / "train" / "id")
        state.served["b"], state.strays["b"] = served(state.home, MODEL), stray_processes(state.home)

        strict = work / "strict.yaml"
        strict.write_text("version: 1\nmetrics:\n  sta: {min: 1.5}\n")  # unreachable: STA <= 1
        state.c = run_release(**{**common, "gate_policy": str(strict)})
        state.served["c"], state.strays["c"] = served(state.home, MODEL), stray_processes(state.home)
    return state


@pytest.fixture(autouse=True)
def isolated_home(released, monkeypatch):
    """Every test here reads (and may add to) the module's state folder."""
    return use_home(monkeypatch, released.home)


# --------------------------------------------------------------------------- the base


def test_pretrain_registers_the_base_the_releases_fine_tune(released):
    base = released.base
    assert base.version == "1" and registry.alias_version("mavin-base") == "1" and "eval/sta" in base.metrics
    for result in (released.a, released.b, released.c):
        assert result.tags["mavin.base"] == "mavin-base@1"


# --------------------------------------------------------------------------- release A: promoted


def test_terminal_is_quiet_a_line_per_step(released):
    shown = released.a_terminal.splitlines() + released.a_said
    assert len(shown) <= 40, "\n".join(shown)
    step_lines = [x for x in released.a_terminal.splitlines() if x.startswith("  ")]
    names = [x.split()[0] for x in step_lines]
    assert names[:3] == ["generate_data", "version_data", "validate_data"] and "train_multishot" in names, names
    assert not any("-2" in n or "Executing" in x for n, x in zip(names, step_lines)), step_lines
    train = next(x for x in step_lines if x.split()[0] == "train_joint")
    assert train.split()[1] == "ok" and "final loss" in train
    gate_line = next(x for x in step_lines if x.split()[0] == "evaluate")
    assert "STA " in gate_line and "VC " in gate_line
    assert "mlflow ui --backend-store-uri" in "\n".join(released.a.lines())


def test_report_page_works_offline_and_names_real_runs(released):
    first = released.a
    logs = Path(first.folder) / "logs"
    assert (logs / "train_multishot.log").is_file() and "final_loss" in (logs / "train_multishot.log").read_text()
    page = Path(first.page)
    assert page == Path(first.folder) / "release.html" and f"  report page      : {page}" in released.a_said
    found = check_release_page(page)
    assert first.parent_run_id in found["runs"] and len(set(found["runs"])) >= 10
    assert any(x.endswith("loss.png") for x in found["srcs"]) and any(x.endswith("summary.png") for x in found["srcs"])
    assert any(x.endswith("train_multishot.log") for x in found["hrefs"]) and any(x.endswith("gate.html") for x in found["hrefs"])
    (docs,) = {x for x in found["hrefs"] if x.endswith("data_docs/index.html")}  # the Data Docs it links work offline too
    assert not re.search(r"""<(?:link|script|img)\b[^>]*\b(?:href|src)=["']https?://""", (page.parent / docs).read_text())
    html_text = page.read_text()
    for words in ("train_multishot", "gate pass", "serving_smoke_test", "validation.json"):
        assert words in html_text, words
    artifacts = tracking.client().list_artifacts(first.parent_run_id, "release")
    assert "release/release.html" in [a.path for a in artifacts]
    record = json.loads((Path(first.folder) / "release.json").read_text())
    assert [s["name"] for s in record["attempts"][0]["steps"]][:2] == ["generate_data", "version_data"]


def test_promoted_release_runs_every_step_and_mlflow_tells_the_story(released, tmp_path):
    first = released.a
    steps = [s["name"] for s in first.steps]
    assert steps[:3] == ["generate_data", "version_data", "validate_data"]
    assert steps[-4:] == ["export_model", "publish_model", "serving_smoke_test", "register_model"], steps
    assert first.tags["mavin.verdict"] == "promoted"
    c = tracking.client()
    runs = {s["name"]: c.get_run(s["run_id"]) for s in first.steps}
    assert all(r.info.status == "FINISHED" for r in runs.values())
    assert c.get_run(first.parent_run_id).info.status == "FINISHED"
    digest = first.tags["mavin.dataset_digest"]
    assert digest.endswith(".dir") and first.tags["mavin.dataset_tag"] == "mavinset-mini-v1"
    inputs = runs["version_data"].inputs.dataset_inputs
    assert inputs and inputs[0].dataset.digest == digest[:36] and inputs[0].dataset.name == "mavinset-mini"
    local = Path(c.download_artifacts(runs["validate_data"].info.run_id, "validation", str(tmp_path / "dl")))
    summary = json.loads((local / "validation.json").read_text())
    assert summary["rows"] == 6 and summary["quarantined"] == 0 and summary["passed"] is True
    # A classic ML experiment; the parent run has the release's options as params, the
    # headline metrics and MLflow's own source commit tag.
    parent = c.get_run(first.parent_run_id)
    assert c.get_experiment(parent.info.experiment_id).tags.get("mlflow.experimentKind") == "custom_model_development"
    assert parent.data.params["preset"] == "debug" and parent.data.params["train_steps"] == "2"
    assert "eval/sta" in parent.data.metrics and "gate/passed" in parent.data.metrics and "data/rows" in parent.data.metrics
    assert parent.data.tags["mlflow.source.git.commit"] == parent.data.tags["mavin.git_commit"]
    assert digest[:36] in {d.dataset.digest for d in parent.inputs.dataset_inputs}  # the training data as the parent's input
    mv = c.get_model_version(MODEL, "1")  # linked to the run it came from, with the gate's numbers
    assert mv.run_id == runs["train_joint"].info.run_id and "sta " in mv.tags["mavin.gate_summary"]
    assert runs["train_id"].data.params["parent_checkpoint"] == first.tags["mavin.base_checkpoint"]
    assert released.served["a"] == {"champion": "1", "triton_version": "1", "store": ["1"]}
    assert not released.strays["a"], released.strays["a"]


def test_credentials_never_reach_mlflow_outputs_or_logs(released):
    c = tracking.client()
    for result in (released.a, released.b, released.c):
        for run in [c.get_run(result.parent_run_id), *(c.get_run(s["run_id"]) for s in result.steps)]:
            assert SECRET not in repr(run.data.params) and SECRET not in repr(run.data.tags)
    for result in (released.a, released.c):
        for path in Path(result.pipeline_dir).rglob("*"):
            if path.is_file() and path.stat().st_size < 5_000_000:
                assert SECRET.encode() not in path.read_bytes(), path
    # ... nor the step logs the local runner prints (every step's stdout and stderr), which go to files.
    text = "".join(p.read_text() for p in (Path(released.a.folder) / "logs").rglob("*.log"))
    assert "executor_main" in text or "generate" in text  # the logs were captured
    assert SECRET not in text and SECRET not in released.a_terminal


def test_two_processes_train_what_one_process_with_the_same_global_batch_trains(released):
    """Both ranks trained every stage, held identical parameters at every checkpoint, and the
    final checkpoint equals (within float tolerance) the same four stages in one process
    accumulating two micro-batches per step (same global batch, seed, clips and noise)."""
    from mavin_ops.training import checkpoint as ckpt
    from mavin_ops.training.launch import StageLaunch, launch
    from mavin_ops.training.recipes import STAGES

    result, home = released.a, released.home
    logs = Path(result.folder) / "logs"
    for stage in STAGES:
        text = (logs / f"train_{stage}.log").read_text()
        assert "[rank 0]" in text and "[rank 1]" in text, f"train_{stage}: not both ranks"
        steps = ckpt.checkpoint_dirs(home / "runs" / result.release_id / "train" / stage)
        assert steps, stage
        for _, path in steps:  # every checkpoint kept: sharded, both ranks' parameters hashed equal
            meta = ckpt.load_json(path, "meta.json")
            assert meta["world_size"] == 2 and meta["optimizer_form"] == "sharded"
            assert len(meta["rank_param_sha256"]) == 2 and len(set(meta["rank_param_sha256"])) == 1
    final = ckpt.find_resumable(home / "runs" / result.release_id / "train" / "joint", log=None)
    validated = next(Path(result.pipeline_dir).rglob("validated/manifest.jsonl")).parent  # what the release trained on
    previous = settings.local_path(result.tags["mavin.base_checkpoint"])  # the id stage fine-tunes the same base
    for stage in STAGES:
        one = launch(StageLaunch(stage, "debug", dataset=str(validated), out_dir=str(released.work / "one-process" / stage),
                                 steps=DEBUG_RELEASE["train_steps"], accum=2, init_checkpoint=previous, track=False))
        previous = one.checkpoint
    a, b = ckpt.load_tensors(previous, "model.safetensors"), ckpt.load_tensors(final, "model.safetensors")
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max() / (a[k].abs().max() + 1e-12)) for k in a if a[k].is_floating_point())
    assert worst < 1e-4, f"largest relative parameter difference against one process: {worst:.2e}"


# --------------------------------------------------------------------------- release B: killed, then resumed


def test_killed_step_fails_the_release_and_keeps_the_champion(released):
    killed, seen = released.b_killed, released.kill
    assert not killed.succeeded and killed.error and "train" in killed.error
    assert "\x1b[" not in killed.error  # the cause in words, not KFP's coloured wrapper
    # As it was when the killed attempt ended (the exit handler wrote the final state):
    assert seen["parent"] == ("FAILED", "FAILED") and killed.parent_status == "FAILED"
    (killed_run,) = seen["steps"]["train_multishot"]
    assert killed_run[0] == seen["run_id"] and killed_run[1] != "FINISHED"
    for step in FINISHED_BEFORE_KILL:
        assert [status for _, status in seen["steps"][step]] == ["FINISHED"], step
    assert not {"train_av", "train_joint", "sample_benchmark", "export_model", "publish_model", "register_model"} & set(seen["steps"])
    assert "mavin.verdict" not in killed.tags
    # Nothing changed for serving: same champion, same published Triton version, same store.
    assert released.served["b_killed"] == released.served["a"]
    # No step, server or child of the killed step is left running.
    assert not released.strays["b_killed"], released.strays["b_killed"]
    assert not seen["alive_left_behind"], seen["alive_left_behind"]
    assert f"mavin-ops release --resume {KILLED}" in "\n".join(killed.lines())


def test_resume_reuses_the_finished_steps_and_promotes(released):
    killed, resumed, c = released.b_killed, released.b, tracking.client()
    assert released.cached_before_resume >= len(FINISHED_BEFORE_KILL)  # the runner recorded them
    assert resumed.succeeded, resumed.error
    assert resumed.release_id == KILLED and resumed.attempt == 2 and resumed.parent_run_id == killed.parent_run_id
    parent = c.get_run(resumed.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["mavin.final_state"] == "SUCCEEDED"
    assert parent.data.tags["mavin.attempt"] == "2" and parent.data.tags["mavin.attempt_1_state"] == "FAILED"
    assert "mavin.final_message" not in parent.data.tags  # the failed attempt's message is gone
    runs = nested_runs(resumed.parent_run_id)
    for step in FINISHED_BEFORE_KILL:  # not run again: still the one run of the killed attempt
        assert len(runs[step]) == 1 and runs[step][0].info.end_time <= released.killed_end_time, step
    assert resumed.reused == FINISHED_BEFORE_KILL
    assert released.id_files_after_resume == released.id_files_before_resume != {}  # the finished stage's checkpoints untouched
    old, new = runs["train_multishot"]
    assert old.info.run_id == released.kill["run_id"] and new.info.status == "FINISHED"
    for step in ("train_av", "train_joint", "sample_benchmark", "evaluate", "gate", "export_model", "publish_model", "serving_smoke_test", "register_model"):
        assert [r.info.status for r in runs[step]] == ["FINISHED"], step
    # Same lineage: the dataset version of the killed attempt, the id stage's checkpoint of it.
    digest = killed.tags["mavin.dataset_digest"]
    assert resumed.tags["mavin.dataset_digest"] == digest and new.data.params["dataset_digest"] == digest
    assert new.data.params["parent_checkpoint_sha256"] == runs["train_id"][0].data.tags["mavin.checkpoint_sha256"]
    assert resumed.tags["mavin.verdict"] == "promoted"
    assert released.served["b"] == {"champion": "2", "triton_version": "2", "store": ["1", "2"]}
    version = c.get_model_version(MODEL, "2")
    assert version.tags["mavin.release_id"] == KILLED and version.tags["mavin.dataset_digest"] == digest
    assert not released.strays["b"], released.strays["b"]


def test_resume_refuses_unknown_finished_or_changed_releases(released, capsys):
    assert main(["release", "--resume", "no-such-release"]) == 2
    assert "no release no-such-release" in capsys.readouterr().err
    assert main(["release", "--resume", KILLED, "--preset", "debug", "--train-steps", "2"]) == 2
    assert "drop --preset, --train-steps" in capsys.readouterr().err
    assert main(["release", "--resume", KILLED, "--no-cache"]) == 2
    assert "--no-cache" in capsys.readouterr().err
    assert main(["release", "--resume", KILLED]) == 2  # it succeeded: nothing to resume


# --------------------------------------------------------------------------- release C: failed gate


def test_failed_gate_is_a_successful_run_that_changes_nothing(released):
    second = released.c
    assert second.succeeded, second.error  # a failed gate is a successful run ...
    assert second.tags["mavin.verdict"] == "not promoted"  # ... that promotes nothing
    assert "sta" in second.tags["mavin.verdict_reason"]
    assert "export_model" not in [s["name"] for s in second.steps]
    assert released.served["c"] == released.served["b"]
    assert [r.to_version for r in registry.history(MODEL)] == ["1", "2"]
    assert not released.strays["c"], released.strays["c"]


def test_releases_lists_newest_first_with_verdicts_and_champions(released, capsys):
    a, b, c = released.a, released.b, released.c
    assert main(["releases", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["release_id"] for r in listed] == [c.release_id, b.release_id, a.release_id]
    assert (listed[0]["verdict"], listed[0]["champion_before"], listed[0]["champion_after"]) == ("not promoted", "2", "2")
    assert (listed[1]["verdict"], listed[1]["champion_before"], listed[1]["champion_after"]) == ("promoted", "1", "2")
    assert (listed[2]["verdict"], listed[2]["champion_before"], listed[2]["champion_after"]) == ("promoted", None, "1")
    assert listed[0]["page"] == c.page and Path(listed[2]["page"]).is_file()
    assert main(["releases"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].startswith(c.release_id) and "none -> v1" in table[3]


# --------------------------------------------------------------------------- reading it back


def test_lineage_walks_from_the_served_version_to_the_base_world(released):
    chain = lineage.lineage(f"{MODEL}@champion")
    assert [link.kind for link in chain][:3] == ["served", "model", "release"]
    assert chain[0].title.endswith("version 2") and not chain[0].missing
    assert sum(link.kind == "train" for link in chain) == 4
    assert next(x for x in chain if x.kind == "dataset").facts["DVC digest"] == released.b.tags["mavin.dataset_digest"]
    # ... and on through the base the id stage fine-tuned, to the foundation world it learnt.
    walked = [x.title for x in chain if x.kind == "base"]
    assert walked[0].startswith("base mavin-base v1") and any(t.startswith("base train_base") for t in walked), walked
    assert any(t.startswith("base dataset mavinset-base-v1") for t in walked) and any("base validation" in t for t in walked), walked
    first = lineage.lineage(f"{MODEL}@1")
    assert first[0].title.endswith("version 1") and first[2].title.startswith(f"release {released.a.release_id}")


@pytest.mark.parametrize("ref", [f"{MODEL}@champion", f"{MODEL}@1", "mavin-base@champion"])
def test_reading_the_store_directly_sees_what_mlflow_sees(released, ref):
    """The read commands read MLflow's SQLite file without importing MLflow
    (mavin_ops/reader.py); on this real store they agree with MLflow's client."""
    from mavin_ops.reader import MlflowReader, SqliteReader

    fast, slow = SqliteReader(released.home / "mlflow.db"), MlflowReader(settings.tracking_uri())
    assert lineage.lineage(ref) == lineage.lineage(ref, mlflow=True)
    name, alias = ref.split("@")
    v = fast.model_version_by_alias(name, alias) if not alias.isdigit() else fast.model_version(name, alias)
    assert v == (slow.model_version_by_alias(name, alias) if not alias.isdigit() else slow.model_version(name, alias))
    assert fast.model_tags(name) == slow.model_tags(name) and fast.run(v.run_id) == slow.run(v.run_id)
    for tags in ({"mavin.step": "pipeline"}, {"mavin.release_id": KILLED}, {"mavin.release_id": KILLED, "mavin.step": "train_multishot"}):
        assert fast.find_runs(tags) == slow.find_runs(tags) != []
    assert fast.find_runs({"mavin.step": "train_multishot"}, status="FAILED") == slow.find_runs({"mavin.step": "train_multishot"}, status="FAILED") != []
    assert registry.history(MODEL) == registry.history(MODEL, mlflow=True) and registry.verify(MODEL) == registry.verify(MODEL, mlflow=True) == []


@pytest.mark.parametrize("argv", [["history", MODEL], ["verify", MODEL], ["lineage", f"{MODEL}@champion"], ["releases"], ["gate", "{metrics}", "--out", "{out}", "--model", MODEL, "--json"]])
def test_read_commands_do_not_import_mlflow_on_the_local_store(released, tmp_path, argv):
    """What keeps them well under a second (BENCHMARKS.md, "Everyday read commands"):
    importing MLflow and opening its store alone takes seconds."""
    import subprocess
    import sys

    metrics = next(Path(released.c.folder).rglob("evaluation/metrics.json"))
    argv = [a.replace("{metrics}", str(metrics)).replace("{out}", str(tmp_path / "gate")) for a in argv]
    code = "import sys; from mavin_ops.cli import main; rc = main(sys.argv[1:]); print('MLFLOW', 'mlflow' in sys.modules); sys.exit(rc)"
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode in (0, 1), done.stderr[-2000:]  # the gate exits 1 on a failing verdict
    assert done.stdout.rstrip().endswith("MLFLOW False"), done.stdout[-500:]


def test_served_champion_answers_the_generate_client(released, tmp_path):
    """What `make release` ends with: the served champion answers the generate client."""
    assert main(["smoke", "--name", MODEL, "--steps", "2", "--out", str(tmp_path / "served")]) == 0
    assert (tmp_path / "served" / "smoke.mp4").stat().st_size > 0


def test_zz_the_state_folder_moves(released, tmp_path, monkeypatch, capsys):
    """Last (it moves the folder): from the new place (the old one is gone) lineage, verify,
    the release list, the report pages and serving all work, and nothing stored in MLflow or
    the data registry's DVC config names the old place."""
    from test_state_folder import move_home, stored_mentions

    old = str(released.home)
    new = move_home(released.home, tmp_path / "moved" / "home", monkeypatch)
    released.home = new  # for any test that runs after this one
    assert stored_mentions(new / "mlflow.db", old) == []
    assert old not in (new / "data-registry" / ".dvc" / "config").read_text()
    chain = lineage.lineage(f"{MODEL}@champion")
    assert not chain[0].missing and sum(link.kind == "train" for link in chain) == 4
    assert main(["verify", MODEL]) == 0
    capsys.readouterr()
    assert main(["releases", "--json"]) == 0
    moved = json.loads(capsys.readouterr().out)
    assert [r["release_id"] for r in moved] == [released.c.release_id, released.b.release_id, released.a.release_id]
    assert all(Path(r["page"]).is_file() and r["page"].startswith(str(new)) for r in moved)
    assert check_release_page(Path(moved[2]["page"]))["runs"]
    assert "release/release.html" in [a.path for a in tracking.client().list_artifacts(released.a.parent_run_id, "release")]
    assert main(["smoke", "--name", MODEL, "--steps", "2", "--out", str(tmp_path / "served-moved")]) == 0
