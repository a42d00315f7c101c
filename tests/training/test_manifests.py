"""Rendered Kubeflow jobs: replicas, processes per node, GPUs, the command, secrets."""

from __future__ import annotations

import pytest
import yaml

from mavin_ops.training import manifests
from mavin_ops.training.__main__ import _parser
from mavin_ops.training.k8s import TrainJobError, validate_trainjob
from mavin_ops.training.recipes import RecipeError

SENSITIVE = ("KEY", "SECRET", "PASSWORD", "TOKEN", "TRACKING_URI", "USERNAME")


def _check_env(env):
    names = {e["name"] for e in env}
    assert {"MLFLOW_TRACKING_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= names
    for e in env:
        if any(s in e["name"] for s in SENSITIVE):
            assert "value" not in e and set(e["valueFrom"]) == {"secretKeyRef"}, e
            assert e["valueFrom"]["secretKeyRef"]["name"] and e["valueFrom"]["secretKeyRef"]["key"]


def _check_command(cmd, stage, nodes, gpus, init):
    assert cmd[:3] == ["torchrun", f"--nnodes={nodes}", f"--nproc-per-node={gpus}"]
    assert cmd[3:5] == ["-m", "mavin_ops.training"]
    args = _parser().parse_args(cmd[5:])  # the trainer's own CLI accepts it
    assert (args.cmd, args.stage, args.preset) == ("train", stage, "paper")
    assert args.out == f"/mnt/mavin/checkpoints/{stage}" and args.init == init


def test_trainjob_for_4_nodes_x_8_gpus():
    job = manifests.render_trainjob("joint", "paper", manifests.ClusterSpec(nodes=4, gpus_per_node=8), release_id="Rel_42", dataset_digest="ab12.dir")
    assert job["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and job["kind"] == "TrainJob"
    assert job["metadata"]["name"] == "mavin-train-joint-paper-rel-42"
    t = job["spec"]["trainer"]
    assert job["spec"]["runtimeRef"]["name"] == "torch-distributed"
    assert t["numNodes"] == 4 and t["numProcPerNode"] == 8
    assert t["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "8"
    _check_command(t["command"], "joint", 4, 8, "/mnt/mavin/checkpoints/av")
    assert t["command"][-4:] == ["--release-id", "Rel_42", "--dataset-digest", "ab12.dir"]
    _check_env(t["env"])
    [patch] = job["spec"]["runtimePatches"]
    [node] = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    pod = node["template"]["spec"]["template"]["spec"]
    assert node["name"] == "node" and pod["containers"][0]["name"] == "node"
    assert {v["name"] for v in pod["volumes"]} == {"mavin-home", "dshm"}
    assert yaml.safe_load(manifests.to_yaml(job)) == job
    validate_trainjob(job)  # the Trainer's published API models accept every field, with its type


def test_pytorchjob_master_and_workers():
    spec = manifests.ClusterSpec(nodes=3, gpus_per_node=8, image="registry.local/mavin-ops:1")
    job = manifests.render_pytorchjob("id", "paper", spec)
    assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "PyTorchJob"
    assert job["spec"]["nprocPerNode"] == "8"
    reps = job["spec"]["pytorchReplicaSpecs"]
    assert reps["Master"]["replicas"] == 1 and reps["Worker"]["replicas"] == 2
    for rep in reps.values():
        [c] = rep["template"]["spec"]["containers"]
        assert c["name"] == "pytorch" and c["image"] == "registry.local/mavin-ops:1"
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "8"
        _check_command(c["command"], "id", 3, 8, None)  # the first stage has no parent checkpoint
        _check_env(c["env"])
        assert {m["mountPath"] for m in c["volumeMounts"]} == {"/mnt/mavin", "/dev/shm"}
    single = manifests.render_pytorchjob("av", "paper", manifests.ClusterSpec(nodes=1, gpus_per_node=2))
    assert set(single["spec"]["pytorchReplicaSpecs"]) == {"Master"}


def test_render_job_cli_prints_yaml(capsys):
    from mavin_ops.training.__main__ import main

    assert main(["render-job", "--stage", "multishot", "--nodes", "2", "--gpus", "4", "--kind", "pytorchjob"]) == 0
    job = yaml.safe_load(capsys.readouterr().out)
    assert job["kind"] == "PyTorchJob" and job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1


def test_bad_requests_fail_at_render_time():
    with pytest.raises(RecipeError, match="unknown stage 'warmup'"):
        manifests.render_trainjob("warmup")
    with pytest.raises(ValueError, match="nodes >= 1 and gpus_per_node >= 1"):
        manifests.ClusterSpec(nodes=0)


def test_the_schema_check_refuses_unknown_fields_and_wrong_types():
    job = manifests.render_trainjob("id", "paper", manifests.ClusterSpec(nodes=1, gpus_per_node=2))
    old_style = {**job, "spec": {**job["spec"], "podTemplateOverrides": [{"targetJobs": [{"name": "node"}]}]}}
    with pytest.raises(TrainJobError, match=r"spec.podTemplateOverrides: not in the Trainer API"):
        validate_trainjob(old_style)  # what the renderer wrote before: the v2.3 schema has no such field
    wrong = {**job, "spec": {**job["spec"], "trainer": {**job["spec"]["trainer"], "numNodes": "one"}}}
    with pytest.raises(TrainJobError, match=r"numNodes"):
        validate_trainjob(wrong)
