"""The whole release pipeline through the KFP local runner on the debug preset (a few
training steps): pass branch (export, publish, real tritonserver smoke test, register,
promote) with every stage trained on two local processes (checked against one process with
the same global batch), then a failing gate that leaves the champion and the served version
untouched, then the state folder moved."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mavin_ops import lineage, registry, settings
from mavin_ops.release import run_release

sys.path.insert(0, str(Path(__file__).resolve().parent))  # release_support

from release_support import DEBUG_RELEASE, check_release_page, lenient_policy  # noqa: E402


def check_two_process_training(result, home: Path, work: Path) -> None:
    """Both ranks trained every stage, held identical parameters at every checkpoint, and the
    final checkpoint equals (within float tolerance) the same four stages in one process
    accumulating two micro-batches per step (same global batch, seed, clips and noise)."""
    from mavin_ops.training import checkpoint as ckpt
    from mavin_ops.training.launch import StageLaunch, launch
    from mavin_ops.training.recipes import STAGES

    logs = Path(result.folder) / "logs"
    for stage in STAGES:
        text = (logs / f"train_{stage}.log").read_text()
        assert "[rank 0]" in text and "[rank 1]" in text, f"train_{stage}: not both ranks"
        steps = ckpt.checkpoint_dirs(home / "runs" / result.release_id / "train" / stage)
        assert steps, stage
        for _, path in steps:  # every checkpoint kept: sharded, both ranks' parameters hashed equal
            meta = ckpt.load_json(path, "meta.json")
            assert meta["world_size"] == 2 and meta["optimizer_form"] == "sharded"
            assert len(meta["rank_param_sha256"]) == 2 and len(set(meta["rank_param_sha256"])) == 1
    final = ckpt.find_resumable(home / "runs" / result.release_id / "train" / "joint", log=None)
    validated = next(Path(result.pipeline_dir).rglob("validated/manifest.jsonl")).parent  # what the release trained on
    previous = settings.local_path(result.tags["mavin.base_checkpoint"])  # the id stage fine-tunes the same base
    for stage in STAGES:
        one = launch(StageLaunch(stage, "debug", dataset=str(validated), out_dir=str(work / stage), steps=DEBUG_RELEASE["train_steps"],
                                 accum=2, init_checkpoint=previous, track=False))
        previous = one.checkpoint
    a, b = ckpt.load_tensors(previous, "model.safetensors"), ckpt.load_tensors(final, "model.safetensors")
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max() / (a[k].abs().max() + 1e-12)) for k in a if a[k].is_floating_point())
    assert worst < 1e-4, f"largest relative parameter difference against one process: {worst:.2e}"


def c_list(run_id: str, path: str) -> list:
    return MlflowClient(settings.tracking_uri()).list_artifacts(run_id, path)


@pytest.mark.server
def test_release_promotes_then_failed_gate_changes_nothing(tmp_path, isolated_home, monkeypatch, capfd):
    secret = "sk-test-secret-0123456789"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    # The foundation pipeline makes the base these releases fine-tune (mavin-base@champion).
    from mavin_ops.pretrain import run_pretrain

    base = run_pretrain("debug", 1000, steps=2, sample_limit=1, sample_steps=1, run_id="pretrain-test", echo=None)
    assert base.succeeded, base.error
    assert base.version == "1" and registry.champion_version("mavin-base") == "1" and "eval/sta" in base.metrics
    common = dict(**DEBUG_RELEASE, model_name="mavin-debug", base="mavin-base@champion")
    terminal, said = io.StringIO(), []
    # The first release trains every stage on two local processes (torchrun, gloo).
    first = run_release(gate_policy=lenient_policy(tmp_path), terminal=terminal, train_procs=2, **{**common, "echo": said.append})
    assert first.succeeded, first.error
    # Quiet by default: a line per step and the summary fit on one screen; the logs are in files.
    shown = terminal.getvalue().splitlines() + said
    assert len(shown) <= 40, "\n".join(shown)
    step_lines = [x for x in terminal.getvalue().splitlines() if x.startswith("  ")]
    names = [x.split()[0] for x in step_lines]
    assert names[:3] == ["generate_data", "version_data", "validate_data"] and "train_multishot" in names, names
    assert not any("-2" in n or "Executing" in x for n, x in zip(names, step_lines)), step_lines
    train = next(x for x in step_lines if x.split()[0] == "train_joint")
    assert train.split()[1] == "ok" and "final loss" in train
    gate_line = next(x for x in step_lines if x.split()[0] == "evaluate")
    assert "STA " in gate_line and "VC " in gate_line
    logs = Path(first.folder) / "logs"
    assert (logs / "train_multishot.log").is_file() and "final_loss" in (logs / "train_multishot.log").read_text()
    # The report page: every link resolves offline, every run it names exists, the picture is there.
    page = Path(first.page)
    assert page == Path(first.folder) / "release.html" and f"  report page      : {page}" in said
    found = check_release_page(page)
    assert first.parent_run_id in found["runs"] and len(set(found["runs"])) >= 10
    assert any(x.endswith("loss.png") for x in found["srcs"]) and any(x.endswith("summary.png") for x in found["srcs"])
    assert any(x.endswith("train_multishot.log") for x in found["hrefs"]) and any(x.endswith("gate.html") for x in found["hrefs"])
    (docs,) = {x for x in found["hrefs"] if x.endswith("data_docs/index.html")}  # the Data Docs it links work offline too
    import re

    assert not re.search(r"""<(?:link|script|img)\b[^>]*\b(?:href|src)=["']https?://""", (page.parent / docs).read_text())
    html_text = page.read_text()
    for words in ("train_multishot", "gate pass", "serving_smoke_test", "validation.json"):
        assert words in html_text, words
    assert "release/release.html" in [a.path for a in c_list(first.parent_run_id, "release")]
    record = json.loads((Path(first.folder) / "release.json").read_text())
    assert [s["name"] for s in record["attempts"][0]["steps"]][:2] == ["generate_data", "version_data"]
    steps = [s["name"] for s in first.steps]
    assert steps[-4:] == ["export_model", "publish_model", "serving_smoke_test", "register_model"], steps
    assert first.tags["mavin.verdict"] == "promoted"
    assert steps[:3] == ["generate_data", "version_data", "validate_data"]
    c = MlflowClient(settings.tracking_uri())
    runs = {s["name"]: c.get_run(s["run_id"]) for s in first.steps}
    assert all(r.info.status == "FINISHED" for r in runs.values())
    assert c.get_run(first.parent_run_id).info.status == "FINISHED"
    digest = first.tags["mavin.dataset_digest"]
    assert digest.endswith(".dir") and first.tags["mavin.dataset_tag"] == "mavinset-mini-v1"
    inputs = runs["version_data"].inputs.dataset_inputs
    assert inputs and inputs[0].dataset.digest == digest[:36] and inputs[0].dataset.name == "mavinset-mini"
    local = Path(c.download_artifacts(runs["validate_data"].info.run_id, "validation", str(tmp_path / "dl")))
    summary = json.loads((local / "validation.json").read_text())
    assert summary["rows"] == 6 and summary["quarantined"] == 0 and summary["passed"] is True
    assert "mlflow ui --backend-store-uri" in "\n".join(first.lines())
    # MLflow tells the story: a classic ML experiment; the parent run has the release's options
    # as params, the headline metrics and MLflow's own source commit tag.
    parent = c.get_run(first.parent_run_id)
    assert c.get_experiment(parent.info.experiment_id).tags.get("mlflow.experimentKind") == "custom_model_development"
    assert parent.data.params["preset"] == "debug" and parent.data.params["train_steps"] == "2"
    assert "eval/sta" in parent.data.metrics and "gate/passed" in parent.data.metrics and "data/rows" in parent.data.metrics
    assert parent.data.tags["mlflow.source.git.commit"] == parent.data.tags["mavin.git_commit"]
    assert digest[:36] in {d.dataset.digest for d in parent.inputs.dataset_inputs}  # the training data as the parent's input
    # Credentials from the environment never reach params, tags or the pipeline's outputs.
    for run in [c.get_run(first.parent_run_id), *runs.values()]:
        assert secret not in repr(run.data.params) and secret not in repr(run.data.tags)
    for path in Path(first.pipeline_dir).rglob("*"):
        if path.is_file() and path.stat().st_size < 5_000_000:
            assert secret.encode() not in path.read_bytes(), path
    # ... nor the step logs the local runner prints (every step's stdout and stderr), which go to files.
    text = "".join(p.read_text() for p in logs.rglob("*.log"))
    assert "executor_main" in text or "generate" in text  # the logs were captured
    assert secret not in text and secret not in terminal.getvalue()
    champion = registry.champion_version("mavin-debug")
    assert champion == "1"
    mv = c.get_model_version("mavin-debug", "1")  # linked to the run it came from, with the gate's numbers
    assert mv.run_id == runs["train_joint"].info.run_id and "sta " in mv.tags["mavin.gate_summary"]
    chain = lineage.lineage("mavin-debug@champion")
    assert [link.kind for link in chain][:3] == ["served", "model", "release"]
    assert chain[0].title.endswith("version 1") and not chain[0].missing
    assert sum(link.kind == "train" for link in chain) == 4
    assert next(x for x in chain if x.kind == "dataset").facts["DVC digest"] == first.tags["mavin.dataset_digest"]
    # ... and on through the base the id stage fine-tuned, to the foundation world it learnt.
    assert first.tags["mavin.base"] == "mavin-base@1"
    assert runs["train_id"].data.params["parent_checkpoint"] == first.tags["mavin.base_checkpoint"]
    walked = [x.title for x in chain if x.kind == "base"]
    assert walked[0].startswith("base mavin-base v1") and any(t.startswith("base train_base") for t in walked), walked
    assert any(t.startswith("base dataset mavinset-base-v1") for t in walked) and any("base validation" in t for t in walked), walked
    # What `make release` ends with: the served champion answers the generate client.
    from mavin_ops.cli import main

    assert main(["smoke", "--name", "mavin-debug", "--steps", "2", "--out", str(tmp_path / "served")]) == 0
    assert (tmp_path / "served" / "smoke.mp4").stat().st_size > 0
    check_two_process_training(first, isolated_home, tmp_path / "one-process")

    strict = tmp_path / "strict.yaml"
    strict.write_text("version: 1\nmetrics:\n  sta: {min: 1.5}\n")  # unreachable: STA <= 1
    second = run_release(gate_policy=str(strict), **common)
    assert second.succeeded, second.error  # a failed gate is a successful run ...
    assert second.tags["mavin.verdict"] == "not promoted"  # ... that promotes nothing
    assert "sta" in second.tags["mavin.verdict_reason"]
    assert "export_model" not in [s["name"] for s in second.steps]
    assert registry.champion_version("mavin-debug") == champion
    assert [r.to_version for r in registry.history("mavin-debug")] == ["1"]
    store = isolated_home / "model-store" / "mavin-debug"
    assert sorted(p.name for p in store.iterdir() if not p.name.startswith(".")) == ["1"]
    # `mavin-ops releases`: newest first, with the verdict and the champion before and after.
    capfd.readouterr()
    assert main(["releases", "--json"]) == 0
    listed = json.loads(capfd.readouterr().out)
    assert [r["release_id"] for r in listed] == [second.release_id, first.release_id]
    assert (listed[0]["verdict"], listed[0]["champion_before"], listed[0]["champion_after"]) == ("not promoted", "1", "1")
    assert (listed[1]["verdict"], listed[1]["champion_before"], listed[1]["champion_after"]) == ("promoted", None, "1")
    assert listed[0]["page"] == second.page and Path(listed[1]["page"]).is_file()
    assert main(["releases"]) == 0
    table = capfd.readouterr().out.splitlines()
    assert table[1].startswith(second.release_id) and "none -> v1" in table[2]

    # The state folder can move: from the new place (the old one is gone) lineage, verify,
    # the release list, the report page and serving all work, and nothing stored in MLflow
    # or the data registry's DVC config names the old place.
    from test_state_folder import move_home, stored_mentions

    old = str(isolated_home)
    new = move_home(isolated_home, tmp_path / "moved" / "home", monkeypatch)
    assert stored_mentions(new / "mlflow.db", old) == []
    assert old not in (new / "data-registry" / ".dvc" / "config").read_text()
    chain = lineage.lineage("mavin-debug@champion")
    assert not chain[0].missing and sum(link.kind == "train" for link in chain) == 4
    assert main(["verify", "mavin-debug"]) == 0
    capfd.readouterr()
    assert main(["releases", "--json"]) == 0
    moved = json.loads(capfd.readouterr().out)
    assert [r["release_id"] for r in moved] == [second.release_id, first.release_id]
    assert all(Path(r["page"]).is_file() and r["page"].startswith(str(new)) for r in moved)
    assert check_release_page(Path(moved[1]["page"]))["runs"]
    assert "release/release.html" in [a.path for a in c_list(first.parent_run_id, "release")]
    assert main(["smoke", "--name", "mavin-debug", "--steps", "2", "--out", str(tmp_path / "served-moved")]) == 0
