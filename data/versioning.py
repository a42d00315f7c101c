"""Dataset versioning with DVC: a data registry that pins every dataset version a run reads.

The registry is a git + DVC repository the platform manages (default
``$MAVIN_HOME/data-registry``). Versioning a dataset directory copies it to
``datasets/<name>/`` in the registry, ``dvc add``s it, commits the ``.dvc`` pointer, tags the
commit ``<name>-v<N>`` and pushes the content to the DVC remote: a local directory by
default (``$MAVIN_HOME/dvc-remote``) or ``s3://bucket/prefix`` with a configurable endpoint
(credentials come from the environment, never from the registry's config).

A :class:`DatasetVersion` names what a run read: the registry commit and tag, and the DVC
content hash of the directory (``<md5>.dir``), which depends only on the bytes.

Integrity: DVC does not check what it downloads, so :func:`pull_version` verifies every
pulled file against the md5 the registry commit records for it (the ``.dir`` listing, itself
checked against the pointer's digest) and fails naming the file and the remote. A push is
checked too: every object of the version must be on the remote afterwards; a push that was
killed half-way (or a remote that lost objects) is completed by pushing again, even where
the remote still holds the ``.dir`` listing that makes DVC skip the directory.

Dataset names become paths, so every public function checks them with
:func:`mavin_ops.safety.check_name`; every git/dvc subprocess runs with a timeout
(:data:`SUBPROCESS_TIMEOUT`, or ``$MAVIN_SUBPROCESS_TIMEOUT`` seconds).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from mavin_ops import settings
from mavin_ops.safety import check_name, redact, redact_url, safe_join
from mavin_ops.errors import MavinError

__all__ = [
    "DatasetVersion",
    "VersioningError",
    "dvc",
    "init_registry",
    "pull_version",
    "resolve_version",
    "subprocess_timeout",
    "verify_pulled",
    "version_dataset",
]

DEFAULT_NAME = "mavinset-mini"

#: Seconds any one git or dvc command may run; ``$MAVIN_SUBPROCESS_TIMEOUT`` overrides it.
SUBPROCESS_TIMEOUT = 600.0
TIMEOUT_ENV = "MAVIN_SUBPROCESS_TIMEOUT"


class VersioningError(MavinError, RuntimeError):
    """A DVC or git step failed; the message names the command and its output."""


@dataclass(frozen=True)
class DatasetVersion:
    name: str
    digest: str  # DVC content hash of the directory, e.g. "3f2c...e1.dir"
    commit: str  # data-registry git commit holding the .dvc pointer
    tag: str  # e.g. "mavinset-mini-v3"
    registry: str  # data-registry path
    remote: str  # DVC remote URL the content was pushed to
    path: str  # dataset path inside the registry, e.g. "datasets/mavinset-mini"
    nfiles: int
    size: int

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def subprocess_timeout() -> float:
    """Seconds one git/dvc command may run: ``$MAVIN_SUBPROCESS_TIMEOUT`` or :data:`SUBPROCESS_TIMEOUT`."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return SUBPROCESS_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise VersioningError(f"{TIMEOUT_ENV}={raw!r} is not a positive number of seconds; unset it or set e.g. {TIMEOUT_ENV}=600")
    return value


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    full_env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0", **(env or {})}
    shown = redact(" ".join(cmd))
    timeout = subprocess_timeout()
    # A session of its own, so a timeout ends the command and anything it started.
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            proc.kill()
        proc.communicate()
        raise VersioningError(
            f"`{shown}` timed out after {timeout:g} s in {cwd} and was stopped; check the remote and the network, "
            f"or raise {TIMEOUT_ENV} (seconds) for a large dataset"
        ) from None
    except BaseException:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.wait()
        raise
    if proc.returncode != 0:
        tail = (stderr or stdout).strip().splitlines()[-3:]
        raise VersioningError(f"`{shown}` failed in {cwd}: {redact(' | '.join(tail))}")
    return stdout


def dvc(*args: str, cwd: Path) -> str:
    """Run the DVC CLI of this environment."""
    return _run([sys.executable, "-m", "dvc", *args], cwd)


def _git(*args: str, cwd: Path) -> str:
    return _run(
        ["git", "-c", "user.name=mavin-ops", "-c", "user.email=mavin-ops@localhost", "-c", "commit.gpgsign=false", *args],
        cwd,
    )


def init_registry(
    registry: str | os.PathLike | None = None, remote: str | None = None, endpoint_url: str | None = None
) -> Path:
    """Create the data registry when missing (git init, dvc init, default remote); when it
    exists, point its default remote at ``remote``/``endpoint_url`` if they are given."""
    from mavin_ops.safety import check_url

    for url, what in ((remote, "DVC remote"), (endpoint_url, "S3 endpoint URL")):
        if url:
            check_url(str(url), what)
    root = Path(registry) if registry else settings.home() / "data-registry"
    fresh = not (root / ".dvc").is_dir()
    # An existing registry keeps its remote unless one is given (never reset to the default).
    remote = str(remote) if remote else ((None if fresh else _remote_url(root)) or str(settings.home() / "dvc-remote"))
    if fresh:
        root.mkdir(parents=True, exist_ok=True)
        if not (root / ".git").exists():
            _git("init", "-q", "-b", "main", cwd=root)
        dvc("init", "-q", cwd=root)
        dvc("config", "core.analytics", "false", cwd=root)
        (root / "datasets").mkdir(exist_ok=True)
    current = _remote_url(root)
    if current != remote:
        # A local remote inside the state folder is stored relative to the registry (DVC keeps
        # it relative to .dvc/config), so the folder can move with its registry and remote.
        stored = _relative_to_home(remote, root)
        if current is None:
            dvc("remote", "add", "-d", "storage", stored, cwd=root)
        else:
            dvc("remote", "modify", "storage", "url", stored, cwd=root)
    if endpoint_url:
        dvc("remote", "modify", "storage", "endpointurl", endpoint_url, cwd=root)
    _git("add", "-A", ".dvc", cwd=root)
    if _git("status", "--porcelain", cwd=root).strip():
        _git("commit", "-q", "-m", "data registry: configure DVC remote", cwd=root)
    return root


def _relative_to_home(remote: str, root: Path) -> str:
    """``remote`` relative to ``root`` (the working folder of the dvc call) when both lie in
    the state folder; else unchanged (an S3 URL, a remote elsewhere)."""
    if "://" in remote or not Path(remote).is_absolute():
        return remote
    home = settings.home()
    target, base = Path(remote).resolve(), root.resolve()
    if home not in target.parents or home not in base.parents:
        return remote
    return os.path.relpath(target, base)


def _remote_url(root: Path) -> str | None:
    """The registry's remote URL; a local remote stored relative to it comes back absolute."""
    try:
        return dvc("config", "remote.storage.url", cwd=root).strip() or None
    except VersioningError:
        return None


def _pointer(root: Path, name: str) -> dict:
    with open(root / "datasets" / f"{name}.dvc", encoding="utf-8") as fh:
        out = yaml.safe_load(fh)["outs"][0]
    return out


def _tags(root: Path, name: str) -> list[str]:
    """The version tags ``<name>-v<N>`` of ``name``, newest (highest N) first: v10 before v9."""
    out = _git("tag", "--list", f"{name}-v*", cwd=root)
    tags = [t for t in out.split() if t[len(name) + 2 :].isdigit()]
    return sorted(tags, key=lambda t: int(t[len(name) + 2 :]), reverse=True)


def version_dataset(
    src: str | os.PathLike,
    *,
    name: str = DEFAULT_NAME,
    registry: str | os.PathLike | None = None,
    remote: str | None = None,
    endpoint_url: str | None = None,
    push: bool = True,
    message: str = "",
) -> DatasetVersion:
    """Version the dataset directory ``src`` in the registry and push it to the remote.

    Idempotent: versioning the same bytes again returns the existing version (same digest,
    commit and tag) without a new commit, and pushes again whatever the remote lacks (a
    re-run after a killed push completes the remote)."""
    check_name(name, "dataset name")
    src = Path(src).resolve()
    if not (src / "manifest.jsonl").is_file():
        raise VersioningError(f"{src} has no manifest.jsonl; point at a dataset directory (see data/manifest.py)")
    root = init_registry(registry, remote, endpoint_url)
    dest = root / "datasets" / name
    if dest.resolve() != src:
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(src, dest, symlinks=True)
    dvc("add", "-q", f"datasets/{name}", cwd=root)
    _git("add", f"datasets/{name}.dvc", "datasets/.gitignore", cwd=root)
    out = _pointer(root, name)
    digest = out["md5"]
    tags = _tags(root, name)
    if _git("status", "--porcelain", cwd=root).strip():
        _git("commit", "-q", "-m", message or f"{name}: version {digest}", cwd=root)
    commit = _git("rev-parse", "HEAD", cwd=root).strip()
    tag = next((t for t in tags if _git("rev-list", "-n", "1", t, cwd=root).strip() == commit), "")
    if not tag:
        tag = f"{name}-v{int(tags[0][len(name) + 2 :]) + 1 if tags else 1}"  # highest N + 1
        _git("tag", "-a", tag, "-m", f"{name} {digest}", cwd=root)
    if push:
        _push(root, name, digest)
    return DatasetVersion(
        name=name,
        digest=digest,
        commit=commit,
        tag=tag,
        registry=str(root),
        remote=redact_url(_remote_url(root) or ""),
        path=f"datasets/{name}",
        nfiles=int(out.get("nfiles", 0)),
        size=int(out.get("size", 0)),
    )


def resolve_version(
    registry: str | os.PathLike | None = None, *, name: str = DEFAULT_NAME, rev: str = "latest"
) -> DatasetVersion:
    """The version at ``rev`` (a tag such as ``mavinset-mini-v3``, a registry commit, or
    ``latest`` = the ``<name>-v<N>`` tag with the highest N at call time) without touching
    the registry's work tree."""
    check_name(name, "dataset name")
    root = Path(registry) if registry else settings.home() / "data-registry"
    rev = (rev or "").strip()
    hint = f"use 'latest', a tag listed by `git -C {root} tag --list '{name}-v*'`, or a registry commit"
    if not rev or rev.startswith("-"):
        raise VersioningError(f"dataset revision '{rev}' for the registry {root} is not a revision; {hint}")
    if not (root / ".dvc").is_dir():
        raise VersioningError(
            f"no data registry at {root} to resolve dataset revision '{rev}'; version a dataset there first (`mavin-ops data version <dataset>`) or pass the registry that holds it"
        )
    if rev == "latest":
        tags = _tags(root, name)
        if not tags:
            raise VersioningError(
                f"dataset revision 'latest': the registry {root} has no version of '{name}' yet; run `mavin-ops data version <dataset>` first"
            )
        rev = tags[0]
    try:
        text = _git("show", f"{rev}:datasets/{name}.dvc", cwd=root)
    except VersioningError:
        raise VersioningError(f"revision '{rev}' of the registry {root} has no dataset '{name}'; {hint}") from None
    out = yaml.safe_load(text)["outs"][0]
    commit = _git("rev-list", "-n", "1", rev, cwd=root).strip()
    tag = next((t for t in _tags(root, name) if _git("rev-list", "-n", "1", t, cwd=root).strip() == commit), "")
    return DatasetVersion(
        name=name,
        digest=out["md5"],
        commit=commit,
        tag=tag,
        registry=str(root),
        remote=redact_url(_remote_url(root) or ""),
        path=f"datasets/{name}",
        nfiles=int(out.get("nfiles", 0)),
        size=int(out.get("size", 0)),
    )


def pull_version(registry_url: str, rev: str, dest: str | os.PathLike, *, name: str = DEFAULT_NAME) -> Path:
    """Clone the registry at ``rev`` into ``dest`` and pull the dataset bytes from the remote
    (what a training node does), then verify every pulled file against the md5 the registry
    commit records for it (:func:`verify_pulled`). Returns the dataset directory. On a
    mismatch ``dest`` is removed and :class:`VersioningError` names the file and the remote."""
    check_name(name, "dataset name")
    rev = (rev or "").strip()
    if not rev or rev.startswith("-"):
        raise VersioningError(f"dataset revision '{rev}' is not a revision; pass a tag, a registry commit or a branch of {registry_url}")
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise VersioningError(f"{dest} is not empty; pull into a new folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        _git("clone", "-q", str(registry_url), str(dest), cwd=dest.parent)
        _git("checkout", "-q", rev, cwd=dest)
        local_remote = _remote_url(Path(registry_url)) if Path(registry_url).is_dir() else None
        if local_remote and "://" not in local_remote:
            # The registry names its local remote relative to itself; the clone elsewhere must
            # be told where that is (in its own, uncommitted config).
            dvc("remote", "modify", "--local", "storage", "url", local_remote, cwd=dest)
        dvc("pull", "-q", f"datasets/{name}", cwd=dest)
        verify_pulled(dest, name)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)  # never leave unverified bytes where a step could read them
        raise
    return dest / "datasets" / name


# --------------------------------------------------------------------------- integrity


def _md5(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "md5").hexdigest()


def _cache_dir(root: Path) -> Path:
    """The DVC cache folder of the repository at ``root`` (``.dvc/cache`` unless configured)."""
    out = dvc("cache", "dir", cwd=root).strip()
    path = Path(out) if out else root / ".dvc" / "cache"
    return path if path.is_absolute() else root / path


def _object_path(cache: Path, md5: str) -> Path:
    """Where DVC 3 keeps the object ``md5`` (``<md5>`` or ``<md5>.dir``) in a cache or local remote."""
    return cache / "files" / "md5" / md5[:2] / md5[2:]


def _listing(root: Path, name: str, where: str) -> tuple[str, list[dict]]:
    """The pointer's digest and the ``.dir`` listing of ``datasets/<name>`` from the local
    cache, after checking that the listing's bytes hash to the digest the commit records."""
    out = _pointer(root, name)
    digest = str(out.get("md5", ""))
    if not digest.endswith(".dir"):
        raise VersioningError(f"{root / 'datasets' / (name + '.dvc')} does not track a directory (md5 {digest!r}); version a dataset folder")
    listing_path = _object_path(_cache_dir(root), digest)
    if not listing_path.is_file():
        raise VersioningError(f"the listing {digest} of dataset '{name}' is not in the DVC cache of {root} after the pull from {where}; push the version again and pull again")
    got = _md5(listing_path)
    if got != digest[: -len(".dir")]:
        raise VersioningError(
            f"the file listing {digest} of dataset '{name}' pulled from the DVC remote {where} is corrupted (md5 {got}); "
            f"delete that object from the remote, push the version again from a copy with good bytes and pull again"
        )
    try:
        entries = json.loads(listing_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        entries = None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "md5" in e and "relpath" in e for e in entries):
        raise VersioningError(f"the file listing {digest} of dataset '{name}' from {where} is not a DVC directory listing; push the version again")
    return digest, entries


def verify_pulled(root: str | os.PathLike, name: str = DEFAULT_NAME) -> int:
    """Check every file of ``datasets/<name>`` in the checkout ``root`` against the md5 its
    registry commit records (DVC's ``.dir`` listing, checked against the pointer's digest,
    which git holds). Returns the number of files checked; raises :class:`VersioningError`
    naming the first bad file and the remote. The manifest's own sha256 entries are the
    validation step's business (a bad one quarantines a clip, it is not a transfer fault)."""
    check_name(name, "dataset name")
    root = Path(root)
    where = redact_url(_remote_url(root) or "(no remote configured)")
    digest, entries = _listing(root, name, where)
    data = root / "datasets" / name
    for entry in entries:
        rel = str(entry["relpath"])
        try:
            path = safe_join(data, rel, "file in the DVC listing")
        except ValueError as exc:
            raise VersioningError(f"dataset '{name}' from {where}: {exc}") from None
        if not path.is_file():
            raise VersioningError(f"file {rel} of dataset '{name}' is missing after the pull from the DVC remote {where}; push the version again and pull again")
        got = _md5(path)
        if got != entry["md5"]:
            raise VersioningError(
                f"file {rel} of dataset '{name}' pulled from the DVC remote {where} does not match its recorded md5 "
                f"(got {got}, recorded {entry['md5']} in {digest}): the remote object {where.rstrip('/')}/files/md5/{entry['md5'][:2]}/{entry['md5'][2:]} is corrupted; "
                f"delete it from the remote, push the version again from a copy with good bytes (`mavin-ops data version DIR --name {name}`) and pull again"
            )
    return len(entries)


def _push(root: Path, name: str, digest: str) -> None:
    """``dvc push``, then check that the remote holds every object of the version. DVC
    takes a ``.dir`` listing on the remote as proof that all its files are there, so a remote
    that lost files (a killed push, a partial copy) keeps them lost; then the listing is
    removed from the remote and the push repeated, which uploads exactly what is missing."""
    dvc("push", "-q", "-r", "storage", f"datasets/{name}", cwd=root)
    missing = _remote_missing(root, digest, repair=False)
    if not missing:
        return
    _remote_missing(root, digest, repair=True)
    dvc("push", "-q", "-r", "storage", f"datasets/{name}", cwd=root)
    missing = _remote_missing(root, digest, repair=False)
    if missing:
        shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
        raise VersioningError(
            f"after pushing dataset '{name}' twice the DVC remote {redact_url(_remote_url(root) or '')} still lacks {shown}; "
            "check write access to the remote and push again"
        )


def _remote_missing(root: Path, digest: str, repair: bool) -> list[str]:
    """The files of the version ``digest`` the remote lacks (``.dir`` for the listing), asked
    in a subprocess so the remote call has the same timeout as every other command."""
    cmd = [sys.executable, "-m", "mavin_ops.data.versioning", "remote-missing", str(root), digest]
    out = _run([*cmd, "--repair"] if repair else cmd, root)
    try:
        return list(json.loads(out.strip().splitlines()[-1])["missing"])
    except (ValueError, KeyError, IndexError):
        raise VersioningError(f"could not read the remote check of {root}: {out.strip()[-200:]!r}") from None


def _remote_missing_main(root: str, digest: str, repair: bool) -> dict:
    """The body of ``python -m mavin_ops.data.versioning remote-missing ROOT DIGEST [--repair]``.
    With ``repair`` and files missing, the ``.dir`` listing is deleted from the remote so the
    next push checks (and uploads) every file."""
    from dvc.repo import Repo

    with Repo(root) as repo:
        odb = repo.cloud.get_remote_odb("storage")
        cache = repo.cache.local
        listing = json.loads(Path(cache.oid_to_path(digest)).read_text(encoding="utf-8"))
        by_oid: dict[str, list[str]] = {}
        for entry in listing:
            by_oid.setdefault(entry["md5"], []).append(entry["relpath"])
        present = set(odb.oids_exist([*by_oid, digest]))
        missing = sorted(rel for oid, rels in by_oid.items() if oid not in present for rel in rels)
        if digest not in present:
            missing.append(".dir")
        if repair and missing and digest in present:
            odb.fs.rm(odb.oid_to_path(digest))
    return {"missing": missing}


if __name__ == "__main__":  # internal: the remote check run by _remote_missing
    if len(sys.argv) >= 4 and sys.argv[1] == "remote-missing":
        print(json.dumps(_remote_missing_main(sys.argv[2], sys.argv[3], "--repair" in sys.argv[4:])))
        sys.exit(0)
    print("usage: python -m mavin_ops.data.versioning remote-missing ROOT DIGEST [--repair]", file=sys.stderr)
    sys.exit(2)
