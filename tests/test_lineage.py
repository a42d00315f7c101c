"""`mavin-ops lineage`: from a model version back through the release's runs to the
dataset version and the commit, read from a real MLflow store."""

from __future__ import annotations

import pytest
from ledger_support import gated_version

from mavin_ops import lineage, registry, tracking
from mavin_ops.cli import main


def fake_release(release_id: str) -> None:
    """A release's MLflow footprint, written with the same helpers the components use."""
    with tracking.step_run(release_id, "", "version_data"):
        parent = tracking.parent_run(release_id)
        tracking.client().set_tag(parent, "mavin.dataset_digest", "abc123.dir")
        tracking.client().set_tag(parent, "mavin.dataset_tag", "mavinset-mini-v4")
        tracking.client().set_tag(parent, "mavin.dataset_commit", "f00d")
    with tracking.step_run(release_id, "", "validate_data"):
        pass
    import mlflow

    with tracking.step_run(release_id, "", "train_joint", {"parent_checkpoint": "sha-of-av"}):
        mlflow.set_tag("mavin.checkpoint_sha256", "sha-of-joint")
    tracking.close_parent_run(release_id, "", "SUCCEEDED")


def test_lineage_walks_from_served_version_to_commit(tmp_path, capsys):
    fake_release("rel-1")
    v = gated_version("m", triton=3, source="/ckpt/joint", release="rel-1", tags={"mavin.gate_report": "/g.json"})
    registry.promote("m", v, reason="first")
    chain = lineage.lineage("m@champion")
    kinds = [link.kind for link in chain]
    assert kinds == ["served", "model", "release", "train", "validation", "dataset", "code"]
    assert chain[0].title.endswith("version 3") and not chain[0].missing
    assert chain[1].facts["gate"] == "pass" and "champion" in chain[1].title
    assert chain[2].title.startswith("release rel-1 [FINISHED]")
    assert chain[3].facts["checkpoint sha256"] == "sha-of-joint" and chain[3].facts["parent checkpoint"] == "sha-of-av"
    assert chain[5].facts["DVC digest"] == "abc123.dir" and "mavinset-mini-v4" in chain[5].title
    commit, _ = tracking.git_commit()
    assert chain[6].facts["commit"] == commit
    assert main(["lineage", "m@1", "--html", str(tmp_path / "l.html")]) == 0
    out = capsys.readouterr().out
    assert "abc123.dir" in out and "sha-of-joint" in out
    page = (tmp_path / "l.html").read_text()
    assert page.count("<rect") == 7 and page.count("marker-end") == 6 and "abc123.dir" in page


def test_missing_links_are_shown_not_invented():
    v = registry.register_version("m", "/ckpt", tags={"mavin.gate": "pass", "mavin.release_id": "nope"})
    chain = lineage.lineage(f"m@{v}")
    assert chain[0].missing and chain[-1].missing and chain[-1].kind == "release"


def test_bad_reference_is_a_clear_error(capsys):
    with pytest.raises(lineage.LineageError, match="<model>@<alias|version>"):
        lineage.lineage("m")
    assert main(["lineage", "ghost@champion"]) == 2
    assert "no model version ghost@champion" in capsys.readouterr().err


def test_training_stages_are_listed_in_recipe_order_walking_back():
    """joint <- av <- multishot <- id, whatever order the runs started or sort in."""
    for stage in ("av", "id", "joint", "multishot"):
        with tracking.step_run("rel-order", "", f"train_{stage}"):
            pass
    tracking.close_parent_run("rel-order", "", "SUCCEEDED")
    v = registry.register_version("m", "/ckpt", tags={"mavin.gate": "pass", "mavin.release_id": "rel-order"})
    titles = [link.title.split()[0] for link in lineage.lineage(f"m@{v}") if link.kind == "train"]
    assert titles == ["train_joint", "train_av", "train_multishot", "train_id"]


def test_git_queries_have_a_timeout(monkeypatch):
    import subprocess

    seen = []

    def hung(cmd, **kw):
        seen.append(kw.get("timeout"))
        raise subprocess.TimeoutExpired(cmd, kw.get("timeout"))

    monkeypatch.setattr(subprocess, "run", hung)
    assert tracking.git_commit() == ("unknown", False)
    assert seen == [tracking.GIT_TIMEOUT_S]


@pytest.mark.parametrize("mlflow", [False, True])
def test_a_quote_in_the_release_id_tag_is_looked_up_as_text(mlflow, capsys):
    """A hand-edited ``mavin.release_id`` with a quote (or a filter of its own) finds no
    release and says so; it never crashes the walk or matches another release's runs."""
    fake_release("rel-1")
    for n, hostile in enumerate(["x' or tags.`mavin.step` = 'pipeline", "it's"], start=1):
        registry.register_version("q", "/c", tags={"mavin.release_id": hostile})
        argv = ["lineage", f"q@{n}", "--json"] + (["--mlflow"] if mlflow else [])
        assert main(argv) == 0
        import json

        chain = json.loads(capsys.readouterr().out)
        release = next(link for link in chain if link["kind"] == "release")
        assert release["missing"] and "not found" in release["title"]


def test_the_page_escapes_what_it_read_from_mlflow(tmp_path):
    """Tags are anyone's to write: a title or fact with markup is shown as text."""
    chain = [lineage.Link("model", "<script>alert(1)</script>", {"tag": "<img src=x onerror=alert(2)>", "empty": ""}),
             lineage.Link("release", "r1", {}, missing=True)]
    page = lineage.render_html(chain, tmp_path / "l.html", title="a & b").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page and "<img" not in page and "&lt;img" in page
    assert "<title>a &amp; b</title>" in page and "empty:" not in page
    assert page.count("<rect") == 2 and page.count("marker-end") == 1 and page.count('stroke-dasharray="6,4"') == 1
