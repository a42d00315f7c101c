"""Release integrity of the serving side: names read from a stored version never
become paths outside the destination, the smoke test's fetch can run twice into the same
folder, and `mavin-ops serve --repository` checks every recorded sha256 before serving."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import boto3
import pytest

from mavin_ops.cli import main
from mavin_ops.safety import UnsafeName, UnsafePath
from mavin_ops.serving import server as srv
from mavin_ops.serving import store as st
from mavin_ops.serving.repository import REPOSITORY_FORMAT, REPOSITORY_MANIFEST, read_repository
from mavin_ops.serving.server import ServerError


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fake_build(root: Path, version: int = 1) -> Path:
    """A small model repository with a valid manifest (no ONNX export needed): what the
    store and the serve checks look at."""
    from mavin_ops.model import preset

    files = {
        "onnxruntime/mavin/config.pbtxt": b'name: "mavin"\nbackend: "python"\n',
        "onnxruntime/mavin/1/model.py": b"# entry model\n",
        "python/mavin/config.pbtxt": b'name: "mavin"\nbackend: "python"\n',
        "python/mavin/1/model.py": b"# entry model\n" + bytes(range(256)),
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    manifest = {
        "format": REPOSITORY_FORMAT,
        "version": version,
        "variants": ["onnxruntime", "python"],
        "models": ["mavin"],
        "config": preset("debug").to_dict(),
        "checkpoint": {"sha256": "0" * 64},
        "lineage": {"release_id": "r-test"},
        "files": {rel: {"sha256": _sha(d), "bytes": len(d)} for rel, d in sorted(files.items())},
    }
    (root / REPOSITORY_MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
    return root


def _crafted_manifest(files: dict[str, bytes], name: str = "mavin", version: int = 1) -> bytes:
    manifest = {
        "format": st.STORE_FORMAT,
        "name": name,
        "version": version,
        "checkpoint_sha256": "0" * 64,
        "lineage": {},
        "files": {rel: {"sha256": _sha(d), "bytes": len(d)} for rel, d in files.items()},
    }
    return json.dumps(manifest, indent=1).encode()  # not sorted: the unsafe name comes LAST


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# --------------------------------------------------------------------------- item 3: unsafe names


UNSAFE = ["../../escaped.txt", "python/../../../escaped.txt"]


@pytest.mark.parametrize("bad", UNSAFE)
def test_local_fetch_refuses_a_manifest_name_outside_the_destination_before_writing(tmp_path, bad, monkeypatch):
    """A crafted version whose MANIFEST.json names ``../../escaped.txt`` (with the matching
    sha256, and the bytes really there) must be refused before any byte is written: neither
    the escaped file nor the safe files nor a staging folder appear."""
    store, work = tmp_path / "store", tmp_path / "work" / "deep"
    version_dir = store / "mavin" / "1"
    good = {"mavin_repository.json": b"{}", "python/mavin/config.pbtxt": b"name: 'mavin'\n"}
    payload = b"written outside the fetch destination"
    for rel, data in good.items():
        (version_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (version_dir / rel).write_bytes(data)
    (version_dir / bad).parent.mkdir(parents=True, exist_ok=True)
    (version_dir / bad).write_bytes(payload)  # the source really exists, so only the name check stops it
    (version_dir / st.STORE_MANIFEST).write_bytes(_crafted_manifest({**good, bad: payload}))
    work.mkdir(parents=True)
    copies = []
    real_copy = shutil.copyfile
    monkeypatch.setattr(st.shutil, "copyfile", lambda s, d, *a, **k: (copies.append(str(d)), real_copy(s, d, *a, **k))[1])

    dest = work / "fetched"
    with pytest.raises(UnsafePath) as err:
        st.fetch(store, dest, version=1)
    message = str(err.value)
    assert "\n" not in message and repr(bad) in message and "MANIFEST.json" in message
    assert copies == []  # every name is checked before the first byte is written
    assert not dest.exists() and _leftovers(work) == []
    escaped = [p for p in tmp_path.rglob("escaped.txt") if not p.is_relative_to(store)]
    assert escaped == []


def test_local_fetch_refuses_an_absolute_manifest_name(tmp_path, monkeypatch):
    store = tmp_path / "store"
    target = tmp_path / "victim" / "owned.txt"
    (store / "mavin" / "1").mkdir(parents=True)
    (store / "mavin" / "1" / "a.txt").write_bytes(b"a")
    (store / "mavin" / "1" / st.STORE_MANIFEST).write_bytes(_crafted_manifest({"a.txt": b"a", str(target): b"owned"}))
    copies = []
    monkeypatch.setattr(st.shutil, "copyfile", lambda s, d, *a, **k: copies.append(d))
    with pytest.raises(UnsafePath, match="is not a plain relative path"):
        st.fetch(store, tmp_path / "dest", version=1)
    assert copies == [] and not target.exists() and not (tmp_path / "dest").exists()


def test_local_fetch_refuses_two_names_for_one_file(tmp_path):
    store = tmp_path / "store"
    (store / "mavin" / "1" / "python").mkdir(parents=True)
    (store / "mavin" / "1" / "python" / "x").write_bytes(b"x")
    (store / "mavin" / "1" / st.STORE_MANIFEST).write_bytes(_crafted_manifest({"python/x": b"x", "python/./x": b"y"}))
    with pytest.raises(UnsafePath, match="would overwrite another file of the version"):
        st.fetch(store, tmp_path / "dest", version=1)
    assert _leftovers(tmp_path) == ["store"]


def test_store_names_from_a_user_are_single_path_components(tmp_path):
    """A model name becomes a folder of the store: ``../other`` must not read a version kept
    outside the store root."""
    outside = tmp_path / "other" / "1"
    outside.mkdir(parents=True)
    (outside / "a.txt").write_bytes(b"a")
    (outside / st.STORE_MANIFEST).write_bytes(_crafted_manifest({"a.txt": b"a"}))
    store = st.LocalStore(tmp_path / "store")
    (tmp_path / "store").mkdir()
    for call in (lambda: store.read_manifest("../other", 1), lambda: store.versions("../other"), lambda: store.fetch("../other", 1, tmp_path / "d")):
        with pytest.raises(UnsafeName, match="model store name '../other' is not allowed"):
            call()
    for name in ("a..b", " mavin", "mavin/1", ".hidden"):
        with pytest.raises(UnsafeName):
            st.list_versions(tmp_path / "store", name=name)
    assert not (tmp_path / "d").exists()


@pytest.mark.server
def test_s3_fetch_refuses_a_manifest_name_outside_the_destination_before_writing(s3_env, tmp_path):
    """The same crafted version on S3 (complete, its COMPLETE marker matching the manifest)."""
    bad = "../../escaped.txt"
    s3 = boto3.client("s3", endpoint_url=s3_env)
    try:
        s3.create_bucket(Bucket="crafted")
    except s3.exceptions.BucketAlreadyOwnedByYou:  # pragma: no cover - a rerun in one session
        pass
    good = {"mavin_repository.json": b"{}", "python/mavin/config.pbtxt": b"name: 'mavin'\n"}
    payload = b"written outside the fetch destination"
    body = _crafted_manifest({**good, bad: payload})
    for rel, data in {**good, bad: payload, st.STORE_MANIFEST: body}.items():
        s3.put_object(Bucket="crafted", Key=f"v/mavin/1/{rel}", Body=data)
    s3.put_object(Bucket="crafted", Key=f"v/mavin/1/{st.COMPLETE_MARKER}", Body=json.dumps({"manifest_sha256": _sha(body), "version": 1}).encode())
    assert st.list_versions("s3://crafted/v", endpoint_url=s3_env) == [1]

    store = st.S3Store("s3://crafted/v", s3_env)
    downloads = []
    real = store.s3.download_file
    store.s3.download_file = lambda b, k, f, *a, **kw: (downloads.append(k), real(b, k, f, *a, **kw))[1]
    work = tmp_path / "work" / "deep"
    work.mkdir(parents=True)
    with pytest.raises(UnsafePath) as err:
        store.fetch("mavin", 1, work / "fetched")
    assert "\n" not in str(err.value) and repr(bad) in str(err.value)
    assert downloads == []  # nothing was downloaded: the names are checked first
    assert _leftovers(work) == [] and list(tmp_path.rglob("escaped.txt")) == []


def test_served_model_names_read_from_a_repository_are_checked(tmp_path):
    """Model names in mavin_repository.json become folder names and --load-model arguments."""
    repo = _fake_build(tmp_path / "repo")
    info = json.loads((repo / REPOSITORY_MANIFEST).read_text())
    info["models"] = ["../../etc"]
    (repo / REPOSITORY_MANIFEST).write_text(json.dumps(info))
    install = srv.TritonInstall(tmp_path / "tritonserver", tmp_path, None, None)
    with pytest.raises(UnsafeName, match=r"model name in .*mavin_repository.json '../../etc' is not allowed"):
        srv._resolve(repo, "python", install)


def test_read_repository_refuses_a_listed_name_outside_the_folder(tmp_path):
    repo = _fake_build(tmp_path / "repo")
    (tmp_path / "secret").write_bytes(b"x")
    info = json.loads((repo / REPOSITORY_MANIFEST).read_text())
    info["files"]["../secret"] = {"sha256": _sha(b"x"), "bytes": 1}
    (repo / REPOSITORY_MANIFEST).write_text(json.dumps(info))
    with pytest.raises(UnsafePath, match="'../secret' is not a plain relative path"):
        read_repository(repo, verify=True)


# --------------------------------------------------------------------------- item 8: smoke twice


class NotStarting(ServerError):
    pass


def _no_tritonserver(monkeypatch, seen: list):
    def fake_serve(repository, **kwargs):
        seen.append(Path(repository))
        raise NotStarting("stub: tritonserver not started by this test")

    monkeypatch.setattr(srv, "serve", fake_serve)


def test_smoke_fetch_step_twice_into_the_same_folder(tmp_path):
    from mavin_ops.serving.smoke import fetch_repository

    build = _fake_build(tmp_path / "build")
    store = tmp_path / "store"
    st.publish(build, store)
    out = tmp_path / "served-check"
    first = fetch_repository(store, out, version=1)
    assert first == out / "repository-1"
    (first / "python" / "mavin" / "1" / "model.py").write_bytes(b"tampered since the last smoke")  # a stale folder
    (first / "stray.txt").write_text("left by an old run")
    second = fetch_repository(store, out, version=1)
    assert second == first
    read_repository(second, verify=True)
    st.verify_fetched(second)
    assert not (second / "stray.txt").exists()  # a fresh copy, not the old folder patched
    assert _leftovers(out) == ["repository-1"]  # no staging or old folder left beside it
    with pytest.raises(FileExistsError, match="is not empty"):  # a plain fetch still never overwrites
        st.fetch(store, second, version=1)


def test_smoke_runs_twice_for_the_same_version(tmp_path, monkeypatch, capsys):
    """`make release` run again without a new version: `mavin-ops smoke` into the same --out
    must get past the fetch the second time too (tritonserver is stubbed here; the served
    part is covered by test_server.py)."""
    build = _fake_build(tmp_path / "build")
    store = tmp_path / "store"
    st.publish(build, store)
    seen: list[Path] = []
    _no_tritonserver(monkeypatch, seen)
    out = tmp_path / "served-check"
    for run in (1, 2):
        rc = main(["smoke", "--store", str(store), "--version", "1", "--out", str(out)])
        err = capsys.readouterr().err
        assert rc == 2 and "stub: tritonserver not started" in err, (run, err)
        assert len(seen) == run and seen[-1] == out / "repository-1"
        read_repository(seen[-1], verify=True)


# --------------------------------------------------------------------------- item 13c: serve --repository


def _flip_byte(path: Path, offset: int = -3) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("point_at", ["build", "variant folder"])
def test_serve_repository_refuses_a_corrupted_file(tmp_path, monkeypatch, capsys, point_at):
    repo = _fake_build(tmp_path / "repo")
    bad = repo / "python" / "mavin" / "1" / "model.py"
    _flip_byte(bad)
    seen: list[Path] = []
    _no_tritonserver(monkeypatch, seen)
    target = repo if point_at == "build" else repo / "python"
    rc = main(["serve", "--repository", str(target)])
    err = capsys.readouterr().err
    assert rc == 2 and seen == []  # refused before tritonserver is started
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mavin-ops: error: ")
    assert "python/mavin/1/model.py" in lines[0] and "sha256" in lines[0]


def test_serve_store_version_folder_checks_the_store_manifest_too(tmp_path, monkeypatch, capsys):
    """A local store's version folder has the store's MANIFEST.json, which also pins
    mavin_repository.json itself: an edited manifest is refused, as fetch refuses it."""
    build = _fake_build(tmp_path / "build")
    store = tmp_path / "store"
    st.publish(build, store)
    folder = store / "mavin" / "1"
    info = json.loads((folder / REPOSITORY_MANIFEST).read_text())
    info["lineage"]["release_id"] = "r-forged"
    (folder / REPOSITORY_MANIFEST).write_text(json.dumps(info, indent=1, sort_keys=True))
    read_repository(folder, verify=True)  # its own sha256s still match: only the store manifest catches it
    seen: list[Path] = []
    _no_tritonserver(monkeypatch, seen)
    rc = main(["serve", "--repository", str(folder)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and seen == [] and "\n" not in err
    assert REPOSITORY_MANIFEST in err and "does not match its sha256" in err


def test_serve_repository_intact_reaches_the_server(tmp_path, monkeypatch, capsys):
    repo = _fake_build(tmp_path / "repo")
    seen: list[Path] = []
    _no_tritonserver(monkeypatch, seen)
    rc = main(["serve", "--repository", str(repo)])
    assert rc == 2 and seen == [repo] and "stub: tritonserver not started" in capsys.readouterr().err
