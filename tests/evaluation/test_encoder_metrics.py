"""The metrics that see what a person sees (issue "The model earns its promotion"): the world
encoder's Fréchet distance and character presence, CISC/BISC on whole-shot features (MAVIN
eq. S8), the principle-based floors of the gate, and the three bad models the gate must fail
(static noise, the untrained model, a model that draws the wrong characters).

They run on the `tiny` world the shipped encoder was trained for: the eval split of
MAVINSet-mini tiny (seed 0), 10 clips, generated once per module."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from mavin_ops.data import media, synth
from mavin_ops.data.manifest import sha256_file
from mavin_ops.evaluation import encoder as E
from mavin_ops.evaluation import gate as G
from mavin_ops.evaluation.runner import evaluate_clips

N_CLIPS = 10


@pytest.fixture(scope="module")
def tiny_eval(tmp_path_factory) -> list[media.Clip]:
    root = tmp_path_factory.mktemp("tiny") / "ds"
    synth.generate(root, preset="tiny", seed=0, progress=False)
    from mavin_ops.data.validate import read_clips

    rows = read_clips(root, split="eval")[:N_CLIPS]
    return [media.load_clip(root, r) for r in rows]


def _with_frames(clips, make):
    return [dataclasses.replace(c, frames=make(c)) for c in clips]


static_noise, wrong_characters, colour_blocks = E.static_noise, E.wrong_characters, E.colour_blocks


def _score(clips, truth):
    return evaluate_clips(clips, truth={c.id: c for c in truth})


@pytest.fixture(scope="module")
def scored(tiny_eval):
    return {
        "truth": _score(tiny_eval, tiny_eval),
        "wrong": _score(_with_frames(tiny_eval, wrong_characters), tiny_eval),
        "wrong_odd": _score(_with_frames(tiny_eval, lambda c: wrong_characters(c, "odd")), tiny_eval),
        "noise": _score(_with_frames(tiny_eval, static_noise), tiny_eval),
        "blocks": _score(_with_frames(tiny_eval, colour_blocks), tiny_eval),
    }


def _mean(doc, name):
    return doc["metrics"][name]["mean"]


def test_the_shipped_encoder_is_checked_against_its_lineage_and_named_in_every_report(scored, tmp_path):
    enc = E.load_encoder()
    lineage = json.loads(E.DEFAULT_ENCODER.with_suffix(".json").read_text())
    assert enc.sha256 == lineage["sha256"] == sha256_file(E.DEFAULT_ENCODER)
    assert "mavin-ops encoder train --data" in lineage["command"] and lineage["dataset"]["digest"]
    assert scored["noise"]["encoder"]["sha256"] == enc.sha256
    # a changed byte is refused, not silently used
    bad = tmp_path / "world-tiny.safetensors"
    data = bytearray(E.DEFAULT_ENCODER.read_bytes())
    data[-1] ^= 0xFF
    bad.write_bytes(bytes(data))
    bad.with_suffix(".json").write_text(json.dumps(lineage))
    with pytest.raises(E.EncoderError, match="sha256"):
        E.load_encoder(bad)
    with pytest.raises(E.EncoderError, match="no such encoder file"):
        E.load_encoder(tmp_path / "absent.safetensors")


def test_fidelity_ranks_truth_then_wrong_characters_then_noise(scored):
    fd = {k: _mean(v, "fidelity_fd") for k, v in scored.items()}
    assert fd["truth"] < 1e-6
    assert fd["truth"] < fd["wrong_odd"] < fd["wrong"] < fd["blocks"] < fd["noise"]
    refs = scored["truth"]["references"]
    assert refs["ground_truth"]["fidelity_fd"] < 1e-6 < refs["shuffled"]["fidelity_fd"]


def test_character_presence_sees_the_scripted_characters_and_nothing_in_noise(scored):
    assert _mean(scored["truth"], "character_recall") >= 0.8
    assert _mean(scored["truth"], "character_precision") >= 0.8
    assert _mean(scored["noise"], "character_recall") == 0.0
    assert scored["noise"]["metrics"]["character_precision"]["count"] == 0  # nothing drawn: undefined
    assert _mean(scored["wrong"], "character_recall") < 0.5 * _mean(scored["truth"], "character_recall")


def test_cisc_and_bisc_rank_truth_over_a_partly_wrong_model_over_static_noise(scored):
    """MAVIN eq. S8 on whole-shot features: static noise is the same in every shot, so a plain
    cosine would score it 1; a pair counts only where the character / a scene is drawn."""
    for name in ("cisc", "bisc"):
        truth, noise = _mean(scored["truth"], name), _mean(scored["noise"], name)
        assert truth > 0.5 and noise == 0.0, name
    assert _mean(scored["truth"], "cisc") > _mean(scored["wrong_odd"], "cisc") > _mean(scored["noise"], "cisc")
    for clip in scored["noise"]["clips"]:
        assert all(p[3] == 0.0 for p in clip["details"]["cisc_pairs"] + clip["details"]["bisc_pairs"])


def test_the_default_policy_passes_the_ground_truth_and_fails_noise_blocks_and_wrong_characters(scored):
    policy = G.load_policy()
    assert G.decide(scored["truth"], policy).passed
    for bad in ("noise", "wrong"):
        d = G.decide(scored[bad], policy)
        assert not d.passed, bad
        failed = {c.name for c in d.checks if not c.passed}
        assert {"vc", "character_recall"} <= failed, (bad, d.reasons)
    noise = G.decide(scored["noise"], policy)
    assert {"cisc", "bisc", "fidelity_fd", "sta"} <= {c.name for c in noise.checks if not c.passed}
    # the coloured blocks the issue found promoted: right colours and cuts, nothing drawn
    blocks = G.decide(scored["blocks"], policy)
    assert {"fidelity_fd", "character_recall", "vc"} <= {c.name for c in blocks.checks if not c.passed}, blocks.reasons
    vc = next(c for c in noise.checks if c.name == "vc")
    truth_vc = scored["noise"]["references"]["ground_truth"]["vc"]
    assert vc.floor_min == pytest.approx(0.7 * truth_vc) and vc.floor_rule.startswith("0.7 x ground truth")


def test_the_untrained_model_fails_the_gate(tiny_eval):
    """The tiny preset's seeded initial weights, sampling the benchmark scripts (2 Euler
    steps: its output is its starting noise whatever the steps)."""
    import torch

    from mavin_ops import mtss
    from mavin_ops.model import ClipInput, RoleReference, build_model

    torch.manual_seed(0)
    model = build_model("tiny").eval()
    gen = torch.Generator().manual_seed(0)
    out = []
    for c in tiny_eval[:4]:
        refs = {r: RoleReference(image=c.ref_images.get(r), audio=c.ref_audio.get(r)) for r in set(c.ref_images) | set(c.ref_audio)}
        [g] = model.generate([ClipInput(caption=mtss.compile_caption(c.script), references=refs, height=32, width=32)], steps=2, generator=gen)
        n = len(c.frames)
        wav = np.zeros(len(c.waveform), np.float32)
        m = min(len(wav), len(g.audio))
        wav[:m] = g.audio[:m]
        out.append(dataclasses.replace(c, frames=np.asarray(g.frames[:n]), waveform=wav))
    doc = evaluate_clips(out, truth={c.id: c for c in tiny_eval[:4]})
    d = G.decide(doc, G.load_policy())
    assert not d.passed
    assert {"vc", "character_recall", "fidelity_fd"} <= {c.name for c in d.checks if not c.passed}, d.reasons


def test_principle_floors_need_the_reference_scores_and_the_same_encoder_as_the_champion(scored):
    policy = G.load_policy()
    doc = json.loads(json.dumps(scored["truth"]))
    del doc["references"]
    d = G.decide(doc, policy)
    assert not d.passed and any("no ground truth reference score" in r for r in d.reasons)
    champ = json.loads(json.dumps(scored["truth"]))
    champ["encoder"]["sha256"] = "0" * 64
    d = G.decide(scored["truth"], policy, G.Champion("mavin", "3", "run", "here", champ, None))
    assert not d.passed and any("world encoder mismatch" in r for r in d.reasons)


@pytest.mark.parametrize(
    "rule, message",
    [
        ({"vc": {"of_shuffled": 0.5}}, "use of_truth"),
        ({"fidelity_fd": {"of_truth": 0.5}}, "use of_shuffled"),
        ({"vc": {"of_truth": 1.5}}, "fraction in \\(0, 1\\]"),
    ],
)
def test_policy_refuses_a_principle_on_the_wrong_side(rule, message):
    with pytest.raises(G.PolicyError, match=message):
        G.parse_policy({"metrics": rule}, "p.yaml")


def test_encoder_training_is_reproducible_and_writes_its_lineage(debug_dataset, tmp_path):
    a = E.train_encoder(debug_dataset, tmp_path / "a" / "e.safetensors", E.EncoderRecipe(steps=3, world_seeds=(), debug_world_seeds=()), command="test")
    b = E.train_encoder(debug_dataset, tmp_path / "b" / "e.safetensors", E.EncoderRecipe(steps=3, world_seeds=(), debug_world_seeds=()), command="test")
    assert a["sha256"] == b["sha256"]
    info = json.loads((tmp_path / "a" / "e.json").read_text())
    assert info["sha256"] == a["sha256"] and info["recipe"]["steps"] == 3 and info["dataset"]["frames"] > 0
    assert E.load_encoder(tmp_path / "a" / "e.safetensors").features(np.zeros((2, 16, 16, 3), np.uint8)).shape == (2, E.DIM)
