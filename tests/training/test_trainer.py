"""The stage trainer in this process (world size 1): freezing, exact resume, MLflow, errors."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from mavin_ops.training import checkpoint as ckpt
from mavin_ops.training.trainer import EXIT_SIGTERM, TrainError, load_trained_model, train_stage
from toy_adapter import ToyAdapter
from train_helpers import stage_runs


class SigtermAt(ToyAdapter):
    """Sends SIGTERM to this process in the middle of the n-th training step (1-based)."""

    def __init__(self, at: int):
        super().__init__()
        self.at, self.calls = at, 0

    def losses(self, model, batch, generator=None):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().losses(model, batch, generator)


class CrashAt(ToyAdapter):
    def __init__(self, at: int):
        super().__init__()
        self.at, self.calls = at, 0

    def losses(self, model, batch, generator=None):
        self.calls += 1
        if self.calls == self.at:
            raise RuntimeError("simulated crash in the forward pass")
        return super().losses(model, batch, generator)


def _train(stage, out, ds, latents, adapter=None, **kw):
    kw.setdefault("track", False)
    kw.setdefault("progress", False)
    return train_stage(stage, "debug", dataset=ds, out_dir=out, latents_dir=latents, adapter=adapter or ToyAdapter(), **kw)


def test_only_the_recipes_groups_train(debug_dataset, toy_latents, tmp_path):
    from mavin_ops.training.recipes import get_recipe, match_groups

    groups = ("identity", "self_attn")  # the paper's id stage (debug's id also trains the backbone)
    res = _train("id", tmp_path / "id", debug_dataset, toy_latents, overrides={"trainable": groups})
    torch.manual_seed(get_recipe("id", "debug").seed)
    init = ToyAdapter().build().state_dict()
    final = ckpt.load_tensors(res.checkpoint, "model.safetensors")
    trained = set(match_groups(list(init), get_recipe("id", "debug", trainable=groups).patterns))
    assert trained and trained != set(init)
    for name, before in init.items():
        changed = not torch.equal(before, final[name])
        assert changed == (name in trained), name
    assert res.step == 4 and len(res.losses) == 4 and all(l["loss"] > 0 for l in res.losses)
    meta = ckpt.load_json(res.checkpoint, "meta.json")
    assert meta["complete"] and meta["stage"] == "id" and meta["recipe"]["steps"] == 4


@pytest.mark.parametrize("zero_stage", [0, 2])
def test_sigterm_checkpoints_exits_143_and_the_resumed_run_matches_exactly(debug_dataset, toy_latents, tmp_path, zero_stage):
    over = {"steps": 6, "checkpoint_every": 2, "zero_stage": zero_stage}
    straight = _train("id", tmp_path / "a", debug_dataset, toy_latents, overrides=over)
    with pytest.raises(SystemExit) as exc:
        _train("id", tmp_path / "b", debug_dataset, toy_latents, adapter=SigtermAt(3), overrides=over)
    assert exc.value.code == EXIT_SIGTERM
    assert [s for s, _ in ckpt.checkpoint_dirs(tmp_path / "b")] == [3, 2]  # step 3 finished, then saved
    resumed = _train("id", tmp_path / "b", debug_dataset, toy_latents, overrides=over)
    assert resumed.resumed_from.endswith("step-00000003")
    assert resumed.losses == straight.losses  # exact: optimizer, RNG and data order restored
    a = ckpt.load_tensors(straight.checkpoint, "model.safetensors")
    b = ckpt.load_tensors(resumed.checkpoint, "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    oa = ckpt.load_tensors(straight.checkpoint, "optimizer.safetensors")
    ob = ckpt.load_tensors(resumed.checkpoint, "optimizer.safetensors")
    assert oa.keys() == ob.keys() and all(torch.equal(oa[k], ob[k]) for k in oa)
    assert oa["step"].item() == 6


def test_a_flipped_byte_falls_back_to_the_previous_checkpoint_and_still_matches(debug_dataset, toy_latents, tmp_path, capsys):
    over = {"steps": 6, "checkpoint_every": 2, "keep_last": 3}
    first = _train("id", tmp_path / "s", debug_dataset, toy_latents, overrides=over)
    bad = tmp_path / "s" / "step-00000006" / "optimizer.safetensors"
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0x10
    bad.write_bytes(bytes(data))
    capsys.readouterr()
    again = _train("id", tmp_path / "s", debug_dataset, toy_latents, overrides=over)
    out = capsys.readouterr().out
    assert f"refused: checkpoint file {bad} has sha256" in out
    assert again.resumed_from.endswith("step-00000004") and again.refused
    assert again.losses == first.losses


def test_stage_run_in_mlflow_with_params_losses_dataset_and_parent_checkpoint(debug_dataset, toy_latents, tmp_path):
    from mavin_ops import tracking

    first = _train("id", tmp_path / "id", debug_dataset, toy_latents, track=True, release_id="rel-7")
    second = _train("multishot", tmp_path / "ms", debug_dataset, toy_latents, track=True, release_id="rel-7", init_checkpoint=first.checkpoint)
    c = tracking.client()
    parent = tracking.parent_run("rel-7")
    run = c.get_run(second.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.tags["mavin.step"] == "train_multishot"
    p = run.data.params
    assert p["stage"] == "multishot" and p["preset"] == "debug" and p["world_size"] == "1" and p["zero_stage"] == "2"
    assert p["parent_checkpoint"] == first.checkpoint and '"stage": "multishot"' in p["recipe"]
    assert p["parent_checkpoint_sha256"] == first.checkpoint_sha256 and p["dataset_digest"] == second.dataset_digest
    assert run.data.tags["mavin.checkpoint"] == second.checkpoint
    # One step axis across stages: multishot goes on where id ended (its checkpoint says where).
    for key in ("loss", "loss_video", "loss_audio", "samples_per_s"):
        assert [m.step for m in c.get_metric_history(first.run_id, key)] == [1, 2, 3, 4], key
        hist = c.get_metric_history(second.run_id, key)
        assert [m.step for m in hist] == [5, 6, 7, 8], key
    assert ckpt.load_json(second.checkpoint, "meta.json")["global_step"] == 8
    assert [m.value for m in c.get_metric_history(second.run_id, "loss_video")] == pytest.approx([l["video"] for l in second.losses])
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1 and inputs[0].dataset.digest == second.dataset_digest[:36]
    assert c.get_run(first.run_id).info.status == "FINISHED"


def test_lr_schedule_reaches_the_optimizer(debug_dataset, toy_latents, tmp_path):
    from mavin_ops import tracking
    from mavin_ops.training.recipes import get_recipe

    over = {"steps": 4, "lr": 1e-3, "decay": "cosine", "min_lr_ratio": 0.0}
    res = _train("id", tmp_path / "id", debug_dataset, toy_latents, track=True, release_id="rel-lr", overrides=over)
    logged = [m.value for m in tracking.client().get_metric_history(res.run_id, "lr")]  # read back from the optimizer
    assert logged == pytest.approx([get_recipe("id", "debug", **over).lr_at(i) for i in range(4)])
    assert logged[0] == pytest.approx(1e-3) and logged[-1] < 0.2e-3


def test_a_crash_marks_the_run_failed_and_sigterm_marks_it_killed(debug_dataset, toy_latents, tmp_path):
    with pytest.raises(RuntimeError, match="simulated crash"):
        _train("id", tmp_path / "c", debug_dataset, toy_latents, adapter=CrashAt(2), track=True, release_id="rel-crash")
    [crashed] = stage_runs("train_id")
    assert crashed.info.status == "FAILED"
    assert ckpt.checkpoint_dirs(tmp_path / "c") == []  # no checkpoint of a broken state
    with pytest.raises(SystemExit):
        _train("id", tmp_path / "k", debug_dataset, toy_latents, adapter=SigtermAt(2), track=True, release_id="rel-term")
    killed = stage_runs("train_id")[0]
    assert killed.info.status == "KILLED"
    # a failure before the first step (no parent checkpoint) is a FAILED run too, not a missing one
    with pytest.raises(TrainError):
        _train("multishot", tmp_path / "m", debug_dataset, toy_latents, track=True, release_id="rel-early")
    [early] = stage_runs("train_multishot")
    assert early.info.status == "FAILED" and early.data.params["stage"] == "multishot"


def test_every_stage_but_id_needs_the_previous_stages_final_checkpoint(debug_dataset, toy_latents, tmp_path):
    with pytest.raises(TrainError, match="stage 'multishot' starts from the 'id' stage's final checkpoint"):
        _train("multishot", tmp_path / "ms", debug_dataset, toy_latents)
    with pytest.raises(SystemExit):
        _train("id", tmp_path / "half", debug_dataset, toy_latents, adapter=SigtermAt(2))
    with pytest.raises(TrainError, match="unfinished 'id' stage"):
        _train("multishot", tmp_path / "ms", debug_dataset, toy_latents, init_checkpoint=tmp_path / "half")
    done = _train("id", tmp_path / "id", debug_dataset, toy_latents)
    with pytest.raises(TrainError, match="is from stage 'id'; stage 'av' starts from 'multishot'"):
        _train("av", tmp_path / "av", debug_dataset, toy_latents, init_checkpoint=done.checkpoint)
    ms = _train("multishot", tmp_path / "ms", debug_dataset, toy_latents, init_checkpoint=tmp_path / "id")  # a stage folder works too
    assert ms.init_checkpoint == done.checkpoint


def test_plain_log_lines_off_a_terminal(debug_dataset, toy_latents, tmp_path, capsys):
    _train("id", tmp_path / "id", debug_dataset, toy_latents, progress=None)
    out = capsys.readouterr().out
    assert "[train id] step 1/4 loss " in out and "samples/s" in out and "[train id] step 4/4" in out


def test_real_model_checkpoint_opens_with_the_models_loader(debug_dataset, tmp_path):
    from mavin_ops.model import load_checkpoint

    res = train_stage("id", "debug", dataset=debug_dataset, out_dir=tmp_path / "id", latents_dir=tmp_path / "lat", track=False, progress=False, overrides={"steps": 2})
    model = load_checkpoint(os.path.join(res.checkpoint, "model.safetensors"))
    trained, meta = load_trained_model(tmp_path / "id")
    assert meta["stage"] == "id" and meta["step"] == 2
    a, b = model.trainable_state_dict(), trained.trainable_state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class WeightedToy(ToyAdapter):
    """A model that weights its towers itself, 0.5 / 0.5, and does not say so."""

    def losses(self, model, batch, generator=None):
        parts = super().losses(model, batch, generator)
        return {**parts, "loss": 0.5 * parts["video"] + 0.5 * parts["audio"]}


def test_a_model_weighting_its_towers_unlike_the_recipe_is_refused(debug_dataset, toy_latents, tmp_path):
    with pytest.raises(TrainError, match=r"the model's loss .* is not 0.85 \* video \+ 0.15 \* audio"):
        _train("id", tmp_path / "toy", debug_dataset, toy_latents, adapter=WeightedToy())
    with pytest.raises(TrainError, match=r"weights its towers video 0.85 / audio 0.15, the recipe says 0.5 / 0.5"):
        train_stage(
            "id", "debug", dataset=debug_dataset, out_dir=tmp_path / "id", latents_dir=tmp_path / "lat", track=False, progress=False,
            overrides={"loss_weights": {"video": 0.5, "audio": 0.5}},
        )


def test_a_stage_whose_trainable_groups_get_no_gradient_is_refused(debug_dataset, tmp_path):
    """adaLN-Zero: from random init, attention behind closed gates gets no gradient."""
    with pytest.raises(TrainError, match="received a gradient at step 1"):
        train_stage(
            "id", "debug", dataset=debug_dataset, out_dir=tmp_path / "id", latents_dir=tmp_path / "lat", track=False, progress=False,
            overrides={"trainable": ("identity", "self_attn")},
        )


def test_progress_bar_on_request(debug_dataset, toy_latents, tmp_path, capsys):
    _train("id", tmp_path / "id", debug_dataset, toy_latents, progress=True)
    err = capsys.readouterr().err
    assert "train id" in err and "loss=" in err and "sps=" in err and "4/4" in err


def test_cli_reports_a_user_error_in_one_line(debug_dataset, tmp_path, capsys):
    from mavin_ops.training.__main__ import main

    rc = main(["train", "--stage", "av", "--preset", "debug", "--dataset", str(debug_dataset), "--out", str(tmp_path / "av"), "--no-track"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and err[-1].startswith("error: stage 'av' starts from the 'multishot' stage's final checkpoint")


def test_a_checkpoint_written_before_a_config_field_existed_still_matches():
    from mavin_ops.training.mavin_adapter import MavinAdapter
    from mavin_ops.training.trainer import _same_model_config

    adapter = MavinAdapter("debug")
    saved = adapter.config()
    del saved["flow"]["video_noise_shared"]  # a field added later, at its default (0 in debug)
    assert saved != adapter.config() and _same_model_config(adapter, saved)
    assert not _same_model_config(adapter, {**saved, "denoiser": {**saved["denoiser"], "depth": 2}})
    assert not _same_model_config(adapter, {**saved, "denoiser": {**saved["denoiser"], "bogus": 1}})
