"""The runner: ground truth scores what the generator implies, controlled perturbations
give the closed-form values, and metrics.json / MLflow carry the results."""

from __future__ import annotations

import itertools
import json
import math
import shutil

import numpy as np
import pytest

from mavin_ops.evaluation import runner
from mavin_ops.evaluation.detectors import build_suite
from mavin_ops.evaluation.results import read_metrics
from mavin_ops.evaluation.runner import EvalConfig, EvaluationError, evaluate_clip, evaluate_clips, evaluate_dir

SIGMA_RGB = 32.0  # ColourFeatures default kernel width
SIGMA_CENTS = 100.0  # PitchVoice default kernel width
F = 25  # frames of the numpy-built clip


def kernel(a, b, sigma=SIGMA_RGB):
    d = np.asarray(a, float) - np.asarray(b, float)
    return math.exp(-float(d @ d) / (4 * sigma**2))


@pytest.fixture(scope="module")
def suite():
    return build_suite()


def score(kit, generated, scripted=None, suite=None, config=None):
    return evaluate_clip(kit.make_clip(generated, scripted), suite or build_suite(), config)


# --------------------------------------------------------------------------- ground truth


def test_perfect_numpy_clip_scores_one_everywhere(kit, spec, suite):
    m = score(kit, spec, suite=suite)["metrics"]
    for name in ("sta", "tams", "cisc", "bisc", "vc"):
        assert m[name] == pytest.approx(1.0, abs=1e-9), name
    assert m["ac"] == pytest.approx(1.0, abs=1e-4)
    assert m["shot_boundary_deviation"] == 0.0 and m["shot_boundary_unmatched"] == 0.0


def test_ground_truth_synthetic_clips_score_what_the_generator_implies(debug_dataset):
    """Every clip of the debug preset (both splits) scored against itself: STA 1, deviation
    0, TAMS 1, BISC 1 (a shared scene is the same wall and texture), CISC and VC equal to the
    values implied by the generator's world truth (the mean sprite colour of each shot, and
    the reference sprite on its known grey backdrop), AC near 1 with the voice's own f0.
    CISC/BISC here are the per-region colour features (``shot_consistency: regions``); the
    encoder's are tested in test_encoder_metrics.py."""
    from mavin_ops.data import manifest, media, synth

    clips = [media.load_clip(debug_dataset, line.row) for line in manifest.read_manifest(debug_dataset)]
    result = evaluate_clips(clips, {"shot_consistency": "regions"})
    assert len(result["clips"]) == len(clips) == 6
    seen = {"cisc": 0, "bisc": 0, "vc": 0, "ac": 0}
    for got, clip in zip(result["clips"], clips):
        m, world = got["metrics"], clip.row["world"]
        assert m["sta"] == pytest.approx(1.0) and m["tams"] == pytest.approx(1.0) and m["shot_boundary_unmatched"] == 0
        assert got["details"]["cuts"]["predicted"] == world["cuts"]
        assert m["shot_boundary_deviation"] == (0.0 if world["cuts"] else None)
        looks: dict[str, list] = {}
        for shot in world["shots"]:
            for ch in shot["chars"]:
                looks.setdefault(ch["id"], []).append(ch["rgb"])
        implied = [kernel(a, b) for v in looks.values() for a, b in itertools.combinations(v, 2)]
        if implied:
            assert m["cisc"] == pytest.approx(np.mean(implied), abs=0.01)
            seen["cisc"] += 1
        else:
            assert m["cisc"] is None and got["notes"]["cisc"].startswith("no pairs")
        if m["bisc"] is not None:
            assert m["bisc"] == pytest.approx(1.0)
            seen["bisc"] += 1
        vc = []
        for rid, img in clip.ref_images.items():
            ref = img[np.any(img != np.array(synth.NEUTRAL_BG), axis=-1)].mean(axis=0)
            if rid in looks:
                vc.append(np.mean([kernel(x, ref) for x in looks[rid]]))
        if vc:
            assert m["vc"] == pytest.approx(np.mean(vc), abs=0.01)
            seen["vc"] += 1
        if m["ac"] is not None:
            assert m["ac"] > 0.95
            seen["ac"] += 1
    assert all(v > 0 for v in seen.values()), seen  # the preset exercises every metric


def test_detected_f0_of_generated_speech_is_the_world_voice(debug_dataset):
    from mavin_ops.data import manifest, media
    from mavin_ops.evaluation.detectors import PitchVoice

    checked = 0
    for line in manifest.read_manifest(debug_dataset):
        clip = media.load_clip(debug_dataset, line.row)
        voices = clip.row["world"]["voices"]
        for ev in clip.script.event:
            if ev.type == "dialogue":
                a, b = int(ev.time_range.start * clip.sample_rate), int(ev.time_range.end * clip.sample_rate)
                f0 = PitchVoice().median_f0(clip.waveform[a:b], clip.sample_rate)
                # intonation moves the median a little: within 8 % (about 130 cents)
                assert f0 == pytest.approx(voices[ev.speaker]["f0"], rel=0.08)
                checked += 1
    assert checked > 0


# --------------------------------------------------------------------------- perturbations


@pytest.mark.parametrize("k", [1, 2, 3])
def test_cuts_shifted_by_k_frames(kit, spec, suite, k):
    gen = spec.copy()
    gen.shots[0].b += k
    gen.shots[1].a += k
    gen.shots[1].b += k
    gen.shots[2].a += k
    out = score(kit, gen, spec, suite)
    m = out["metrics"]
    assert out["details"]["cuts"]["predicted"] == [8 + k, 16 + k]
    assert m["sta"] == pytest.approx(math.exp(-2 * k / F))
    assert m["shot_boundary_deviation"] == k and m["shot_boundary_unmatched"] == 0


def test_cut_shifted_beyond_delta_counts_as_missing_plus_extra(kit, spec, suite):
    gen = spec.copy()
    gen.shots[1].b = gen.shots[2].a = 21  # 5 frames late, delta is 4 at 8 fps
    m = score(kit, gen, spec, suite)["metrics"]
    assert m["sta"] == pytest.approx(math.exp(-(0 + 2 * 4) / F))
    assert m["shot_boundary_unmatched"] == 2 and m["shot_boundary_deviation"] == 0.0


def test_missing_cut(kit, spec, suite):
    gen = spec.copy()
    gen.shots[1].b = 25  # shot 2 runs on: no cut at 16
    gen.shots.pop()
    m = score(kit, gen, spec, suite)["metrics"]
    assert m["sta"] == pytest.approx(math.exp(-4 / F))
    assert m["shot_boundary_unmatched"] == 1 and m["shot_boundary_deviation"] == 0.0


def test_extra_cut(kit, spec, suite):
    gen = spec.copy()
    first = gen.shots[0]
    gen.shots.insert(1, kit.ShotSpec(4, first.b, first.scene, kit.YELLOW, dict(first.chars)))
    first.b = 4
    out = score(kit, gen, spec, suite)
    assert out["details"]["cuts"]["extra"] == [4]
    assert out["metrics"]["sta"] == pytest.approx(math.exp(-4 / F))
    assert out["metrics"]["shot_boundary_unmatched"] == 1


def test_single_shot_clip_with_no_cuts_scores_one(kit, suite):
    one = kit.ClipSpec("k1", 17, [kit.ShotSpec(0, 17, "Ra", kit.WALL_A, {"R1": (kit.RED, (4, 10, 10, 26))})])
    out = score(kit, one, suite=suite)
    assert out["metrics"]["sta"] == pytest.approx(1.0)
    assert out["metrics"]["shot_boundary_deviation"] is None and out["notes"]["shot_boundary_deviation"] == "no cuts scripted"
    assert out["metrics"]["cisc"] is None and out["metrics"]["bisc"] is None
    # no dialogue scripted and none spoken: TAMS is 1 by definition
    assert out["metrics"]["tams"] == pytest.approx(1.0) and "by definition" in out["notes"]["tams"]
    # the gate's coverage rule leaves these clips out for what the script rules out, and only that
    assert "shot_boundary_deviation" in out["not_applicable"] and {"cisc", "bisc"} <= set(out["not_applicable"])
    assert "sta" not in out["not_applicable"] and "tams" not in out["not_applicable"]


def test_a_missed_cut_still_counts_as_applicable(kit, spec, suite):
    """A model that draws no cut has no deviation, but the clip still counts for coverage:
    applicability comes from the script, not from the generated clip."""
    gen = spec.copy()
    merged = gen.shots[0]
    merged.b = gen.shots[-1].b
    gen.shots = [merged]
    out = score(kit, gen, spec, suite)
    assert out["metrics"]["shot_boundary_deviation"] is None
    assert "shot_boundary_deviation" not in out["not_applicable"]


@pytest.mark.parametrize("shift", [-0.2, 0.1])
def test_speech_shifted(kit, spec, suite, shift):
    gen = spec.copy()
    gen.dialogue[0] = (0.5 + shift, 1.5 + shift, "R1", 150.0)
    m = score(kit, gen, spec, suite)["metrics"]
    # scripted [0.5, 1.5] + [2.1, 2.6]; detected the first shifted by |s|: IoU of the first
    # is (1 - s) / (1 + s), the second adds 0.5 to both
    s = abs(shift)
    assert m["tams"] == pytest.approx((1 - s + 0.5) / (1 + s + 0.5))


def test_speech_cut_short(kit, spec, suite):
    gen = spec.copy()
    gen.dialogue[0] = (0.5, 1.2, "R1", 150.0)
    m = score(kit, gen, spec, suite)["metrics"]
    assert m["tams"] == pytest.approx((0.7 + 0.5) / (1.0 + 0.5))


def test_character_recoloured_in_one_shot(kit, spec, suite):
    gen = spec.copy()
    box = gen.shots[1].chars["R1"][1]
    gen.shots[1].chars["R1"] = (kit.YELLOW, box)  # R1 is red in S1 and S3, yellow in S2
    out = score(kit, gen, spec, suite)
    k = kernel(kit.RED, kit.YELLOW)
    # pairs: (S1,S2,R1)=k, (S1,S3,R1)=1, (S2,S3,R1)=k, (S2,S3,R2)=1
    assert out["metrics"]["cisc"] == pytest.approx((2 + 2 * k) / 4, abs=1e-6)
    # VC: R1 matches its red reference in 2 of 3 shots; R2 everywhere
    assert out["metrics"]["vc"] == pytest.approx(((2 + k) / 3 + 1) / 2, abs=1e-6)
    assert out["metrics"]["bisc"] == pytest.approx(1.0)


def test_character_missing_from_a_shot_scores_zero_in_its_pairs(kit, spec, suite):
    gen = spec.copy()
    del gen.shots[1].chars["R1"]  # the script puts R1 in S2; the video does not show it
    out = score(kit, gen, spec, suite)
    pairs = {(i, j, r): c for i, j, r, c in out["details"]["cisc_pairs"]}
    assert pairs[("S1", "S2", "R1")] == 0.0 and pairs[("S2", "S3", "R1")] == 0.0
    assert out["metrics"]["cisc"] == pytest.approx(2 / 4)


def test_background_changed_in_a_shot(kit, spec, suite):
    gen = spec.copy()
    gen.shots[2].wall = (60, 180, 90)  # S3 should repeat S1's scene Ra
    f = suite.shot_features
    a = [np.array(kit.WALL_A, float), np.array(kit.WALL_A, float) // 2]
    b = [np.array((60, 180, 90), float), np.array((60, 180, 90), float) // 2]
    want = float(f.embed_colours(a) @ f.embed_colours(b) / (np.linalg.norm(f.embed_colours(a)) * np.linalg.norm(f.embed_colours(b))))
    assert score(kit, gen, spec, suite)["metrics"]["bisc"] == pytest.approx(want, abs=1e-9)


def test_voice_off_pitch(kit, spec, suite):
    gen = spec.copy()
    gen.dialogue[1] = (2.1, 2.6, "R2", 240.0 * 2 ** (100 / 1200))  # R2 a semitone sharp
    m = score(kit, gen, spec, suite)["metrics"]
    assert m["ac"] == pytest.approx((1 + math.exp(-(100**2) / (4 * SIGMA_CENTS**2))) / 2, abs=0.01)
    assert m["tams"] == pytest.approx(1.0)


def test_silent_role_scores_zero_ac(kit, spec, suite):
    gen = spec.copy()
    gen.dialogue = gen.dialogue[:1]  # R2 never speaks
    out = score(kit, gen, spec, suite)
    assert out["details"]["ac_roles"]["R2"] == 0.0 and out["details"]["ac_roles"]["R1"] == pytest.approx(1.0, abs=1e-4)


def test_no_customized_roles_gives_no_identity_values(kit, spec, suite):
    plain = spec.copy()
    plain.ref_images, plain.ref_voices = {}, {}
    out = score(kit, plain, suite=suite)
    assert out["metrics"]["vc"] is None and out["metrics"]["ac"] is None
    assert "no customized role" in out["notes"]["vc"]


def test_whole_shot_features_when_no_layout(kit, spec, suite):
    """Without world truth nothing is localised: every feature is the whole shot's, as in
    the paper (one p_i per shot)."""
    clip = kit.make_clip(spec)
    clip.row.pop("world")
    out = evaluate_clip(clip, suite)
    assert out["details"]["localised"] is False
    frames = clip.frames
    s1, s2, s3 = frames[0:8], frames[8:16], frames[16:25]
    from mavin_ops.evaluation.metrics import cosine

    look, shot = suite.look, suite.shot_features
    want_cisc = np.mean([cosine(look.features(a), look.features(b)) for a, b in ((s1, s2), (s1, s3), (s2, s3), (s2, s3))])
    assert out["metrics"]["cisc"] == pytest.approx(want_cisc)
    assert out["metrics"]["bisc"] == pytest.approx(cosine(shot.features(s1), shot.features(s3)))
    assert out["metrics"]["cisc"] < 0.99  # whole shots mix in the rooms


def test_onnx_look_model_drives_vc_and_cisc(kit, spec, onnx_mean_colour):
    """A configured model file replaces the built-in look: with a mean-colour ONNX embedder
    the cosines are those of the raw RGB vectors."""
    cfg = runner.load_config({"detectors": {"look": {"name": "model", "path": str(onnx_mean_colour), "size": 8}}})
    gen = spec.copy()
    box = gen.shots[1].chars["R1"][1]
    gen.shots[1].chars["R1"] = (kit.YELLOW, box)
    out = evaluate_clip(kit.make_clip(gen, spec), build_suite(cfg.detectors), cfg)
    c = float(np.dot(kit.RED, kit.YELLOW) / (np.linalg.norm(kit.RED) * np.linalg.norm(kit.YELLOW)))
    assert out["metrics"]["cisc"] == pytest.approx((2 + 2 * c) / 4, abs=1e-5)
    assert out["metrics"]["vc"] == pytest.approx(((2 + c) / 3 + 1) / 2, abs=1e-5)


# --------------------------------------------------------------------------- config


def test_config_file_in_the_repo_matches_the_code_defaults():
    cfg = runner.load_config(runner.DEFAULT_CONFIG_FILE)
    default = EvalConfig()
    assert (cfg.sta_delta_seconds, cfg.sta_delta_frames, cfg.cisc_features, cfg.split, cfg.regions) == (
        default.sta_delta_seconds, default.sta_delta_frames, default.cisc_features, default.split, default.regions)
    from dataclasses import asdict

    from_file, built_in = build_suite(cfg.detectors), build_suite()
    for kind in ("cuts", "speech", "shot_features", "look", "voice"):
        assert asdict(getattr(from_file, kind)) == asdict(getattr(built_in, kind)), kind


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"sta_delta": 3}, "unknown key 'sta_delta'"),
        ({"cisc_features": "faces"}, "cisc_features"),
        ({"sta_delta_frames": 0}, "sta_delta_frames"),
        ({"regions": {"margin": 2}}, r"regions\.margin"),
    ],
)
def test_bad_config_is_rejected(data, match):
    with pytest.raises(EvaluationError, match=match):
        runner.load_config(data)


def test_sta_delta_frames_overrides_seconds(kit, spec):
    gen = spec.copy()
    gen.shots[1].b = 25
    gen.shots.pop()
    out = evaluate_clip(kit.make_clip(gen, spec), build_suite(), runner.load_config({"sta_delta_frames": 2}))
    assert out["metrics"]["sta"] == pytest.approx(math.exp(-2 / F))


# --------------------------------------------------------------------------- directories


def test_evaluate_dir_writes_metrics_json_and_logs_to_mlflow(debug_dataset, tmp_path, mlflow_uri):
    import mlflow

    with mlflow.start_run() as run:
        result = evaluate_dir(debug_dataset, debug_dataset, tmp_path / "out", val_metrics={"val_loss_video": 0.25})
    doc = read_metrics(tmp_path / "out" / "metrics.json")
    assert doc["benchmark"]["n_clips"] == 2 and len(doc["benchmark"]["digest"]) == 64
    assert doc["benchmark"]["id"].startswith("MAVINSet-mini-debug-seed0/eval@")
    assert [c["id"] for c in doc["clips"]] == ["c000004", "c000005"]
    assert doc["metrics"]["sta"]["mean"] == 1.0 and doc["metrics"]["sta"]["count"] == 2
    assert doc["metrics"]["val_loss_video"] == {"mean": 0.25, "count": 1, "missing": 0, "per_clip": False}
    assert "val_loss_audio" not in doc["metrics"]
    assert doc["config"]["detectors"]["cuts"] == {"name": "frame_difference"}
    assert result["benchmark"] == doc["benchmark"]
    client = mlflow.tracking.MlflowClient()
    logged = client.get_run(run.info.run_id)
    assert logged.data.metrics["eval/sta"] == pytest.approx(1.0) and logged.data.metrics["eval/n_clips"] == 2.0
    assert logged.data.tags["mavin.benchmark_digest"] == doc["benchmark"]["digest"]
    assert [a.path for a in client.list_artifacts(run.info.run_id, "evaluation")] == ["evaluation/metrics.json"]


def test_evaluate_dir_logs_to_a_given_run_id(debug_dataset, tmp_path, mlflow_uri):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri)
    run = client.create_run(client.create_experiment("eval-test-run-id"))
    evaluate_dir(debug_dataset, None, tmp_path, run_id=run.info.run_id)
    assert client.get_run(run.info.run_id).data.metrics["eval/tams"] == pytest.approx(1.0)


def test_same_benchmark_same_digest_other_benchmark_other_digest(debug_dataset, tmp_path):
    a = evaluate_dir(debug_dataset, None, tmp_path / "a")
    b = evaluate_dir(debug_dataset, None, tmp_path / "b")
    c = evaluate_dir(debug_dataset, None, tmp_path / "c", config={"split": "train"})
    assert a["benchmark"]["digest"] == b["benchmark"]["digest"] != c["benchmark"]["digest"]


def test_missing_generated_clip_is_named(debug_dataset, tmp_path):
    gen = tmp_path / "gen"
    shutil.copytree(debug_dataset, gen)
    rows = [json.loads(x) for x in (gen / "manifest.jsonl").read_text().splitlines()]
    (gen / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows if r["id"] != "c000005"))
    with pytest.raises(EvaluationError, match=r"no generated clip for benchmark clip\(s\) c000005"):
        evaluate_dir(gen, debug_dataset, tmp_path / "out")


def test_generated_clip_with_other_frame_count_is_named(debug_dataset, tmp_path):
    from mavin_ops.data import media

    gen = tmp_path / "gen"
    shutil.copytree(debug_dataset, gen)
    frames, fps = media.read_video(gen / "clips" / "c000004.mp4")
    media.write_video(gen / "clips" / "c000004.mp4", frames[:17], int(fps))
    with pytest.raises(EvaluationError, match="clip c000004: the generated video has 17 frames, the benchmark clip 21"):
        evaluate_dir(gen, debug_dataset, tmp_path / "out")


def test_empty_split_is_an_error(debug_dataset, tmp_path):
    with pytest.raises(EvaluationError, match="no clips with split 'test'"):
        evaluate_dir(debug_dataset, None, tmp_path, config={"split": "test"})


def test_val_metrics_from_file_and_mlflow_run(tmp_path, mlflow_uri):
    from mlflow.tracking import MlflowClient

    path = tmp_path / "train_metrics.json"
    path.write_text(json.dumps({"metrics": {"val_loss_video": 0.5, "val_loss_audio": 0.75, "loss": 1.0}}))
    assert runner.read_val_metrics(path) == {"val_loss_video": 0.5, "val_loss_audio": 0.75}
    client = MlflowClient(mlflow_uri)
    run = client.create_run(client.create_experiment("val-metrics-train"))
    client.log_metric(run.info.run_id, "val_loss_audio", 0.125)
    assert runner.read_val_metrics(f"runs:/{run.info.run_id}") == {"val_loss_audio": 0.125}
    with pytest.raises(EvaluationError, match="not a number"):
        runner.read_val_metrics({"val_loss_video": "low"})
    with pytest.raises(EvaluationError, match="no such validation metrics file"):
        runner.read_val_metrics(tmp_path / "absent.json")


def test_noisy_generation_keeps_cuts_and_identity(kit, spec, suite):
    """Pixel noise of std 10 (a generated video's grain): no spurious cuts, and the
    character regions widen their colour tolerance to the noise, so a noisy but otherwise
    perfect clip keeps CISC and VC near 1; a fixed tolerance would let the background in."""
    clip = kit.make_clip(spec)
    clip.frames = np.clip(clip.frames + np.random.default_rng(0).normal(0, 10, clip.frames.shape), 0, 255).astype(np.uint8)
    m = evaluate_clip(clip, suite)["metrics"]
    assert m["sta"] == pytest.approx(1.0) and m["bisc"] > 0.99
    assert m["cisc"] > 0.95 and m["vc"] > 0.9
    fixed = evaluate_clip(clip, suite, runner.load_config({"regions": {"coverage": 0.0}}))["metrics"]
    assert fixed["cisc"] < 0.8 and fixed["vc"] < 0.5


def test_a_limited_evaluation_records_the_whole_benchmark_size(debug_dataset, tmp_path):
    from mavin_ops.evaluation.runner import evaluate_dir

    out = evaluate_dir(debug_dataset, None, tmp_path / "e", limit=1)
    assert out["benchmark"]["n_clips"] == 1 and out["benchmark"]["split_clips"] == 2
