"""The ``trainjob`` launch backend against a local stand-in of the Kubernetes API server and
the Trainer controller (tests/k8s_standin.py: a real cluster cannot run here). The stand-in
checks every TrainJob against the Trainer's published models and, where it runs jobs, runs
the trainer container's command on this machine as node 0's pod."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mavin_ops.training import checkpoint as ckpt
from mavin_ops.training.manifests import ClusterSpec, job_name, render_trainjob
from mavin_ops.training.k8s import TrainJobError, api_clients, run_trainjob
from mavin_ops.training.launch import StageLaunch, launch
from mavin_ops.training.trainer import TrainError


from k8s_standin import StandIn, kubeconfig

VENV_BIN = Path(sys.executable).parent
NS = "mavin"


@pytest.fixture
def cluster_api(tmp_path, monkeypatch):
    """Start a stand-in (jobs run) and point the Kubernetes client at it; always stopped."""
    made = []

    def start(run: bool = True) -> StandIn:
        work = tmp_path / "cluster"
        work.mkdir(exist_ok=True)
        # the job's MLflow secret names this test's store, as on a cluster the job and the step share one server
        s = StandIn(run=run, workdir=work, secrets={("mavin-mlflow", "tracking-uri"): __import__("os").environ["MLFLOW_TRACKING_URI"]})
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kubeconfig", s.start())))
        monkeypatch.setenv("PATH", f"{VENV_BIN}:{__import__('os').environ.get('PATH', '')}")  # torchrun, as in the image
        made.append(s)
        return s

    yield start
    for s in made:
        s.stop()


def local_cluster(home: Path) -> ClusterSpec:
    """One node, one process; the shared volume is this machine's MAVIN_HOME at the same path."""
    return ClusterSpec(nodes=1, gpus_per_node=1, home_mount=str(home), namespace=NS)


def test_a_trainjob_trains_the_stage_and_the_result_is_read_from_the_shared_volume(debug_dataset, isolated_home, cluster_api, capsys):
    standin = cluster_api(run=True)
    out = isolated_home / "runs" / "r1" / "train" / "id"
    spec = StageLaunch("id", "debug", dataset=str(debug_dataset), out_dir=str(out), steps=2, kind="trainjob", release_id="r1")
    result = launch(spec, cluster=local_cluster(isolated_home), timeout_s=600)
    assert result.stage == "id" and result.step == 2 and Path(result.checkpoint).parent == out
    assert ckpt.find_resumable(out).path == Path(result.checkpoint) and len(result.losses) == 2
    name = job_name("id", "debug", "r1")
    assert standin.creates == [name] and standin.deletes == []
    printed = capsys.readouterr().out
    assert f"TrainJob {NS}/{name} submitted" in printed and f"TrainJob {NS}/{name} completed" in printed
    assert "[rank 0] " in printed and "[train id] done" in printed  # rank 0's pod log reached the step's output
    from mavin_ops import tracking  # ... and the stage's MLflow run, which the trainer in the job made

    run = tracking.client().get_run(result.run_id)
    assert run.data.tags["mavin.trainjob"] == f"{NS}/{name}" and run.info.status == "FINISHED"
    got = Path(tracking.client().download_artifacts(result.run_id, "trainjob/rank0.log", str(isolated_home.parent / "dl")))
    assert "[rank 0] " in got.read_text() and "completed" in got.read_text()


def test_a_failed_trainjob_fails_the_step_with_rank_zeros_error(debug_dataset, isolated_home, cluster_api):
    cluster_api(run=True)
    out = isolated_home / "runs" / "r2" / "train" / "multishot"  # no id checkpoint beside it: the trainer refuses
    spec = StageLaunch("multishot", "debug", dataset=str(debug_dataset), out_dir=str(out), steps=1, kind="trainjob", release_id="r2")
    with pytest.raises(TrainError) as err:
        launch(spec, cluster=local_cluster(isolated_home), timeout_s=300)
    message = str(err.value)
    assert message.startswith(f"stage multishot on the cluster: TrainJob {NS}/{job_name('multishot', 'debug', 'r2')} failed: ")
    assert "rank 0: error: init checkpoint " in message and "train stage 'id' first" in message and "\n" not in message


def test_a_retried_step_reattaches_to_a_running_trainjob_and_recreates_a_failed_one(isolated_home, cluster_api):
    standin = cluster_api(run=False)
    body = render_trainjob("av", "debug", local_cluster(isolated_home), out_root=str(isolated_home / "ck"), release_id="r3")
    name = body["metadata"]["name"]
    apis = api_clients()
    apis[0].create_namespaced_custom_object("trainer.kubeflow.org", "v1alpha1", NS, "trainjobs", body)  # the first attempt's
    said: list[str] = []
    done: dict = {}
    t = threading.Thread(target=lambda: done.update(obj=run_trainjob(body, apis=apis, poll_s=0.05, say=said.append)))
    t.start()
    time.sleep(0.5)
    standin.write_log(NS, name, "step 1 loss 1.0\nstep 2 loss 0.9\n")
    standin.set_condition(NS, name, "Complete", "JobsCompleted", "jobs completed")
    t.join(30)
    assert not t.is_alive() and done["obj"]["metadata"]["name"] == name
    assert standin.creates == [name]  # re-attached: nothing submitted twice
    assert said[0] == f"TrainJob {NS}/{name} is running; re-attached" and "[rank 0] step 2 loss 0.9" in said

    standin.set_condition(NS, name, "Failed", "BackoffLimitExceeded", "node-0 exited with code 1")
    t = threading.Thread(target=lambda: done.update(obj=run_trainjob(body, apis=apis, poll_s=0.05, say=said.append)))
    t.start()
    deadline = time.monotonic() + 30
    while standin.creates.count(name) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    standin.set_condition(NS, name, "Complete", "JobsCompleted", "jobs completed")
    t.join(30)
    assert not t.is_alive() and standin.deletes == [name] and standin.creates == [name, name]  # deleted, submitted again


def test_the_api_refuses_what_the_trainer_schema_does_not_know(isolated_home, cluster_api):
    cluster_api(run=False)
    body = render_trainjob("id", "debug", local_cluster(isolated_home))
    body["spec"]["podTemplateOverrides"] = [{"targetJobs": [{"name": "node"}]}]
    with pytest.raises(TrainJobError, match="podTemplateOverrides: not in the Trainer API"):
        run_trainjob(body, poll_s=0.05)  # checked before anything is sent


CANCEL_SCRIPT = """
import sys
from mavin_ops.training.manifests import ClusterSpec, render_trainjob
from mavin_ops.training.k8s import run_trainjob
body = render_trainjob("id", "debug", ClusterSpec(nodes=1, gpus_per_node=1, home_mount=sys.argv[1], namespace="mavin"), release_id="r4")
try:
    run_trainjob(body, poll_s=0.1)
except KeyboardInterrupt:
    sys.exit(143)
"""


def test_a_cancelled_step_deletes_its_trainjob(isolated_home, cluster_api, tmp_path):
    standin = cluster_api(run=False)
    name = job_name("id", "debug", "r4")
    proc = subprocess.Popen([sys.executable, "-c", CANCEL_SCRIPT, str(isolated_home)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while name not in standin.creates and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert name in standin.creates, proc.stdout.read() if proc.poll() is not None else "never submitted"
        proc.terminate()  # what KFP does to the step's pod when the run is cancelled
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, out
    assert standin.deletes == [name] and f"TrainJob {NS}/{name} deleted: the step was stopped" in out
