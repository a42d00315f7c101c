"""The cluster path: profile -> IR YAML (committed, kept in sync), kfp-kubernetes settings,
no secret in the YAML, and the exact submit / schedule requests."""

from __future__ import annotations

import json

import pytest
import yaml

from mavin_ops.cli import main
from mavin_ops.pipelines import cluster
from mavin_ops.pipelines.cluster import COMPILED, DEFAULT_PROFILE, ClusterProfile, ProfileError


def test_committed_ir_yaml_is_up_to_date(tmp_path):
    fresh = cluster.compile_pipeline(ClusterProfile.load(DEFAULT_PROFILE), tmp_path / "release.yaml")
    assert COMPILED.exists(), "run `mavin-ops compile` and commit pipelines/release.yaml"
    assert fresh.read_text() == COMPILED.read_text(), "pipelines/release.yaml is stale: run `mavin-ops compile`"


def test_profile_settings_land_in_the_platform_spec(tmp_path):
    profile = ClusterProfile.load(DEFAULT_PROFILE)
    profile.gpu = {**profile.gpu, "steps": ["validate_data"]}
    path = cluster.compile_pipeline(profile, tmp_path / "p.yaml")
    pipeline_spec, platform = list(yaml.safe_load_all(path.read_text()))
    executors = pipeline_spec["deploymentSpec"]["executors"]
    # Every container step runs the profile's image; the importer (the dataset either data
    # branch produced, see pipelines/release.py) is run by the KFP driver, not in a container.
    assert {e["container"]["image"] for e in executors.values() if "importer" not in e} == {profile.image}
    assert [name for name, e in executors.items() if "importer" in e] == ["exec-importer"]
    validate = next(e for name, e in executors.items() if "validate-data" in name)["container"]
    assert validate["resources"]["accelerator"]["resourceCount"] == str(profile.gpu["count"])
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    validate_k8s = next(e for name, e in k8s.items() if "validate-data" in name)
    assert {"key": "mavin-ops/pool", "value": "gpu"} in [
        {"key": k, "value": v} for k, v in validate_k8s["nodeSelector"]["labels"].items()
    ]
    assert validate_k8s["tolerations"][0]["key"] == "nvidia.com/gpu"
    for name, spec in k8s.items():
        assert {s["secretName"] for s in spec["secretAsEnv"]} == {"mavin-s3", "mavin-mlflow", "mavin-ledger"}
        assert spec["pvcMount"][0]["mountPath"] == "/mnt/cache"
    generate_k8s = next(e for name, e in k8s.items() if "generate-data" in name)
    assert "nodeSelector" not in generate_k8s  # only GPU steps go to the GPU pool


def test_the_training_plan_reaches_every_train_step_and_a_bad_plan_is_refused_up_front(tmp_path):
    from mavin_ops.training.launch import LAUNCH_ENV, from_environment

    profile = ClusterProfile.load(DEFAULT_PROFILE)
    path = cluster.compile_pipeline(profile, tmp_path / "p.yaml")
    executors = next(yaml.safe_load_all(path.read_text()))["deploymentSpec"]["executors"]
    trains = [e["container"] for name, e in executors.items() if name.startswith("exec-train")]
    assert len(trains) == 4
    for c in trains:
        [plan] = [e["value"] for e in c.get("env", []) if e["name"] == LAUNCH_ENV]
        given = json.loads(plan)  # credentials travel only as references to Kubernetes secrets
        assert all(len(ref) == 3 for ref in given["secrets"]) and not any(cluster.SECRET_LIKE.search(k) for k in given["env"])
    # What the train step makes of it: a TrainJob of the profile's size, the id stage smaller.
    import os

    os.environ[LAUNCH_ENV] = plan
    try:
        kind, nproc, spec = from_environment("joint", home="/mnt/cache/mavin")
        assert (kind, nproc, spec.nodes, spec.gpus_per_node, spec.image) == ("trainjob", 1, 4, 8, profile.image)
        assert from_environment("id", home="/mnt/cache/mavin")[2].nodes == 1
        assert ["AWS_ACCESS_KEY_ID", "mavin-s3", "access_key"] in [[s.env, s.secret, s.key] for s in spec.secrets]
    finally:
        del os.environ[LAUNCH_ENV]
    for bad, match in (({"backend": "slurm"}, "training.backend: 'slurm'"), ({"nodes": "four"}, "training.nodes: a whole number"),
                       ({"stages": {"warmup": {"nodes": 1}}}, "training.stages.warmup")):
        profile = ClusterProfile.load(DEFAULT_PROFILE)
        profile.training = {**profile.training, **bad}
        with pytest.raises(ProfileError, match=match):
            profile.check()
    profile = ClusterProfile.load(DEFAULT_PROFILE)
    profile.gpu = {**profile.gpu, "steps": ["train"]}
    with pytest.raises(ProfileError, match="take 'train' out of gpu.steps"):
        profile.check()


def test_footage_ingest_fans_out_over_shards_with_their_own_resources(tmp_path):
    """With ``source`` set the pipeline plans shards, runs one ingest pod per shard in a
    ParallelFor and joins them; the profile's resources reach the ingest pods only."""
    profile = ClusterProfile.load(DEFAULT_PROFILE)
    path = cluster.compile_pipeline(profile, tmp_path / "p.yaml")
    pipeline_spec = next(yaml.safe_load_all(path.read_text()))
    executors = pipeline_spec["deploymentSpec"]["executors"]
    shard = next(e for name, e in executors.items() if "ingest-shard" in name)["container"]
    assert shard["resources"]["resourceCpuLimit"] == "16" and shard["resources"]["resourceMemoryLimit"] == "32G"
    join = next(e for name, e in executors.items() if "join-ingest" in name)["container"]
    assert "resourceCpuLimit" not in join.get("resources", {})
    dags = pipeline_spec["components"]
    loops = [d for d in dags.values() if "parameterIterator" in d.get("iteratorPolicy", {}) or "parameterIterator" in json.dumps(d.get("dag", {}))]
    assert loops, "no ParallelFor over the planned shards"
    assert pipeline_spec["root"]["inputDefinitions"]["parameters"]["ingest_shards"]["defaultValue"] == 8


def test_no_secret_value_reaches_the_yaml(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sk-super-secret-value")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok-super-secret-value")
    text = cluster.compile_pipeline(ClusterProfile.load(DEFAULT_PROFILE), tmp_path / "p.yaml").read_text()
    assert "super-secret" not in text
    assert "AWS_SECRET_ACCESS_KEY" in text  # referenced by name, from the secret


def test_profile_with_literal_credential_is_refused(tmp_path):
    bad = yaml.safe_load(DEFAULT_PROFILE.read_text())
    bad["env"]["AWS_SECRET_ACCESS_KEY"] = "literal"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ProfileError, match=r"env.AWS_SECRET_ACCESS_KEY looks like a credential"):
        ClusterProfile.load(path)
    path.write_text("image: x\nnodes: 3\n")
    with pytest.raises(ProfileError, match="unknown field.*nodes"):
        ClusterProfile.load(path)


def test_submit_and_schedule_dry_run_print_the_exact_request(capsys):
    assert main(["submit", "--host", "https://kfp.internal/", "--param", "preset=debug", "--run-name", "r1", "--dry-run"]) == 0
    req = json.loads(capsys.readouterr().out)
    assert req["method"] == "POST" and req["url"] == "https://kfp.internal/apis/v2beta1/runs"
    assert req["body"]["display_name"] == "r1"
    assert req["body"]["runtime_config"]["parameters"]["preset"] == "debug"
    assert req["body"]["pipeline_spec"]["pipelineInfo"]["name"] == "mavin-release"
    assert main(["schedule", "--host", "https://kfp.internal", "--cron", "0 0 3 * * *", "--max-concurrency", "1", "--dry-run"]) == 0
    req = json.loads(capsys.readouterr().out)
    assert req["url"].endswith("/apis/v2beta1/recurringruns")
    assert req["body"]["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}} and req["body"]["max_concurrency"] == "1"
    assert main(["schedule", "--host", "h", "--cron", "nightly", "--dry-run"]) == 2
    assert "not a cron expression" in capsys.readouterr().err


def test_submit_goes_through_the_kfp_client(monkeypatch, capsys):
    """A remote KFP API cannot run here: the kfp.Client boundary is replaced by a recorder
    (the only mock in this suite); everything up to the client call is real."""
    import kfp

    calls = []

    class Recorder:
        def __init__(self, host, existing_token=None):
            calls.append(("init", host))

        def create_experiment(self, name):
            calls.append(("experiment", name))
            return type("E", (), {"experiment_id": "exp-1"})()

        def create_run_from_pipeline_package(self, path, **kw):
            calls.append(("run", yaml.safe_load(open(path))["pipelineInfo"]["name"], kw["arguments"]["preset"]))
            return type("R", (), {"run_id": "run-9"})()

    monkeypatch.setattr(kfp, "Client", Recorder)
    assert main(["submit", "--host", "https://kfp.internal", "--param", "preset=tiny"]) == 0
    assert calls == [("init", "https://kfp.internal"), ("experiment", "mavin-release"), ("run", "mavin-release", "tiny")]
    assert json.loads(capsys.readouterr().out)["run_id"] == "run-9"


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("env", "MLFLOW_TRACKING_URI", "http://alice:hunter2@mlflow.internal:5000"),
        ("parameters", "endpoint_url", "https://AKIAEXAMPLE:s3cr3t@minio.internal"),
        ("parameters", "remote", "s3://key:secret@bucket/dvc"),
    ],
)
def test_credentials_inside_a_url_are_refused_in_a_profile(tmp_path, section, key, value):
    bad = yaml.safe_load(DEFAULT_PROFILE.read_text())
    bad.setdefault(section, {})[key] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ProfileError, match="carries credentials in the URL") as err:
        ClusterProfile.load(path)
    assert "hunter2" not in str(err.value) and "s3cr3t" not in str(err.value) and "secret@" not in str(err.value)


@pytest.mark.parametrize(
    ("param", "expect"),
    [
        ("endpoint_url=http://u:pw@127.0.0.1:9000", "carries credentials"),
        ("model_name=../../etc", "model name '../../etc' is not allowed"),
        ("dataset_name=a/b", "dataset name 'a/b' is not allowed"),
        ("release_id=..", "release id '..' is not allowed"),
    ],
)
def test_submit_and_schedule_refuse_unsafe_parameters(capsys, param, expect):
    for argv in (["submit", "--host", "https://kfp.internal", "--dry-run"],
                 ["schedule", "--host", "https://kfp.internal", "--cron", "0 0 3 * * *", "--dry-run"]):
        assert main([*argv, "--param", param]) == 2
        captured = capsys.readouterr()
        assert expect in captured.err and captured.out == "" and "pw@" not in captured.err
    assert main(["submit", "--host", "https://admin:pw@kfp.internal", "--dry-run"]) == 2
    assert "pw@" not in capsys.readouterr().err
