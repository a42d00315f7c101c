"""Atomic publication: a version is complete or invisible, locally and on S3 (moto_server on
loopback), including an S3 server killed in the middle of an upload."""

from __future__ import annotations

import shutil

import boto3
import pytest

from mavin_ops.serving import store as st
from mavin_ops.data.manifest import sha256_file
from mavin_ops.serving.repository import build_repository, read_repository
from mavin_ops.serving.store import StoreError, fetch, list_versions, next_version, publish


class Boom(RuntimeError):
    pass


def _crash_after(n: int):
    seen = []

    def hook(rel: str) -> None:
        seen.append(rel)
        if len(seen) == n:
            raise Boom(f"publisher died after {n} files")

    return hook, seen


def _same_tree(a, b) -> None:
    files_a = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file() and p.name != st.STORE_MANIFEST)
    assert files_a == files_b
    for rel in files_a:
        assert sha256_file(a / rel) == sha256_file(b / rel), rel


# --------------------------------------------------------------------------- local


def test_local_publish_list_fetch_and_idempotent_retry(built, tmp_path):
    store = tmp_path / "store"
    assert list_versions(store) == [] and next_version(store) == 1
    first = publish(built.path, store)
    assert first.version == 1 and not first.reused and first.uri == str(store / "mavin" / "1")
    assert list_versions(store) == [1] and next_version(store) == 2
    again = publish(built.path, store)
    assert again.reused and again.manifest_sha256 == first.manifest_sha256
    got = fetch(store, tmp_path / "fetched")
    read_repository(got, verify=True)
    _same_tree(built.path, got)


def test_local_publish_interrupted_leaves_no_version(built, tmp_path):
    store = tmp_path / "store"
    hook, seen = _crash_after(5)
    with pytest.raises(Boom):
        publish(built.path, store, on_file=hook)
    assert len(seen) == 5
    assert list_versions(store) == []
    assert sorted(p.name for p in (store / "mavin").iterdir()) == []  # staging removed, no "1"
    # a publisher killed hard leaves its staging folder; readers never see it, the next publish clears it
    (store / "mavin" / ".staging-1-deadbeef" / "python").mkdir(parents=True)
    assert list_versions(store) == []
    with pytest.raises(StoreError, match="not a published version"):
        fetch(store, tmp_path / "f", version=1)
    assert publish(built.path, store).version == 1
    assert sorted(p.name for p in (store / "mavin").iterdir()) == ["1"]


def test_local_publish_refuses_a_corrupt_copy(built, tmp_path, monkeypatch):
    real_copy = shutil.copyfile

    def corrupting_copy(src, dst, *args, **kwargs):
        out = real_copy(src, dst, *args, **kwargs)
        if str(dst).endswith("denoiser/1/model.onnx"):
            with open(dst, "r+b") as fh:
                fh.seek(100)
                fh.write(b"\x00\x01\x02")
        return out

    monkeypatch.setattr(st.shutil, "copyfile", corrupting_copy)
    with pytest.raises(StoreError, match=r"denoiser/1/model.onnx has sha256 .* the copy is corrupt; nothing was published"):
        publish(built.path, tmp_path / "store")
    monkeypatch.undo()
    assert list_versions(tmp_path / "store") == []


def test_versions_are_immutable(built, exported, tmp_path):
    store = tmp_path / "store"
    publish(built.path, store)
    other = build_repository(exported.path, tmp_path / "rebuilt", version=1, max_batch_size=4)
    with pytest.raises(StoreError, match=r"already published with other content; versions are immutable: build with version 2"):
        publish(other.path, store)
    newer = build_repository(exported.path, tmp_path / "v2", version=2, max_batch_size=4)
    assert publish(newer.path, store).version == 2
    assert list_versions(store) == [1, 2]
    assert read_repository(fetch(store, tmp_path / "latest"))["version"] == 2


def test_a_tampered_build_is_not_published(built, tmp_path):
    copy = tmp_path / "build"
    shutil.copytree(built.path, copy)
    (copy / "python" / "audio_decoder" / "1" / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="does not match its sha256"):
        publish(copy, tmp_path / "store")
    assert list_versions(tmp_path / "store") == []


# --------------------------------------------------------------------------- S3


def _keys(endpoint: str, bucket: str, prefix: str) -> list[str]:
    s3 = boto3.client("s3", endpoint_url=endpoint)
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out += [o["Key"] for o in page.get("Contents", [])]
    return out


@pytest.mark.server
def test_s3_publish_is_invisible_until_complete_and_a_retry_finishes(built, s3_env, tmp_path, monkeypatch):
    uri = "s3://models/serving-retry"
    hook, seen = _crash_after(7)
    with pytest.raises(Boom):
        publish(built.path, uri, endpoint_url=s3_env, on_file=hook)
    partial = _keys(s3_env, "models", "serving-retry/mavin/1/")
    assert len(partial) == 7 and not any(k.endswith(st.COMPLETE_MARKER) for k in partial)
    assert list_versions(uri, endpoint_url=s3_env) == []
    with pytest.raises(StoreError, match=r"mavin/1 is not a complete version \(no valid COMPLETE marker"):
        fetch(uri, tmp_path / "half", version=1, endpoint_url=s3_env)
    assert not (tmp_path / "half").exists()

    puts = []
    real_put = st.S3Store._put
    monkeypatch.setattr(st.S3Store, "_put", lambda self, key, data, sha: (puts.append(key), real_put(self, key, data, sha))[1])
    done = publish(built.path, uri, endpoint_url=s3_env)
    n_files = len(read_repository(built.path)["files"]) + 1
    assert done.version == 1 and done.files == n_files
    assert len(puts) == n_files - 7 + 2  # the 7 intact objects are not sent again; + MANIFEST + COMPLETE
    assert puts[-1].endswith("mavin/1/COMPLETE") and puts[-2].endswith("mavin/1/MANIFEST.json")
    assert list_versions(uri, endpoint_url=s3_env) == [1]
    _same_tree(built.path, fetch(uri, tmp_path / "full", endpoint_url=s3_env))
    assert publish(built.path, uri, endpoint_url=s3_env).reused


@pytest.mark.server
def test_s3_readers_refuse_a_corrupted_object(built, s3_env, tmp_path):
    uri = "s3://models/serving-corrupt"
    publish(built.path, uri, endpoint_url=s3_env)
    s3 = boto3.client("s3", endpoint_url=s3_env)
    s3.put_object(Bucket="models", Key="serving-corrupt/mavin/1/python/denoiser/config.pbtxt", Body=b"max_batch_size: 1024")
    with pytest.raises(StoreError, match=r"python/denoiser/config.pbtxt has sha256 .* the stored version is corrupt"):
        fetch(uri, tmp_path / "bad", endpoint_url=s3_env)
    assert not (tmp_path / "bad").exists()
    s3.put_object(Bucket="models", Key="serving-corrupt/mavin/1/MANIFEST.json", Body=b"{}")
    assert list_versions(uri, endpoint_url=s3_env) == []  # the marker no longer matches the manifest


@pytest.mark.server
def test_s3_server_killed_mid_upload(built, exported, own_moto, tmp_path):
    """moto_server is SIGKILLed after a few objects of version 2 are stored. The publisher
    fails with one line; while objects of version 2 exist, readers see only version 1; after
    a restart (objects replayed, as S3 keeps them), a retry completes version 2."""
    own_moto.start()
    uri = "s3://models/serving"
    v1 = publish(built.path, uri, endpoint_url=own_moto.endpoint)
    assert v1.version == 1
    v2_build = build_repository(exported.path, tmp_path / "v2", version=2)
    seen_during = []

    def kill_after_three(rel: str) -> None:
        seen_during.append(rel)
        if len(seen_during) == 3:
            assert len(_keys(own_moto.endpoint, "models", "serving/mavin/2/")) == 3
            assert list_versions(uri, endpoint_url=own_moto.endpoint) == [1]  # the half version is invisible
            own_moto.kill()

    with pytest.raises(StoreError) as err:
        publish(v2_build.path, uri, endpoint_url=own_moto.endpoint, on_file=kill_after_three)
    message = str(err.value)
    assert "\n" not in message and "publishing s3://models/serving/mavin/2 failed" in message and "run publish again" in message

    own_moto.start(replay=True)  # the same store after a restart: the 3 objects are still there
    assert len(_keys(own_moto.endpoint, "models", "serving/mavin/2/")) == 3
    assert list_versions(uri, endpoint_url=own_moto.endpoint) == [1]
    with pytest.raises(StoreError, match="not a complete version"):
        fetch(uri, tmp_path / "half", version=2, endpoint_url=own_moto.endpoint)

    done = publish(v2_build.path, uri, endpoint_url=own_moto.endpoint)
    assert done.version == 2 and not done.reused
    assert list_versions(uri, endpoint_url=own_moto.endpoint) == [1, 2]
    _same_tree(v2_build.path, fetch(uri, tmp_path / "v2-fetched", endpoint_url=own_moto.endpoint))

