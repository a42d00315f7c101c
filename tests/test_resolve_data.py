"""Recurring runs train on fresh data: `dataset_rev` (a tag, a registry commit or `latest`)
resolves against the DVC data registry at run time, resolve_data pulls exactly that version
and records it, the release pipeline branches on it, and the cluster profile schedules
`latest`."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from mavin_ops import settings, tracking
from mavin_ops.cli import main
from mavin_ops.data.versioning import VersioningError, init_registry, resolve_version, version_dataset

NAME = "mavinset-mini"


def make_dataset(root: Path, payload: bytes) -> Path:
    """A small dataset directory (manifest + media); ``payload`` makes each version differ."""
    (root / "clips").mkdir(parents=True)
    (root / "clips" / "c1.mp4").write_bytes(payload * 50)
    (root / "clips" / "c1.wav").write_bytes(bytes(range(256)) * 4)
    (root / "manifest.jsonl").write_text(json.dumps({"id": "c1", "split": "train", "video": "clips/c1.mp4"}) + "\n")
    return root


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def three_versions(tmp_path: Path, registry: Path | None = None):
    return [
        version_dataset(make_dataset(tmp_path / f"src{i}", f"version-{i}".encode()), registry=registry) for i in (1, 2, 3)
    ]


# --------------------------------------------------------------------------- library


def test_latest_is_the_highest_version_number_and_a_tag_resolves_to_itself(tmp_path):
    v1, v2, v3 = three_versions(tmp_path, tmp_path / "registry")
    assert [v.tag for v in (v1, v2, v3)] == [f"{NAME}-v1", f"{NAME}-v2", f"{NAME}-v3"]
    registry = v1.registry
    assert resolve_version(registry, rev="latest") == v3
    assert resolve_version(registry, rev=v1.tag) == v1
    assert resolve_version(registry, rev=v2.commit) == v2  # a bare registry commit finds its tag too
    # "latest" orders by N, not by string: v10 beats v9 (string order would pick v9).
    git = ["git", "-C", registry, "-c", "user.name=t", "-c", "user.email=t@localhost"]
    subprocess.run([*git, "tag", "-a", f"{NAME}-v9", v2.commit, "-m", "v9"], check=True)
    subprocess.run([*git, "tag", "-a", f"{NAME}-v10", v1.commit, "-m", "v10"], check=True)
    latest = resolve_version(registry, rev="latest")
    assert latest.tag == f"{NAME}-v10" and latest.digest == v1.digest and latest.commit == v1.commit
    # The next version continues after the highest N (not after the number of tags).
    v11 = version_dataset(make_dataset(tmp_path / "src11", b"version-11"), registry=registry)
    assert v11.tag == f"{NAME}-v11" and resolve_version(registry, rev="latest") == v11


def test_bad_revisions_give_one_line_errors_naming_rev_and_registry(tmp_path):
    (v1,) = [version_dataset(make_dataset(tmp_path / "src", b"only"), registry=tmp_path / "registry")]
    for rev in ("mavinset-mini-v7", "no-such-branch", "--output=/tmp/x"):
        with pytest.raises(VersioningError) as err:
            resolve_version(v1.registry, rev=rev)
        msg = str(err.value)
        assert "\n" not in msg and f"'{rev}'" in msg and v1.registry in msg and "'latest'" in msg, msg
    # A registry with no version yet: "latest" says so and what to do.
    empty = init_registry(tmp_path / "empty-registry")
    with pytest.raises(VersioningError, match=r"'latest'.*empty-registry has no version of 'mavinset-mini' yet; run `mavin-ops data version"):
        resolve_version(empty, rev="latest")
    # No registry at all.
    with pytest.raises(VersioningError, match=r"no data registry at .*nowhere to resolve dataset revision 'latest'"):
        resolve_version(tmp_path / "nowhere", rev="latest")


# --------------------------------------------------------------------------- component


@pytest.fixture
def local_runner(tmp_path):
    from kfp import local

    warnings.filterwarnings("ignore", message=".*have no effect in the current local runner")
    warnings.filterwarnings("ignore", message=".*custom or non-Python base image")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "pipeline-root"))
    return local


def test_resolve_data_component_pulls_latest_and_records_it(tmp_path, local_runner):
    """The component alone, run by the KFP local runner in a subprocess, against the default
    registry under MAVIN_HOME with its local DVC remote."""
    from mavin_ops.components.resolve_data.component import resolve_data

    v1, v2, v3 = three_versions(tmp_path)
    # A node never sees the registry's DVC cache: the bytes must come from the remote.
    shutil.rmtree(Path(v3.registry) / ".dvc" / "cache")
    task = resolve_data(dataset_rev="latest", name=NAME, registry="", release_id="rel-resolve", kfp_run_id="")
    assert (task.outputs["digest"], task.outputs["tag"], task.outputs["commit"]) == (v3.digest, v3.tag, v3.commit)
    dataset = Path(task.outputs["dataset"].path)
    assert task.outputs["dataset_uri"] == task.outputs["dataset"].uri
    assert tree_digest(dataset) == tree_digest(tmp_path / "src3")

    c = MlflowClient(settings.tracking_uri())
    parent = c.get_run(tracking.parent_run("rel-resolve"))
    assert parent.data.tags["mavin.dataset_digest"] == v3.digest
    assert parent.data.tags["mavin.dataset_tag"] == v3.tag
    assert parent.data.tags["mavin.dataset_commit"] == v3.commit
    assert parent.data.tags["mavin.dataset_rev"] == "latest"
    (step,) = c.search_runs([parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert step.data.tags["mavin.step"] == "resolve_data" and step.info.status == "FINISHED"
    (inp,) = step.inputs.dataset_inputs
    assert inp.dataset.digest == v3.digest[:36] and inp.dataset.name == NAME


def test_release_pipeline_reads_the_resolved_dataset(tmp_path, local_runner):
    """The real release pipeline with dataset_rev pinned to an older tag, stopped early on purpose: the tiny
    dataset fails validation, so no training runs. What ran shows the wiring: resolve_data
    instead of generate/version, and validate_data got the resolved bytes and digest through
    dsl.OneOf + the importer; the exit handler closed the parent run."""
    from mavin_ops.pipelines.release import release_pipeline

    v1, v2 = [version_dataset(make_dataset(tmp_path / f"src{i}", f"v{i}".encode())) for i in (1, 2)]
    with pytest.raises(Exception):  # the local runner raises for a failed pipeline
        release_pipeline(dataset_rev=v1.tag, release_id="rel-pipeline")  # pinned: v2 is newer
    c = MlflowClient(settings.tracking_uri())
    parent = c.get_run(tracking.parent_run("rel-pipeline"))
    children = {
        r.data.tags["mavin.step"]: r
        for r in c.search_runs([parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    }
    assert set(children) == {"resolve_data", "validate_data"}, sorted(children)
    assert children["resolve_data"].info.status == "FINISHED"
    validate = children["validate_data"]
    assert validate.info.status == "FAILED" and validate.data.params["dataset_digest"] == v1.digest
    assert validate.data.metrics["rows"] == 1  # it read the one-clip manifest of the pulled version
    assert parent.data.tags["mavin.dataset_tag"] == v1.tag and parent.data.tags["mavin.dataset_digest"] == v1.digest
    assert parent.data.tags["mavin.dataset_rev"] == v1.tag
    assert parent.info.status == "FAILED" and parent.data.tags["mavin.final_state"] == "FAILED"


# --------------------------------------------------------------------------- IR and schedule


def _ir(tmp_path: Path, parameters: dict | None = None) -> dict:
    from kfp import compiler

    from mavin_ops.pipelines.release import release_pipeline

    out = tmp_path / "release.yaml"
    compiler.Compiler().compile(release_pipeline, str(out), pipeline_parameters=parameters)
    return yaml.safe_load(out.read_text())


def _dags(spec: dict) -> dict[str, dict]:
    return {name: comp["dag"] for name, comp in spec["components"].items() if "dag" in comp} | {"root": spec["root"]["dag"]}


def test_compiled_pipeline_branches_on_dataset_rev(tmp_path):
    spec = _ir(tmp_path)
    assert spec["root"]["inputDefinitions"]["parameters"]["dataset_rev"]["defaultValue"] == ""
    dags = _dags(spec)
    # resolve-data runs when dataset_rev is set; else the footage branch (plan, ParallelFor of
    # ingest shards, join, version) when source is set; else generate-data and version-data.
    branches = {}
    for dag in dags.values():
        for task in dag["tasks"].values():
            condition = task.get("triggerPolicy", {}).get("condition", "")
            if "pipelinechannel--dataset_rev" in condition:
                inner = dags[task["componentRef"]["name"]]["tasks"]
                branches[condition] = set(inner)
    rev, src = "inputs.parameter_values['pipelinechannel--dataset_rev'] != ''", "inputs.parameter_values['pipelinechannel--source'] != ''"
    assert {c: {t.rstrip("-0123456789") for t in v} for c, v in branches.items()} == {
        rev: {"resolve-data"},
        f"!({rev}) && {src}": {"plan-ingest", "for-loop", "join-ingest", "version-data"},
        f"!({rev}) && !({src})": {"generate-data", "version-data"},
    }
    resolve = next(d["tasks"]["resolve-data"] for d in dags.values() if "resolve-data" in d["tasks"])
    assert resolve.get("cachingOptions", {}).get("enableCache") in (None, False)  # never a cached "latest"
    # validate-data reads the imported dataset and the merged (OneOf) digest.
    validate = next(d["tasks"]["validate-data"] for d in dags.values() if "validate-data" in d["tasks"])
    assert validate["inputs"]["artifacts"]["dataset"]["taskOutputArtifact"]["producerTask"] == "importer"
    digest_from = validate["inputs"]["parameters"]["dataset_digest"]["taskOutputParameter"]
    assert digest_from["producerTask"].startswith("condition-branches") and "oneof" in digest_from["outputParameterKey"]


def test_schedule_dry_run_requests_latest_data_without_overlap(capsys):
    assert main(["schedule", "--host", "https://kfp.internal", "--cron", "0 0 3 * * *", "--dry-run"]) == 0
    req = json.loads(capsys.readouterr().out)
    assert req["body"]["runtime_config"]["parameters"]["dataset_rev"] == "latest"
    assert req["body"]["max_concurrency"] == "1"  # the default: never two trainings at once
    root_params = req["body"]["pipeline_spec"]["root"]["inputDefinitions"]["parameters"]
    assert root_params["dataset_rev"]["defaultValue"] == "latest"
    # A one-off override still reaches the request.
    assert main(["schedule", "--host", "h", "--cron", "0 3 * * *", "--param", "dataset_rev=mavinset-mini-v3", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["body"]["runtime_config"]["parameters"]["dataset_rev"] == "mavinset-mini-v3"
