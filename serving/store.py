"""Atomic publication of built model repositories to a model store.

A store holds numbered versions of a named served model::

    <store>/<name>/<version>/...            the built repository (both variants), as built
    <store>/<name>/<version>/MANIFEST.json  sha256 and size of every file of the version
    <store>/<name>/<version>/COMPLETE       S3 only: written last, names MANIFEST.json's sha256

A version appears complete or not at all:

- **local directory** (the default): files are copied into ``<name>/.staging-<version>-<id>``,
  MANIFEST.json is written, every staged file is re-hashed against it, then the folder is
  renamed to ``<version>`` (one atomic rename). Readers list only numbered folders; a
  staging folder left by a killed publisher is never read.
- **S3** (``s3://bucket/prefix``, boto3, endpoint configurable): objects are uploaded under
  the version's prefix, MANIFEST.json after them, every object is read back and hashed, and
  the ``COMPLETE`` marker is written last. Readers ignore versions without the marker (or
  whose marker does not match the manifest), so a half-uploaded version is invisible; running
  the same publish again skips objects already uploaded intact and completes the version.

Versions are immutable: publishing a version that exists with other content is refused;
publishing identical content again is a no-op that returns the existing version.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mavin_ops.fsutil import replace_dir
from mavin_ops.safety import UnsafePath, check_name, safe_join

from mavin_ops.data.manifest import sha256_file
from .repository import REPOSITORY_MANIFEST, read_repository
from mavin_ops.errors import MavinError

__all__ = [
    "COMPLETE_MARKER",
    "STORE_MANIFEST",
    "LocalStore",
    "PublishedVersion",
    "S3Store",
    "StoreError",
    "fetch",
    "list_versions",
    "next_version",
    "open_store",
    "publish",
    "verify_fetched",
]

STORE_MANIFEST = "MANIFEST.json"
COMPLETE_MARKER = "COMPLETE"
STORE_FORMAT = "mavin-ops/model-store"
OnFile = Callable[[str], None]


class StoreError(MavinError, RuntimeError):
    """A publication or a read from the model store failed; the message says what to do."""


@dataclass(frozen=True)
class PublishedVersion:
    uri: str
    name: str
    version: int
    manifest_sha256: str
    files: int
    bytes: int
    reused: bool = False  # the identical version was already complete


def _manifest_for(build_dir: Path, name: str) -> tuple[dict[str, Any], dict[str, Path]]:
    """The store manifest of a built repository (verified against its own sha256s)."""
    info = read_repository(build_dir, verify=True)
    sources = {rel: build_dir / rel for rel in info["files"]}
    sources[REPOSITORY_MANIFEST] = build_dir / REPOSITORY_MANIFEST
    files = {rel: dict(info["files"][rel]) for rel in info["files"]}
    files[REPOSITORY_MANIFEST] = {"sha256": sha256_file(sources[REPOSITORY_MANIFEST]), "bytes": sources[REPOSITORY_MANIFEST].stat().st_size}
    manifest = {
        "format": STORE_FORMAT,
        "name": name,
        "version": int(info["version"]),
        "checkpoint_sha256": info["checkpoint"]["sha256"],
        "lineage": info["lineage"],
        "files": dict(sorted(files.items())),
    }
    return manifest, sources


def _manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8")


def _check_name(name: str) -> str:
    """A model name becomes a folder (local) or a key prefix (S3): one safe path component."""
    return check_name(name, "model store name")


# --------------------------------------------------------------------------- local


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore:
    """A model store in a local (or mounted) directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()

    @property
    def uri(self) -> str:
        return str(self.root)

    def _dir(self, name: str) -> Path:
        return self.root / _check_name(name)

    def version_uri(self, name: str, version: int) -> str:
        return str(self._dir(name) / str(int(version)))

    def versions(self, name: str) -> list[int]:
        """Complete versions, ascending (numbered folders; staging folders are ignored)."""
        base = self._dir(name)
        if not base.is_dir():
            return []
        return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit() and (p / STORE_MANIFEST).is_file())

    def read_manifest(self, name: str, version: int) -> dict[str, Any]:
        path = self._dir(name) / str(int(version)) / STORE_MANIFEST
        if not path.is_file():
            raise StoreError(f"{self.version_uri(name, version)} is not a published version (complete versions: {self.versions(name) or 'none'})")
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StoreError(f"{path} is corrupt ({exc}); re-publish version {version} or serve another one") from None

    def publish(self, build_dir: Path, name: str, on_file: OnFile | None = None) -> PublishedVersion:
        manifest, sources = _manifest_for(build_dir, name)
        version = manifest["version"]
        body = _manifest_bytes(manifest)
        digest = hashlib.sha256(body).hexdigest()
        base = self._dir(name)
        final = base / str(int(version))
        if final.exists():
            return self._existing(name, version, manifest)
        base.mkdir(parents=True, exist_ok=True)
        for old in base.glob(f".staging-{version}-*"):  # left by a killed publisher; never read
            shutil.rmtree(old, ignore_errors=True)
        stage = base / f".staging-{version}-{uuid.uuid4().hex[:8]}"
        try:
            for rel, src in sorted(sources.items()):
                dst = stage / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
                _fsync(dst)
                if on_file:
                    on_file(rel)
            (stage / STORE_MANIFEST).write_bytes(body)
            _fsync(stage / STORE_MANIFEST)
            for rel, entry in manifest["files"].items():  # verify the staged copy, byte for byte
                got = sha256_file(stage / rel)
                if got != entry["sha256"]:
                    raise StoreError(f"staged file {stage / rel} has sha256 {got[:12]}..., the manifest says {entry['sha256'][:12]}...: the copy is corrupt; nothing was published, run publish again")
            for d in sorted({p.parent for p in stage.rglob("*")} | {stage}, key=lambda p: len(p.parts), reverse=True):
                _fsync(d)
            try:
                os.rename(stage, final)
            except OSError:
                if final.exists():
                    shutil.rmtree(stage, ignore_errors=True)
                    return self._existing(name, version, manifest)
                raise
            _fsync(base)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        return PublishedVersion(str(final), name, version, digest, len(manifest["files"]), sum(e["bytes"] for e in manifest["files"].values()))

    def _existing(self, name: str, version: int, manifest: dict[str, Any]) -> PublishedVersion:
        have = self.read_manifest(name, version)
        if have.get("files") != manifest["files"]:
            raise StoreError(f"{self.version_uri(name, version)} is already published with other content; versions are immutable: build with version {max(self.versions(name)) + 1}")
        body = (self._dir(name) / str(int(version)) / STORE_MANIFEST).read_bytes()
        return PublishedVersion(self.version_uri(name, version), name, version, hashlib.sha256(body).hexdigest(), len(have["files"]), sum(e["bytes"] for e in have["files"].values()), reused=True)

    def fetch(self, name: str, version: int, dest: Path, replace: bool = False) -> Path:
        src = self._dir(name) / str(int(version))
        manifest = self.read_manifest(name, version)
        where = self.version_uri(name, version)

        def copy(rel: str, out: Path) -> None:
            try:
                shutil.copyfile(safe_join(src, rel, f"file name in {where}/{STORE_MANIFEST}"), out)
            except FileNotFoundError:
                raise StoreError(f"{where} lists {rel} but the store has no such file; re-publish version {version} or serve another one") from None

        return _materialize(dest, manifest, copy, where, replace)


# --------------------------------------------------------------------------- S3


class S3Store:
    """A model store under ``s3://bucket/prefix`` (boto3; credentials from the environment)."""

    def __init__(self, uri: str, endpoint_url: str | None = None):
        import boto3
        from botocore.config import Config

        rest = uri[len("s3://") :]
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise StoreError(f"model store '{uri}' has no bucket; use s3://bucket/prefix")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        cfg = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=120)
        self.s3 = boto3.client("s3", endpoint_url=self.endpoint_url, config=cfg)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def version_uri(self, name: str, version: int) -> str:
        return f"s3://{self.bucket}/{self._key(_check_name(name), str(int(version)))}"

    def _errors(self):
        from botocore.exceptions import BotoCoreError, ClientError

        return (BotoCoreError, ClientError)

    def _read(self, key: str) -> bytes | None:
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self._errors() as exc:
            if _code(exc) in ("NoSuchKey", "404", "NoSuchBucket"):
                return None
            raise

    def _marker(self, name: str, version: int) -> dict[str, Any] | None:
        raw = self._read(self._key(name, str(version), COMPLETE_MARKER))
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return None

    def _manifest_if_complete(self, name: str, version: int) -> tuple[dict[str, Any], bytes] | None:
        marker = self._marker(name, version)
        if marker is None:
            return None
        body = self._read(self._key(name, str(version), STORE_MANIFEST))
        if body is None or hashlib.sha256(body).hexdigest() != marker.get("manifest_sha256"):
            return None
        return json.loads(body), body

    def _candidate_versions(self, name: str) -> list[int]:
        _check_name(name)
        out = []
        paginator = self.s3.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(name) + "/", Delimiter="/"):
                for cp in page.get("CommonPrefixes", []):
                    last = cp["Prefix"].rstrip("/").rsplit("/", 1)[-1]
                    if last.isdigit():
                        out.append(int(last))
        except self._errors() as exc:
            if _code(exc) == "NoSuchBucket":
                return []
            raise StoreError(f"listing {self.uri}/{name} failed: {_reason(exc)}") from None
        return sorted(out)

    def versions(self, name: str) -> list[int]:
        """Complete versions only: a version without a matching COMPLETE marker is invisible."""
        try:
            return [v for v in self._candidate_versions(name) if self._manifest_if_complete(name, v) is not None]
        except self._errors() as exc:
            raise StoreError(f"listing {self.uri}/{name} failed: {_reason(exc)}") from None

    def read_manifest(self, name: str, version: int) -> dict[str, Any]:
        try:
            got = self._manifest_if_complete(name, version)
        except self._errors() as exc:
            raise StoreError(f"reading {self.version_uri(name, version)} failed: {_reason(exc)}") from None
        if got is None:
            raise StoreError(f"{self.version_uri(name, version)} is not a complete version (no valid {COMPLETE_MARKER} marker: an interrupted publish?); complete versions: {self.versions(name) or 'none'}")
        return got[0]

    def _ensure_bucket(self) -> None:
        try:
            self.s3.head_bucket(Bucket=self.bucket)
        except self._errors() as exc:
            if _code(exc) in ("404", "NoSuchBucket", "NotFound"):
                self.s3.create_bucket(Bucket=self.bucket)
            else:
                raise

    def _intact(self, key: str, entry: dict[str, Any]) -> bool:
        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=key)
        except self._errors():
            return False
        return head.get("ContentLength") == entry["bytes"] and head.get("Metadata", {}).get("sha256") == entry["sha256"]

    def _hash_object(self, key: str) -> str:
        h = hashlib.sha256()
        body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"]
        for chunk in iter(lambda: body.read(1 << 20), b""):
            h.update(chunk)
        return h.hexdigest()

    def _put(self, key: str, data: bytes, sha: str) -> None:
        checksum = base64.b64encode(bytes.fromhex(sha)).decode("ascii")
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, Metadata={"sha256": sha}, ChecksumSHA256=checksum)

    def publish(self, build_dir: Path, name: str, on_file: OnFile | None = None) -> PublishedVersion:
        manifest, sources = _manifest_for(build_dir, name)
        version = manifest["version"]
        body = _manifest_bytes(manifest)
        digest = hashlib.sha256(body).hexdigest()
        where = self.version_uri(name, version)
        step = "checking the store"
        try:
            existing = self._manifest_if_complete(name, version)
            if existing is not None:
                if existing[0].get("files") != manifest["files"]:
                    raise StoreError(f"{where} is already published with other content; versions are immutable: build with version {max(self.versions(name)) + 1}")
                return PublishedVersion(where, name, version, hashlib.sha256(existing[1]).hexdigest(), len(manifest["files"]), sum(e["bytes"] for e in manifest["files"].values()), reused=True)
            self._ensure_bucket()
            for rel, src in sorted(sources.items()):
                step = f"uploading {rel}"
                key = self._key(name, str(version), rel)
                entry = manifest["files"][rel]
                if not self._intact(key, entry):  # a retry skips what the last attempt finished
                    self._put(key, src.read_bytes(), entry["sha256"])
                if on_file:
                    on_file(rel)
            step = f"uploading {STORE_MANIFEST}"
            self._put(self._key(name, str(version), STORE_MANIFEST), body, digest)
            for rel, entry in list(manifest["files"].items()) + [(STORE_MANIFEST, {"sha256": digest})]:
                step = f"verifying {rel}"
                got = self._hash_object(self._key(name, str(version), rel))
                if got != entry["sha256"]:
                    raise StoreError(f"{where}/{rel} reads back with sha256 {got[:12]}..., expected {entry['sha256'][:12]}...; the version stays invisible, run publish again")
            step = f"writing the {COMPLETE_MARKER} marker"
            marker = json.dumps({"manifest_sha256": digest, "version": version, "completed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode()
            self._put(self._key(name, str(version), COMPLETE_MARKER), marker, hashlib.sha256(marker).hexdigest())
        except self._errors() as exc:
            raise StoreError(f"publishing {where} failed while {step}: {_reason(exc)}; the version stays invisible (no {COMPLETE_MARKER} marker), run publish again to finish it") from None
        return PublishedVersion(where, name, version, digest, len(manifest["files"]), sum(e["bytes"] for e in manifest["files"].values()))

    def fetch(self, name: str, version: int, dest: Path, replace: bool = False) -> Path:
        manifest = self.read_manifest(name, version)

        def download(rel: str, out: Path) -> None:
            self.s3.download_file(self.bucket, self._key(name, str(version), rel), str(out))

        try:
            return _materialize(dest, manifest, download, self.version_uri(name, version), replace)
        except self._errors() as exc:
            raise StoreError(f"fetching {self.version_uri(name, version)} failed: {_reason(exc)}; run fetch again") from None


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", "")) if hasattr(exc, "response") else ""


def _reason(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300]


def _checked_names(dest: Path, manifest: dict[str, Any], where: str) -> dict[str, tuple[Path, str]]:
    """Every file name of a stored version's manifest, checked before a byte is written:
    ``rel -> (path relative to the destination, expected sha256)``. A name that is absolute,
    has ``..`` or resolves outside ``dest`` raises :class:`UnsafePath` (one line)."""
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not files:
        raise StoreError(f"{where}/{STORE_MANIFEST} lists no files; the stored version is corrupt, publish it again")
    base = dest.resolve()
    out: dict[str, tuple[Path, str]] = {}
    seen: set[Path] = set()
    for rel, entry in files.items():
        target = safe_join(dest, rel, f"file name in {where}/{STORE_MANIFEST}")  # UnsafePath: nothing written yet
        sha = entry.get("sha256") if isinstance(entry, dict) else None
        if not isinstance(sha, str):
            raise StoreError(f"{where}/{STORE_MANIFEST}: entry {rel!r} has no sha256; the stored version is corrupt, publish it again")
        clean = target.relative_to(base)
        if clean.as_posix() == STORE_MANIFEST or clean in seen:
            raise UnsafePath(f"file name in {where}/{STORE_MANIFEST} {rel!r} would overwrite {'the manifest itself' if clean.as_posix() == STORE_MANIFEST else 'another file of the version'}; refusing to fetch the version")
        seen.add(clean)
        out[rel] = (clean, sha)
    return out


def _materialize(dest: Path, manifest: dict[str, Any], get: Callable[[str, Path], None], where: str, replace: bool = False) -> Path:
    """Write every file of a version into ``dest``: every name is checked first (nothing is
    written when one is unsafe), then files go to a staging folder beside ``dest``, each
    sha256-checked, and the folder is renamed into place. ``replace`` swaps a verified fresh
    copy for an existing ``dest`` atomically (:func:`mavin_ops.fsutil.replace_dir`); without
    it a non-empty ``dest`` is refused."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()) and not replace:
        raise FileExistsError(f"fetch destination {dest} is not empty; choose a new folder")
    names = _checked_names(dest, manifest, where)
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = dest.parent / f".{dest.name}.fetch-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        stage.mkdir()
        for rel, (clean, sha) in names.items():
            out = stage / clean
            out.parent.mkdir(parents=True, exist_ok=True)
            get(rel, out)
            got = sha256_file(out)
            if got != sha:
                raise StoreError(f"{where}/{rel} has sha256 {got[:12]}..., its manifest says {sha[:12]}...: the stored version is corrupt")
        (stage / STORE_MANIFEST).write_bytes(_manifest_bytes(manifest))
        if replace:
            replace_dir(stage, dest)
        else:
            os.rename(stage, dest)  # replaces an empty folder; refuses one that filled up meanwhile
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return dest


def verify_fetched(path: str | Path) -> dict[str, Any]:
    """Check a fetched version folder the way :func:`fetch` checked it: every file its
    ``MANIFEST.json`` lists is a safe name inside the folder and matches its sha256. Returns
    the manifest; raises :class:`StoreError` (:class:`UnsafePath` for a bad name) naming the file."""
    root = Path(path)
    mpath = root / STORE_MANIFEST
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StoreError(f"{mpath} cannot be read ({exc.__class__.__name__}); re-fetch the version from the model store") from None
    if not isinstance(manifest, dict) or manifest.get("format") != STORE_FORMAT or not isinstance(manifest.get("files"), dict):
        raise StoreError(f"{mpath} is not a {STORE_FORMAT} manifest; re-fetch the version from the model store")
    for rel, entry in manifest["files"].items():
        p = safe_join(root, rel, f"file name in {mpath}")
        want = entry.get("sha256") if isinstance(entry, dict) else None
        if not p.is_file() or sha256_file(p) != want:
            raise StoreError(f"repository file {p} is missing or does not match its sha256 in {mpath}; re-fetch the version from the model store")
    return manifest


# --------------------------------------------------------------------------- API


def open_store(store: str | Path, endpoint_url: str | None = None) -> "LocalStore | S3Store":
    """``s3://bucket/prefix`` -> :class:`S3Store`; anything else is a local directory."""
    text = str(store)
    if text.startswith("s3://"):
        return S3Store(text, endpoint_url)
    if "://" in text:
        raise StoreError(f"model store '{text}' is neither a local directory nor s3://bucket/prefix")
    return LocalStore(text)


def publish(build_dir: str | Path, store: str | Path, *, name: str = "mavin", endpoint_url: str | None = None, on_file: OnFile | None = None) -> PublishedVersion:
    """Publish a built repository as version ``<its version>`` of ``name``; atomic (see the
    module docstring). ``on_file(relative_path)`` is called after each file is stored."""
    _check_name(name)
    return open_store(store, endpoint_url).publish(Path(build_dir), name, on_file)


def list_versions(store: str | Path, *, name: str = "mavin", endpoint_url: str | None = None) -> list[int]:
    """The complete versions of ``name`` in ``store``, ascending."""
    _check_name(name)
    return open_store(store, endpoint_url).versions(name)


def next_version(store: str | Path, *, name: str = "mavin", endpoint_url: str | None = None) -> int:
    """One past the newest complete version (1 for an empty store)."""
    have = list_versions(store, name=name, endpoint_url=endpoint_url)
    return (max(have) + 1) if have else 1


def fetch(store: str | Path, dest: str | Path, *, name: str = "mavin", version: int | None = None, endpoint_url: str | None = None, replace: bool = False) -> Path:
    """Copy a complete version (default: the newest) into ``dest``, verifying every file.
    ``dest`` must be new or empty, unless ``replace``: then a fresh verified copy is swapped
    in for it atomically (running the same fetch twice works)."""
    _check_name(name)
    st = open_store(store, endpoint_url)
    if version is None:
        have = st.versions(name)
        if not have:
            raise StoreError(f"{st.uri}/{name} has no complete version; publish one first")
        version = have[-1]
    return st.fetch(name, int(version), Path(dest), replace)
