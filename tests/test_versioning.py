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
    assert pre["outs"] == ["${data.latents}"]
    assert "python -m mavin_ops.training precompute" in pre["cmd"]


def test_dvc_yaml_precompute_reads_only_the_validated_dataset():
    """Quarantine is enforced in the DVC pipeline too: validate writes the validated dataset
    and precompute reads that, never the generated folder."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    val, pre = stages["validate"], stages["precompute"]
    assert "mavin-ops data validate ${data.root}" in val["cmd"] and "--validated ${data.root}.validated" in val["cmd"]
    assert "${data.root}.validated" in val["outs"] and "${data.root}" in val["deps"]
    assert "--dataset ${data.root}.validated " in pre["cmd"]
    assert "${data.root}.validated" in pre["deps"] and "${data.root}" not in pre["deps"]


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


# --------------------------------------------------------------------------- integrity


def _remote_objects(remote: Path) -> list[Path]:
    return sorted(p for p in (remote / "files" / "md5").rglob("*") if p.is_file())


def _object_of(remote: Path, ds: Path, rel: str) -> Path:
    md5 = hashlib.md5((ds / rel).read_bytes()).hexdigest()
    return remote / "files" / "md5" / md5[:2] / md5[2:]


def test_corrupted_local_remote_object_fails_the_pull_naming_file_and_remote(tmp_path, isolated_home):
    ds = make_dataset(tmp_path / "ds")
    v = version_dataset(ds)
    obj = _object_of(Path(v.remote), ds, "clips/c1.wav")
    data = bytearray(obj.read_bytes())
    data[10] ^= 0xFF  # one flipped byte, same size
    obj.chmod(0o644)
    obj.write_bytes(bytes(data))
    shutil.rmtree(Path(v.registry) / ".dvc" / "cache")  # nothing local to fall back on
    with pytest.raises(VersioningError) as err:
        pull_version(v.registry, v.tag, tmp_path / "node")
    msg = str(err.value)
    assert "\n" not in msg and "clips/c1.wav" in msg and v.remote in msg and "does not match its recorded md5" in msg, msg
    assert not (tmp_path / "node").exists()  # no unverified bytes left behind for a step to read
    # The good bytes pushed again (after the bad object is deleted, as the error says) pull clean.
    obj.unlink()
    version_dataset(ds)
    assert tree_digest(pull_version(v.registry, v.tag, tmp_path / "node2")) == tree_digest(ds)


@pytest.mark.parametrize("lost_listing", [False, True], ids=["files-lost", "files-and-listing-lost"])
def test_push_again_after_a_killed_push_completes_the_local_remote(tmp_path, isolated_home, lost_listing):
    """A killed push leaves the remote partial. Versioning the same bytes again is idempotent
    (same version, no new commit) and uploads what is missing, even where the remote kept the
    .dir listing that makes DVC believe the whole directory is there."""
    ds = make_dataset(tmp_path / "ds")
    v = version_dataset(ds)
    remote = Path(v.remote)
    lost = [_object_of(remote, ds, "clips/c1.mp4"), _object_of(remote, ds, "refs/c1_R1.png")]
    for obj in lost:
        obj.unlink()
    if lost_listing:
        (remote / "files" / "md5" / v.digest[:2] / v.digest[2:]).unlink()
    assert version_dataset(ds) == v
    assert all(obj.is_file() for obj in lost)
    shutil.rmtree(Path(v.registry) / ".dvc" / "cache")
    assert tree_digest(pull_version(v.registry, v.tag, tmp_path / "node")) == tree_digest(ds)


def test_a_killed_dvc_push_subprocess_then_push_again_pulls_verified(tmp_path, isolated_home, monkeypatch):
    """A real `dvc push` killed by the timeout: the re-push completes the remote."""
    ds = make_dataset(tmp_path / "ds")
    v = version_dataset(ds, push=False)
    with monkeypatch.context() as m:
        m.setenv("MAVIN_SUBPROCESS_TIMEOUT", "0.05")
        with pytest.raises(VersioningError, match="timed out after 0.05 s"):
            versioning.dvc("push", "-q", "-r", "storage", f"datasets/{v.name}", cwd=Path(v.registry))
    assert version_dataset(ds) == v
    shutil.rmtree(Path(v.registry) / ".dvc" / "cache")
    assert tree_digest(pull_version(v.registry, v.tag, tmp_path / "node")) == tree_digest(ds)


@pytest.mark.server
def test_s3_corrupted_object_fails_the_pull_and_a_killed_push_is_completed(tmp_path, s3_env):
    s3 = boto3.client("s3", endpoint_url=s3_env)
    s3.create_bucket(Bucket="integrity")
    ds = make_dataset(tmp_path / "ds", payload=b"s3-integrity")
    v = version_dataset(ds, registry=tmp_path / "registry", remote="s3://integrity/mavin", endpoint_url=s3_env)

    def key(rel: str) -> str:
        md5 = hashlib.md5((ds / rel).read_bytes()).hexdigest()
        return f"mavin/files/md5/{md5[:2]}/{md5[2:]}"

    good = s3.get_object(Bucket="integrity", Key=key("clips/c1.wav"))["Body"].read()
    s3.put_object(Bucket="integrity", Key=key("clips/c1.wav"), Body=b"X" + good[1:])  # corrupted in the bucket
    shutil.rmtree(Path(v.registry) / ".dvc" / "cache")
    with pytest.raises(VersioningError) as err:
        pull_version(v.registry, v.tag, tmp_path / "node")
    msg = str(err.value)
    assert "\n" not in msg and "clips/c1.wav" in msg and "s3://integrity/mavin" in msg and "does not match its recorded md5" in msg, msg

    # A killed push: objects missing from the bucket (the .dir listing kept). Pushing the same
    # bytes again from a copy with good bytes restores them; a fresh pull verifies.
    s3.delete_object(Bucket="integrity", Key=key("clips/c1.wav"))
    s3.delete_object(Bucket="integrity", Key=key("clips/c1.mp4"))
    v2 = version_dataset(ds, registry=tmp_path / "registry", remote="s3://integrity/mavin", endpoint_url=s3_env)
    assert v2 == v
    s3.head_object(Bucket="integrity", Key=key("clips/c1.mp4"))
    assert s3.get_object(Bucket="integrity", Key=key("clips/c1.wav"))["Body"].read() == good
    shutil.rmtree(Path(v.registry) / ".dvc" / "cache")
    assert tree_digest(pull_version(v.registry, v.tag, tmp_path / "node2")) == tree_digest(ds)


# --------------------------------------------------------------------------- names and timeouts


@pytest.mark.parametrize("bad", ["../../victim", "..", "a/b", "/tmp/x", "-rf", ""])
def test_dataset_names_that_would_become_paths_outside_are_refused(tmp_path, isolated_home, bad):
    from mavin_ops.safety import UnsafeName

    victim = isolated_home / "victim"
    victim.mkdir(parents=True)
    (victim / "precious.txt").write_text("keep me")
    ds = make_dataset(tmp_path / "ds")
    with pytest.raises(UnsafeName, match="dataset name"):
        version_dataset(ds, name=bad)
    assert (victim / "precious.txt").read_text() == "keep me"
    assert not (isolated_home / "data-registry").exists()  # refused before touching the file system
    v = version_dataset(ds)
    with pytest.raises(UnsafeName, match="dataset name"):
        resolve_version(v.registry, name=bad)
    with pytest.raises(UnsafeName, match="dataset name"):
        pull_version(v.registry, v.tag, tmp_path / "node", name=bad)
    assert not (tmp_path / "node").exists()
    with pytest.raises(UnsafeName, match="dataset name"):
        versioning.verify_pulled(v.registry, name=bad)


def test_subprocess_timeout_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MAVIN_SUBPROCESS_TIMEOUT", "1")
    with pytest.raises(VersioningError) as err:
        versioning._run([sys.executable, "-c", "import time; time.sleep(120)"], tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "timed out after 1 s" in msg and "MAVIN_SUBPROCESS_TIMEOUT" in msg
    # every git/dvc step goes through it: a registry cannot be created within 1 ms
    monkeypatch.setenv("MAVIN_SUBPROCESS_TIMEOUT", "0.001")
    with pytest.raises(VersioningError, match="timed out after 0.001 s"):
        version_dataset(make_dataset(tmp_path / "ds"), registry=tmp_path / "reg")
    monkeypatch.setenv("MAVIN_SUBPROCESS_TIMEOUT", "soon")
    with pytest.raises(VersioningError, match="MAVIN_SUBPROCESS_TIMEOUT='soon' is not a positive number"):
        versioning._run(["true"], tmp_path)
    monkeypatch.delenv("MAVIN_SUBPROCESS_TIMEOUT")
    assert versioning.subprocess_timeout() == versioning.SUBPROCESS_TIMEOUT == 600
