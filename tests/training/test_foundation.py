"""The foundation model a release fine-tunes (mavin_ops/foundation.py): the shipped base's card
and weights agree, it registers once as ``mavin-base``, a base checkpoint named by path is
registered too, and the id stage starts from a base and nothing else."""

from __future__ import annotations

import json
import shutil

import pytest

from mavin_ops import foundation, registry
from mavin_ops.training import checkpoint as ckpt
from mavin_ops.training.recipes import needs_base
from mavin_ops.training.trainer import TrainError, train_stage


def test_the_shipped_tiny_base_matches_its_card_and_registers_once(tmp_path):
    found = foundation.shipped("tiny")
    assert found is not None, "training/bases/tiny.safetensors is the base every tiny release fine-tunes"
    weights, card = found
    assert needs_base("tiny") and not needs_base("debug")
    # The card says how to reproduce it and what it read.
    assert card["stage"] == "base" and card["preset"] == "tiny" and card["step"] > 0
    assert card["command"] and card["data"]["seed"] >= 1000 and card["dataset_digest"]
    first = foundation.resolve("", "tiny")
    again = foundation.resolve("", "tiny")
    assert first.ref == again.ref == f"{foundation.BASE_MODEL}@1" and registry.alias_version(foundation.BASE_MODEL) == "1"
    assert first.checkpoint == again.checkpoint and first.sha256 == card["sha256"]
    # The trainer's form of it is the same bytes, under the atomic checkpoint protocol.
    info = ckpt.CheckpointInfo(first.checkpoint, card["step"], ckpt.verify_checkpoint(first.checkpoint))
    assert info.manifest["files"]["model.safetensors"]["sha256"] == card["sha256"]
    meta = ckpt.load_json(info, "meta.json")
    assert meta["stage"] == "base" and meta["complete"] and meta["model"] == card["model"]
    # A version named by number or alias resolves to the same folder.
    assert foundation.resolve("1", "tiny").checkpoint == foundation.resolve("mavin-base@champion", "tiny").checkpoint == first.checkpoint
    # Weights that do not match their card are refused with one line naming the file.
    bad = tmp_path / "tiny.safetensors"
    shutil.copyfile(weights, bad)
    shutil.copyfile(weights.with_suffix(".json"), bad.with_suffix(".json"))
    with open(bad, "r+b") as fh:
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 1]))
    with pytest.raises(foundation.BaseError, match="tiny.safetensors have sha256"):
        foundation.resolve(str(bad), "tiny")
    with pytest.raises(foundation.BaseError, match="is a 'tiny' model"):
        foundation.resolve(str(weights), "debug")
    with pytest.raises(foundation.BaseError, match="no base mavin-base@7"):
        foundation.resolve("mavin-base@7", "tiny")
    with pytest.raises(foundation.BaseError, match="fine-tunes a foundation model"):
        foundation.resolve("none", "tiny")


def test_a_base_checkpoint_by_path_registers_and_the_id_stage_starts_only_from_a_base(debug_dataset, tmp_path):
    base = train_stage("base", "debug", dataset=debug_dataset, out_dir=tmp_path / "base", overrides={"steps": 2}, track=False, progress=False)
    found = foundation.resolve(str(tmp_path / "base"), "debug")
    assert found.ref == "mavin-base@1" and found.card["step"] == 2
    assert found.sha256 == ckpt.verify_checkpoint(base.checkpoint)["files"]["model.safetensors"]["sha256"]
    assert foundation.resolve(str(base.checkpoint), "debug").ref == "mavin-base@1"  # the same weights: no second version
    ident = train_stage("id", "debug", dataset=debug_dataset, out_dir=tmp_path / "id", init_checkpoint=found.checkpoint,
                        overrides={"steps": 2}, track=False, progress=False)
    meta = ckpt.load_json(ident.checkpoint, "meta.json")
    assert meta["init_checkpoint_sha256"] == ckpt.CheckpointInfo(found.checkpoint, 2, ckpt.verify_checkpoint(found.checkpoint)).manifest_sha256
    # id starts from a base, never from another stage's checkpoint
    with pytest.raises(TrainError, match="stage 'id' starts from 'base'"):
        train_stage("id", "debug", dataset=debug_dataset, out_dir=tmp_path / "id2", init_checkpoint=ident.checkpoint,
                    overrides={"steps": 2}, track=False, progress=False)
    # a preset that fine-tunes a base refuses to start its id stage without one, before any work
    with pytest.raises(TrainError, match="fine-tunes a foundation model"):
        train_stage("id", "tiny", dataset=debug_dataset, out_dir=tmp_path / "id3", track=False, progress=False)
    # a checkpoint of another stage is not a base
    with pytest.raises(foundation.BaseError, match="not a base"):
        foundation.resolve(str(tmp_path / "id"), "debug")


def test_crafted_cards_registry_sources_and_run_ids_are_refused_in_one_line(debug_dataset, tmp_path):
    from mlflow.tracking import MlflowClient

    from mavin_ops import lineage, settings, tracking
    from mavin_ops.pretrain import PretrainError, run_pretrain
    from mavin_ops.release import PreflightError, preflight

    weights, card = foundation.shipped("tiny")
    for n, (change, words) in enumerate((({"step": "abc"}, "step 'abc'"), ({"step": -5}, "step '-5'"), ({"stage": "joint"}, "stage 'joint'"),
                                         ({"preset": "huge"}, "preset 'huge'"))):
        bad = tmp_path / f"bad{n}" / "tiny.safetensors"
        bad.parent.mkdir()
        shutil.copyfile(weights, bad)
        bad.with_suffix(".json").write_text(json.dumps({**card, **change}))
        with pytest.raises(foundation.BaseError, match=words):
            foundation.card_of(bad)
    # a registered version whose folder now holds other weights is refused, not trained from
    found = foundation.resolve("", "tiny")
    base = train_stage("base", "debug", dataset=debug_dataset, out_dir=tmp_path / "base", overrides={"steps": 1}, track=False, progress=False)
    c = MlflowClient(settings.tracking_uri())
    other = foundation.resolve(str(base.checkpoint), "debug")
    c.set_model_version_tag(foundation.BASE_MODEL, other.version, foundation.SHA_TAG, found.sha256)
    with pytest.raises(foundation.BaseError, match="re-register the base"):
        foundation.resolve(other.ref, "debug")
    # the base stage starts from initial weights only
    with pytest.raises(TrainError, match="base stage starts from initial weights"):
        train_stage("base", "debug", dataset=debug_dataset, out_dir=tmp_path / "b2", init_checkpoint=base.checkpoint, track=False)
    # a shipped base's lineage is its card: data digest and commit
    chain = lineage.lineage("mavin-base@1")
    assert [x.kind for x in chain] == ["base", "base", "base"] and chain[1].facts["digest"] == card["dataset_digest"]
    # release benchmarks and foundation worlds never share a seed; a release id is not a pretrain run
    with pytest.raises(PreflightError, match="foundation model's worlds"):
        preflight({"preset": "debug", "seed": 1000})
    tracking.parent_run("r-taken")
    with pytest.raises(PretrainError, match="names a mavin-release run"):
        run_pretrain("debug", 1000, run_id="r-taken", echo=None)
    with pytest.raises(PretrainError, match="seeds below 1000"):
        run_pretrain("debug", 7, echo=None)
