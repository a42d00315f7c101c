"""Read the tracking store without importing MLflow, so everyday read commands (``history``,
``verify``, ``lineage``, ``gate``'s champion lookup, ``serve``'s champion) answer in well under
a second.

``import mlflow`` costs about 1.8 s and opening its SQLAlchemy stores another 2.7 s (it
checks the schema's migrations), while the queries these commands make take milliseconds.
On the local default store (``sqlite:///...``) :func:`reader` therefore reads MLflow's SQLite
file directly, read-only, through the standard library; for any other tracking URI (an MLflow
server), or when asked (``mlflow=True``, the commands' ``--mlflow``), it goes through
``MlflowClient``. Both return the same plain records (:class:`Version`, :class:`Run`) with
the same semantics as MLflow's client (deleted versions are not seen, searches skip deleted
runs, runs come newest first), and ``tests/test_release.py`` checks them against each other on a real
release's store. Writes always go through MLflow.

The tables read are MLflow's own (``runs``, ``tags``, ``params``, ``experiments``,
``registered_models``, ``registered_model_tags``, ``model_versions``, ``model_version_tags``,
``registered_model_aliases``) in the schema of the pinned MLflow version."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Protocol
from urllib.parse import unquote

from mavin_ops import settings

__all__ = ["NotFound", "Reader", "Run", "Version", "local_artifact", "reader", "sqlite_path"]

#: MLflow's stage of a soft-deleted model version, and its only workspace on a local store.
_DELETED_VERSION = "Deleted_Internal"
_WORKSPACE = "default"


class NotFound(LookupError):
    """No such registered model, version, alias or run."""


@dataclass(frozen=True)
class Version:
    """A registered model version, as the read commands need it."""

    name: str
    version: str
    source: str
    run_id: str
    tags: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Run:
    """A tracking run, as the read commands need it."""

    run_id: str
    name: str
    status: str
    experiment_id: str
    artifact_uri: str
    start_time: int
    end_time: int | None
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


class Reader(Protocol):
    def model_tags(self, name: str) -> dict[str, str]: ...
    def model_version(self, name: str, version: str) -> Version: ...
    def model_version_by_alias(self, name: str, alias: str) -> Version: ...
    def run(self, run_id: str) -> Run: ...
    def find_runs(self, tags: dict[str, str], status: str | None = None, limit: int | None = None) -> list[Run]: ...


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI, else None."""
    if not uri.startswith("sqlite:///"):
        return None
    rest = unquote(uri[len("sqlite:///"):].split("?", 1)[0])  # SQLAlchemy: absolute with a fourth slash
    return Path(rest).resolve() if rest else None


def reader(tracking_uri: str | None = None, mlflow: bool = False) -> Reader:
    """The reader for ``tracking_uri`` (default: the platform's): MLflow's SQLite file read
    directly, or ``MlflowClient`` for a server or when ``mlflow`` is true."""
    uri = tracking_uri or settings.tracking_uri()
    path = sqlite_path(uri)
    if path is not None and not mlflow:
        return SqliteReader(path)
    return MlflowReader(uri)


def _version_number(version: str | int) -> int:
    """A version number, or -1 (matches nothing) for text that is not one (``'²'`` is a digit, not decimal)."""
    text = str(version)
    return int(text) if text.isascii() and text.isdecimal() and len(text) <= 18 else -1  # (SQLite's integers are 64-bit)


def local_artifact(store: Reader, uri: str) -> Path | None:
    """The file on this machine behind ``runs:/<run id>/<path>`` when the run's artifacts are
    stored in the state folder; None when they are elsewhere, the run is unknown, or the file
    is missing (then download it with MLflow). Never a path outside the run's artifact folder,
    nor an artifact folder outside the state folder (a run's location is only a record)."""
    if not uri.startswith("runs:/"):
        return None
    run_id, _, rel = uri[len("runs:/"):].partition("/")
    try:
        root = store.run(run_id).artifact_uri
    except NotFound:
        return None
    from urllib.parse import urlsplit

    if not root or urlsplit(root).scheme not in ("", "file", settings.HOME_SCHEME):
        return None
    try:
        folder = settings.local_path(root).resolve()
    except ValueError:
        return None
    home, path = settings.home(), (folder / rel).resolve()
    return path if folder in path.parents and home in folder.parents and path.is_file() else None


class SqliteReader:
    """MLflow's SQLite store, opened read-only (a missing file is an empty store)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection | None]:
        if not self.path.is_file():
            yield None
            return
        con = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)  # quoted: ?, # and % in names
        try:
            yield con
        finally:
            con.close()

    def model_tags(self, name: str) -> dict[str, str]:
        with self._db() as db:
            found = db and db.execute("SELECT 1 FROM registered_models WHERE name = ? AND workspace = ?", (name, _WORKSPACE)).fetchone()
            if not found:
                raise NotFound(f"no registered model '{name}'")
            rows = db.execute("SELECT key, value FROM registered_model_tags WHERE name = ? AND workspace = ?", (name, _WORKSPACE))
            return {k: v or "" for k, v in rows}

    def model_version(self, name: str, version: str) -> Version:
        with self._db() as db:
            row = db and db.execute(
                "SELECT name, version, source, run_id FROM model_versions WHERE name = ? AND version = ? AND workspace = ? "
                "AND current_stage != ?", (name, _version_number(version), _WORKSPACE, _DELETED_VERSION),
            ).fetchone()
            if not row:
                raise NotFound(f"no model version {name} v{version}")
            tags = db.execute("SELECT key, value FROM model_version_tags WHERE name = ? AND version = ? AND workspace = ?",
                              (name, row[1], _WORKSPACE))
            aliases = db.execute("SELECT alias FROM registered_model_aliases WHERE name = ? AND version = ? AND workspace = ? "
                                 "ORDER BY alias", (name, row[1], _WORKSPACE))
            return Version(row[0], str(row[1]), row[2] or "", row[3] or "", {k: v or "" for k, v in tags}, tuple(a for (a,) in aliases))

    def model_version_by_alias(self, name: str, alias: str) -> Version:
        with self._db() as db:
            row = db and db.execute("SELECT version FROM registered_model_aliases WHERE name = ? AND alias = ? AND workspace = ?",
                                    (name, alias, _WORKSPACE)).fetchone()
        if not row:
            raise NotFound(f"no alias {name}@{alias}")
        return self.model_version(name, str(row[0]))

    _RUN = ("SELECT r.run_uuid, r.name, r.status, r.experiment_id, r.artifact_uri, r.start_time, r.end_time FROM runs r "
            "JOIN experiments e ON e.experiment_id = r.experiment_id")
    #: What a search sees (MLflow's ACTIVE_ONLY); a run by id is found deleted or not.
    _ACTIVE = " WHERE r.lifecycle_stage = 'active' AND e.lifecycle_stage = 'active'"

    def _runs(self, db: sqlite3.Connection, rows: list[tuple]) -> list[Run]:
        out = []
        for run_id, name, status, exp, uri, start, end in rows:
            tags = {k: v or "" for k, v in db.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,))}
            params = {k: v or "" for k, v in db.execute("SELECT key, value FROM params WHERE run_uuid = ?", (run_id,))}
            out.append(Run(run_id, name or "", status, str(exp), uri or "", start, end, tags, params))
        return out

    def run(self, run_id: str) -> Run:
        """A run by id, deleted or not (as MLflow's ``get_run``)."""
        with self._db() as db:
            rows = db.execute(self._RUN + " WHERE r.run_uuid = ?", (run_id,)).fetchall() if db else []
            if not rows:
                raise NotFound(f"no run {run_id}")
            return self._runs(db, rows)[0]

    def find_runs(self, tags: dict[str, str], status: str | None = None, limit: int | None = None) -> list[Run]:
        """Active runs of active experiments carrying every tag in ``tags`` (and ``status``),
        newest first (MLflow's default order: start time, then run id)."""
        sql, args = self._RUN + self._ACTIVE, []
        for key, value in tags.items():
            sql += " AND EXISTS (SELECT 1 FROM tags t WHERE t.run_uuid = r.run_uuid AND t.key = ? AND t.value = ?)"
            args += [key, value]
        if status is not None:
            sql += " AND r.status = ?"
            args.append(status)
        sql += " ORDER BY r.start_time DESC, r.run_uuid"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._db() as db:
            return self._runs(db, db.execute(sql, args).fetchall()) if db else []


class MlflowReader:
    """The same reads through ``MlflowClient`` (a tracking server, or ``--mlflow``)."""

    def __init__(self, uri: str):
        from mavin_ops import tracking

        self.client = tracking.client(uri)

    @staticmethod
    def _missing():
        from mlflow.exceptions import MlflowException

        return MlflowException

    def _version(self, mv) -> Version:
        return Version(mv.name, str(mv.version), mv.source or "", mv.run_id or "", dict(mv.tags), tuple(sorted(mv.aliases or ())))

    def model_tags(self, name: str) -> dict[str, str]:
        try:
            return dict(self.client.get_registered_model(name).tags)
        except self._missing():
            raise NotFound(f"no registered model '{name}'") from None

    def model_version(self, name: str, version: str) -> Version:
        try:
            return self._version(self.client.get_model_version(name, str(version)))
        except self._missing():
            raise NotFound(f"no model version {name} v{version}") from None

    def model_version_by_alias(self, name: str, alias: str) -> Version:
        try:
            return self._version(self.client.get_model_version_by_alias(name, alias))
        except self._missing():
            raise NotFound(f"no alias {name}@{alias}") from None

    @staticmethod
    def _run(r) -> Run:
        return Run(r.info.run_id, r.info.run_name or "", r.info.status, str(r.info.experiment_id), r.info.artifact_uri or "",
                   r.info.start_time, r.info.end_time, dict(r.data.tags), dict(r.data.params))

    def run(self, run_id: str) -> Run:
        try:
            return self._run(self.client.get_run(run_id))
        except self._missing():
            raise NotFound(f"no run {run_id}") from None

    def find_runs(self, tags: dict[str, str], status: str | None = None, limit: int | None = None) -> list[Run]:
        def quoted(value: str) -> str:
            return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

        terms = [f"tags.`{k}` = {quoted(v)}" for k, v in tags.items()] + ([f"attributes.status = {quoted(status)}"] if status is not None else [])
        experiments = [e.experiment_id for e in self.client.search_experiments()]
        if not experiments:
            return []
        runs = self.client.search_runs(experiments, filter_string=" and ".join(terms), max_results=limit or 1000,
                                       order_by=["attributes.start_time DESC"])
        return [self._run(r) for r in runs]
