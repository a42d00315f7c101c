"""The state folder ($MAVIN_HOME) can move: what the platform stores about a file under it
names it relative to the folder (``mavin-home:/...``), MLflow reads such artifact URIs
through the platform's artifact repository, the data registry keeps its local DVC remote
relative, and the KFP local runner's cache is pointed at the new place on the next release.
Each test moves a real folder and works from the new place only (the old one is gone)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from mavin_ops import settings, tracking
from mavin_ops.release import rebase_cache


def move_home(old: Path, new: Path, monkeypatch) -> Path:
    """Move the state folder and point this process at the new place."""
    shutil.move(str(old), str(new))
    monkeypatch.setenv("MAVIN_HOME", str(new))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{new / 'mlflow.db'}")
    assert not old.exists()
    return new


def stored_mentions(db: Path, text: str) -> list[str]:
    """Every (table.column: value) of the MLflow database that mentions ``text``."""
    con = sqlite3.connect(db)
    try:
        found = []
        for (table,) in con.execute("select name from sqlite_master where type='table'"):
            for col in [r[1] for r in con.execute(f"pragma table_info('{table}')")]:
                for (value,) in con.execute(f"select cast(\"{col}\" as text) from '{table}' where cast(\"{col}\" as text) like ?", (f"%{text}%",)):
                    found.append(f"{table}.{col}: {value[:120]}")
        return found
    finally:
        con.close()


def test_portable_names_a_path_under_the_home_relative_to_it(isolated_home):
    isolated_home.mkdir(parents=True, exist_ok=True)
    inside = isolated_home / "runs" / "r1" / "train" / "id"
    assert settings.portable(inside) == "mavin-home:/runs/r1/train/id"
    assert settings.local_path("mavin-home:/runs/r1/train/id") == inside.resolve()
    assert settings.portable("/elsewhere/x") == "/elsewhere/x"  # outside the home: unchanged
    assert settings.portable("s3://bucket/x") == "s3://bucket/x" and settings.portable("") == ""
    assert settings.portable("sta 0.75 /x") == "sta 0.75 /x"  # not a path
    for hostile in ("mavin-home:/../etc/passwd", "mavin-home:/runs/../../x"):
        with pytest.raises(ValueError, match="leaves the state folder"):
            settings.local_path(hostile)


def test_artifacts_and_registry_survive_a_move(tmp_path, isolated_home, monkeypatch):
    from mavin_ops import registry

    c = tracking.client()
    run = c.create_run(tracking.experiment_id())
    (tmp_path / "report.json").write_text('{"ok": true}')
    c.log_artifact(run.info.run_id, str(tmp_path / "report.json"), "gate")
    c.set_terminated(run.info.run_id)
    ckpt = isolated_home / "pipelines" / "p1" / "train" / "checkpoint"
    ckpt.mkdir(parents=True)
    version = registry.register_version("m", str(ckpt), run_id=run.info.run_id,
                                        tags={"mavin.gate_report": str(isolated_home / "pipelines" / "p1" / "gate.json")})
    old = str(isolated_home)

    new = move_home(isolated_home, tmp_path / "elsewhere" / "home", monkeypatch)
    assert stored_mentions(new / "mlflow.db", old) == []  # nothing names the old place
    c = tracking.client()
    got = Path(c.download_artifacts(run.info.run_id, "gate/report.json", str(tmp_path / "dl")))
    assert json.loads(got.read_text()) == {"ok": True}
    mv = c.get_model_version("m", version)
    assert settings.local_path(mv.source) == (new / "pipelines" / "p1" / "train" / "checkpoint").resolve()
    assert settings.local_path(mv.source).is_dir()
    # The artifacts a run logs after the move land in the moved folder.
    run2 = c.create_run(tracking.experiment_id())
    c.log_artifact(run2.info.run_id, str(tmp_path / "report.json"))
    assert (new / "mlartifacts" / run2.info.run_id / "artifacts" / "report.json").is_file()


def test_mlflow_ui_style_reader_finds_artifacts_from_the_database_path_alone(tmp_path, isolated_home, monkeypatch):
    """`mlflow ui --backend-store-uri sqlite:////<home>/mlflow.db` run from anywhere without
    $MAVIN_HOME: the artifact repository takes the home from the database's folder."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    c = tracking.client()
    run = c.create_run(tracking.experiment_id())
    (tmp_path / "a.txt").write_text("hi")
    c.log_artifact(run.info.run_id, str(tmp_path / "a.txt"))
    new = move_home(isolated_home, tmp_path / "moved", monkeypatch)
    monkeypatch.delenv("MAVIN_HOME")
    monkeypatch.chdir(tmp_path)  # ./.mavin would be the wrong place
    repo = get_artifact_repository(run.info.artifact_uri, tracking_uri=f"sqlite:///{new / 'mlflow.db'}")
    assert [f.path for f in repo.list_artifacts()] == ["a.txt"]


def test_data_registry_and_its_local_remote_move_together(tmp_path, isolated_home, monkeypatch):
    from test_versioning import make_dataset, tree_digest

    from mavin_ops.data.versioning import pull_version, resolve_version, version_dataset

    v1 = version_dataset(make_dataset(tmp_path / "ds"))
    config = (isolated_home / "data-registry" / ".dvc" / "config").read_text()
    assert str(isolated_home) not in config and "../../dvc-remote" in config
    new = move_home(isolated_home, tmp_path / "moved", monkeypatch)
    v = resolve_version(rev=v1.tag)
    assert Path(v.remote) == new / "dvc-remote"
    pulled = pull_version(str(new / "data-registry"), v1.tag, tmp_path / "node")  # a clone elsewhere pulls from it
    assert tree_digest(pulled) == tree_digest(make_dataset(tmp_path / "again"))
    v2 = version_dataset(make_dataset(tmp_path / "ds2", b"other"))  # and versioning goes on there
    assert v2.tag.endswith("-v2") and (new / "dvc-remote" / "files").is_dir()


def test_rebase_cache_points_cached_outputs_at_the_moved_folder(tmp_path):
    root = tmp_path / "new" / "pipelines"
    out = root / "mavin-release-1" / "train" / "checkpoint"
    out.mkdir(parents=True)
    cache = root / ".kfp_cache"
    cache.mkdir()
    entry = {"Output": 2, "checkpoint": {"__kfp_artifact__": True, "name": "checkpoint",
                                         "uri": str(tmp_path / "old" / "pipelines" / "mavin-release-1" / "train" / "checkpoint")},
             "gone": {"__kfp_artifact__": True, "uri": str(tmp_path / "old" / "pipelines" / "mavin-release-1" / "x" / "missing")},
             "escape": {"__kfp_artifact__": True, "uri": str(tmp_path / "old" / "pipelines") + "/../../outside"}}
    (tmp_path / "outside").mkdir()
    (cache / "a.json").write_text(json.dumps(entry))
    (cache / "broken.json").write_text('{"Output": ')  # a torn file is not ours to repair
    assert rebase_cache(root) == 1
    got = json.loads((cache / "a.json").read_text())
    assert got["checkpoint"]["uri"] == str(out) and got["Output"] == 2
    assert got["gone"]["uri"] == entry["gone"]["uri"]  # resolves nowhere: left for the runner to redo
    assert got["escape"]["uri"] == entry["escape"]["uri"]  # would leave the pipelines folder: left alone
    assert (cache / "broken.json").read_text() == '{"Output": '
    assert rebase_cache(root) == 0  # nothing left to do
