"""mavin_ops/reader.py against MLflow's own client on a small store built with MLflow: the
same records either way, whatever the store holds (deleted runs and versions, odd names)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mavin_ops.reader import MlflowReader, NotFound, SqliteReader, local_artifact


def uri(db: Path) -> str:
    """The tracking URI of ``db``, its ?, # and % escaped as SQLAlchemy reads them."""
    return f"sqlite:///{db.as_posix().replace('%', '%25').replace('?', '%3F').replace('#', '%23')}"


@pytest.fixture
def store(tmp_path_factory) -> Path:
    """A store whose file name holds ?, # and % (read-only URIs must quote them)."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("odd")
    db = folder / "m?x#1%41.db"
    c = MlflowClient(uri(db))
    e = c.create_experiment("x")
    keep = c.create_run(e, tags={"mavin.step": "pipeline", "k": "v"})
    gone = c.create_run(e, tags={"mavin.step": "pipeline", "k": "v"})
    c.delete_run(gone.info.run_id)
    c.set_terminated(keep.info.run_id, "FAILED")
    c.create_registered_model("m")
    for _ in range(2):
        c.create_model_version("m", "/src", run_id=keep.info.run_id, tags={"t": "1"})
    c.set_registered_model_alias("m", "champion", "2")
    c.delete_model_version("m", "1")
    return db


def test_both_readers_agree_on_a_store_with_deleted_runs_and_versions(store):
    fast, slow = SqliteReader(store), MlflowReader(uri(store))
    assert fast.model_version_by_alias("m", "champion") == slow.model_version_by_alias("m", "champion")
    for version in ("1", "²", "x"):  # deleted, a digit that is not a number, not a number
        for reader in (fast, slow):
            with pytest.raises(NotFound):
                reader.model_version("m", version)
    runs = slow.find_runs({"k": "v"})
    assert fast.find_runs({"k": "v"}) == runs and len(runs) == 1  # the deleted run is not searched
    for status in ("FAILED", "RUNNING", ""):
        assert fast.find_runs({"k": "v"}, status=status) == slow.find_runs({"k": "v"}, status=status)
    assert not store.with_name("m").exists()  # read-only: no stray file from a cut-short name


def test_a_run_artifact_outside_the_state_folder_is_not_read_locally(isolated_home):
    """A run's recorded artifact location is only a record: /etc never becomes a champion's metrics."""
    from mavin_ops.reader import Run

    class Store:
        def run(self, run_id):
            return Run(run_id, "", "FINISHED", "0", "/etc", 0, None)

    assert Path("/etc/passwd").is_file() and local_artifact(Store(), "runs:/r1/passwd") is None
