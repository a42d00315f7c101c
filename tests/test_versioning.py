"""DVC versioning: a data registry with a local remote (default) and an S3 remote served by a
real moto_server on loopback; push, pull into a fresh clone, identical bytes."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import yaml

from mavin_ops.data import versioning
from mavin_ops.data.versioning import VersioningError, pull_version, resolve_version, version_dataset

REPO = Path(__file__).resolve().parents[1]


def make_dataset(root: Path, payload: bytes = b"frames") -> Path:
    (root / "clips").mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "clips" / "c1.mp4").write_bytes(payload * 100)
    (root / "clips" / "c1.wav").write_bytes(bytes(range(256)) * 10)
    (root / "refs" / "c1_R1.png").write_bytes(b"\x89PNG" + payload)
    (root / "manifest.jsonl").write_text(json.dumps({"id": "c1", "split": "train", "video": "clips/c1.mp4"}) + "\n")
    return root


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_local_remote_version_is_idempotent_and_pulls_identical_bytes(tmp_path, isolated_home):
    ds = make_dataset(tmp_path / "ds")
    v1 = version_dataset(ds)
    assert v1.digest.endswith(".dir") and v1.tag == "mavinset-mini-v1" and v1.nfiles == 4
    assert Path(v1.remote) == isolated_home / "dvc-remote"
    # Same bytes again: same version, no new commit or tag.
    assert version_dataset(ds) == v1
    # Changed bytes: a new version; the old one stays resolvable.
    (ds / "clips" / "c1.mp4").write_bytes(b"other")
    v2 = version_dataset(ds)
    assert v2.tag == "mavinset-mini-v2" and v2.digest != v1.digest and v2.commit != v1.commit
    assert resolve_version(rev="latest") == v2
    assert resolve_version(rev=v1.tag) == v1
    pulled = pull_version(v1.registry, v1.tag, tmp_path / "node")
    expected = tree_digest(make_dataset(tmp_path / "again"))
    assert tree_digest(pulled) == expected


def test_version_refuses_a_folder_without_manifest(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VersioningError, match="no manifest.jsonl"):
        version_dataset(tmp_path / "empty")


def test_resolve_unknown_revision_names_it(tmp_path):
    v = version_dataset(make_dataset(tmp_path / "ds"))
    with pytest.raises(VersioningError, match="'nope'"):
        resolve_version(v.registry, rev="nope")


@pytest.mark.server
def test_s3_remote_push_then_pull_into_fresh_clone(tmp_path, s3_env):
    s3 = boto3.client("s3", endpoint_url=s3_env)
    s3.create_bucket(Bucket="datasets")
    ds = make_dataset(tmp_path / "ds", payload=b"s3-bytes")
    v = version_dataset(ds, registry=tmp_path / "registry", remote="s3://datasets/mavin", endpoint_url=s3_env)
    assert v.remote == "s3://datasets/mavin"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="datasets").get("Contents", [])]
    assert len(keys) >= 5 and all(k.startswith("mavin/") for k in keys)  # 4 files + the .dir listing
    # No credential ever lands in the registry's committed config.
    config = (Path(v.registry) / ".dvc" / "config").read_text()
    assert "endpointurl" in config and "testing" not in config
    # A fresh node: clone the registry, pull from S3, get identical bytes.
    shutil.rmtree(Path(v.registry) / ".dvc" / "cache")
    pulled = pull_version(v.registry, v.tag, tmp_path / "node")
    assert tree_digest(pulled) == tree_digest(ds)


def test_dvc_yaml_generate_stage_is_declared_with_its_params():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    gen = stages["generate"]
    assert "mavin-ops data generate" in gen["cmd"]
    assert set(gen["params"]) >= {"data.preset", "data.seed"}
    assert gen["outs"] == ["${data.root}"]
    assert params["data"]["preset"] in {"debug", "tiny"}
    pre = stages["precompute"]
    assert "${data.root}" in pre["deps"] and pre["outs"] == ["${data.latents}"]
    assert "python -m mavin_ops.training precompute" in pre["cmd"]


@pytest.mark.slow
def test_dvc_repro_generate_stage_matches_version_digest(tmp_path):
    """`dvc repro` of the project's generate stage in a scratch repo gives the same content
    hash as versioning the same generated directory."""
    work = tmp_path / "proj"
    work.mkdir()
    shutil.copy(REPO / "dvc.yaml", work / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["preset"] = "debug"
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    versioning.dvc("init", "-q", cwd=work)
    env_bin = str(Path(sys.executable).parent)
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "repro", "-q", "generate"],
        cwd=work,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "PATH": env_bin + ":" + __import__("os").environ["PATH"]},
    )
    assert proc.returncode == 0, proc.stderr
    lock = yaml.safe_load((work / "dvc.lock").read_text())
    md5 = lock["stages"]["generate"]["outs"][0]["md5"]
    v = version_dataset(work / params["data"]["root"], registry=tmp_path / "reg")
    assert v.digest == md5
