"""The `train` KFP component: the function itself, and a two-stage chain under the local runner.

(No `from __future__ import annotations` here: KFP reads the pipeline's annotations as types.)"""


from pathlib import Path

import pytest
from kfp import dsl

from mavin_ops.components.train.component import train
from mavin_ops.training import checkpoint as ckpt
from train_helpers import RANK_VARS, stage_runs


def test_component_chains_two_stages_through_checkpoint_artifacts(debug_dataset, tmp_path):
    ds = dsl.Dataset(uri=str(debug_dataset))
    first = dsl.Model(uri=str(tmp_path / "ck-id"))
    out = train.python_func(stage="id", preset="debug", dataset=ds, dataset_digest="", release_id="rel-comp", kfp_run_id="", checkpoint=first, steps=2)
    assert out.step == 2 and out.run_id and out.checkpoint_sha256 == ckpt.CheckpointInfo(Path(first.path), 2, {}).manifest_sha256
    assert ckpt.verify_checkpoint(first.path)["step"] == 2
    assert first.metadata["stage"] == "id" and first.metadata["step"] == 2 and first.metadata["mlflow_run_id"] == out.run_id

    second = dsl.Model(uri=str(tmp_path / "ck-ms"))
    out2 = train.python_func(
        stage="multishot", preset="debug", dataset=ds, dataset_digest="", release_id="rel-comp", kfp_run_id="",
        checkpoint=second, parent_checkpoint=first, steps=2,
    )
    assert out2.step == 2 and second.metadata["parent_checkpoint"] == first.path
    [run] = stage_runs("train_multishot")
    assert run.info.status == "FINISHED" and run.data.params["parent_checkpoint"] == first.path
    # a retried task resumes from the work folder instead of training again
    again = train.python_func(
        stage="multishot", preset="debug", dataset=ds, dataset_digest="", release_id="rel-comp", kfp_run_id="",
        checkpoint=dsl.Model(uri=str(tmp_path / "ck-ms2")), parent_checkpoint=first, steps=2,
    )
    assert again.checkpoint_sha256 == out2.checkpoint_sha256


@pytest.mark.slow
def test_local_runner_runs_id_then_multishot(debug_dataset, tmp_path, monkeypatch):
    from kfp import local

    for var in RANK_VARS:  # an earlier in-process run must not leak a rank into the components
        monkeypatch.delenv(var, raising=False)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))

    @dsl.pipeline(name="train-chain")
    def chain(data_uri: str) -> dsl.Model:
        imported = dsl.importer(artifact_uri=data_uri, artifact_class=dsl.Dataset, reimport=False)
        a = train(stage="id", preset="debug", dataset=imported.output, dataset_digest="", release_id="rel-local", kfp_run_id="", steps=2)
        b = train(
            stage="multishot", preset="debug", dataset=imported.output, dataset_digest="", release_id="rel-local", kfp_run_id="",
            parent_checkpoint=a.outputs["checkpoint"], steps=2,
        )
        return b.outputs["checkpoint"]

    task = chain(data_uri=str(debug_dataset))
    meta = ckpt.load_json(task.output.path, "meta.json")
    assert meta["stage"] == "multishot" and meta["complete"] and meta["init_checkpoint"]
    assert [r.info.status for r in stage_runs("train_id")] == ["FINISHED"]


def test_component_compiles_with_an_optional_parent_checkpoint(tmp_path):
    import yaml
    from kfp import compiler

    compiler.Compiler().compile(train, str(tmp_path / "train.yaml"))
    spec = yaml.safe_load((tmp_path / "train.yaml").read_text())["root"]
    arts = spec["inputDefinitions"]["artifacts"]
    assert arts["parent_checkpoint"]["isOptional"] and arts["parent_checkpoint"]["artifactType"]["schemaTitle"] == "system.Model"
    assert "isOptional" not in arts["dataset"]
    assert set(spec["outputDefinitions"]["parameters"]) == {"step", "final_loss", "checkpoint_sha256", "run_id"}
    assert set(spec["outputDefinitions"]["artifacts"]) == {"checkpoint"}
