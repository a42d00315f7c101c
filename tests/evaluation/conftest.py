"""Fixtures for the evaluation tests: clips built with numpy (so perturbations have closed
forms), a generated debug dataset (data/synth.py) for the ground-truth checks, and helpers
that write metrics.json files for the gate."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mavin_ops import mtss
from mavin_ops.data.media import Clip
from mavin_ops.evaluation.results import SCHEMA

FPS = 8
SR = 8000


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path, monkeypatch):
    """MLflow's SQLite store puts the default experiment's artifacts under ./mlruns: keep
    them in the test's folder, never in the checkout."""
    monkeypatch.chdir(tmp_path)
H = W = 32
GREY = (160, 160, 160)


def harmonic(f0: float, n: int, sr: int = SR, rms: float = 0.12, harmonics: int = 6) -> np.ndarray:
    """A steady harmonic tone (a voiced burst) with the given RMS."""
    t = np.arange(n) / sr
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, harmonics + 1))
    return (rms * x / np.sqrt(np.mean(x**2))).astype(np.float32)


@dataclass
class ShotSpec:
    """One shot of a numpy-built clip: frames [a, b), a striped wall of colour ``wall`` and
    its darker stripes, a floor, and characters as filled boxes of one colour each."""

    a: int
    b: int
    scene: str
    wall: tuple[int, int, int]
    chars: dict[str, tuple[tuple[int, int, int], tuple[int, int, int, int]]] = field(default_factory=dict)


@dataclass
class ClipSpec:
    """Everything needed to render a clip and write its script and world truth."""

    clip_id: str
    frames: int
    shots: list[ShotSpec]
    dialogue: list[tuple[float, float, str, float]] = field(default_factory=list)  # start, end, speaker, f0
    sfx: list[tuple[float, float]] = field(default_factory=list)
    ref_images: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # rid -> colour
    ref_voices: dict[str, float] = field(default_factory=dict)  # rid -> f0

    def copy(self) -> "ClipSpec":
        return copy.deepcopy(self)


def render(spec: ClipSpec, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frames (F, H, W, 3) and waveform of a spec."""
    rng = np.random.default_rng(seed)
    frames = np.zeros((spec.frames, H, W, 3), np.uint8)
    for s in spec.shots:
        img = np.empty((H, W, 3), np.uint8)
        img[:] = s.wall
        img[::4] = (np.array(s.wall) // 2).astype(np.uint8)  # dark stripes
        img[26:] = (90, 60, 30)  # floor
        for colour, (x0, y0, x1, y1) in s.chars.values():
            img[y0:y1, x0:x1] = colour
        frames[s.a : s.b] = img
    n = spec.frames * SR // FPS
    wav = (0.003 * rng.standard_normal(n)).astype(np.float32)
    for start, end, _, f0 in spec.dialogue:
        a, b = int(round(start * SR)), int(round(end * SR))
        wav[a:b] += harmonic(f0, b - a)
    for start, end in spec.sfx:
        a, b = int(round(start * SR)), int(round(end * SR))
        wav[a:b] += (0.08 * rng.standard_normal(b - a)).astype(np.float32)
    return frames, np.clip(wav, -1, 1)


def script_of(spec: ClipSpec) -> mtss.Script:
    """The MTSS script a spec's *shot plan* describes (time ranges from its frames)."""
    chars = sorted({rid for s in spec.shots for rid in s.chars} | {d[2] for d in spec.dialogue})
    scenes = sorted({s.scene for s in spec.shots})
    ref = []
    for rid in chars:
        ent = {
            "id": rid,
            "category": "person",
            "semantic_description": f"person {rid}",
            "appearance_anchor": {"detail_description": f"look of {rid}"},
            "voice": "a voice",
        }
        if rid in spec.ref_images:
            ent["reference_image"] = f"refs/{spec.clip_id}_{rid}.png"
        if rid in spec.ref_voices:
            ent["reference_audio"] = f"refs/{spec.clip_id}_{rid}.wav"
        ref.append(ent)
    for sid in scenes:
        ref.append({"id": sid, "category": "scene", "semantic_description": f"scene {sid}",
                    "appearance_anchor": {"detail_description": "a striped wall"}})
    events = []
    for n, (start, end, who, _) in enumerate(spec.dialogue):
        events.append({"id": f"E{n + 1}", "type": "dialogue", "time_range": [start, end], "speaker": who, "line": "la la"})
    for n, (start, end) in enumerate(spec.sfx):
        events.append({"id": f"X{n + 1}", "type": "sfx", "time_range": [start, end], "description": "a bang"})
    shots = []
    for i, s in enumerate(spec.shots):
        shots.append({
            "id": f"S{i + 1}",
            "time_range": [s.a / FPS, s.b / FPS],
            "visual_description": "a shot",
            "references_in_shot": list(s.chars) + [s.scene],
            "active_events": [],
        })
    data = {"clip_id": spec.clip_id, "duration": spec.frames / FPS, "reference": ref, "shot": shots, "event": events,
            "global": {"scene_description": "a test scene"}}
    return mtss.parse_script(data)


def world_of(spec: ClipSpec) -> dict[str, Any]:
    """The world truth (data/synth.py layout) of a spec's shot plan."""
    return {
        "shots": [
            {"id": f"S{i + 1}", "frames": [s.a, s.b], "bg": s.scene,
             "chars": [{"id": rid, "rgb": list(c), "box": list(box)} for rid, (c, box) in s.chars.items()]}
            for i, s in enumerate(spec.shots)
        ]
    }


def ref_image(colour: tuple[int, int, int]) -> np.ndarray:
    img = np.empty((H, W, 3), np.uint8)
    img[:] = GREY
    img[6:28, 10:22] = colour
    return img


def make_clip(generated: ClipSpec, scripted: ClipSpec | None = None, seed: int = 0) -> Clip:
    """A Clip whose media render ``generated`` while its script, world and references
    describe ``scripted`` (default: the same spec, i.e. a perfect generation)."""
    scripted = scripted or generated
    frames, wav = render(generated, seed)
    refs_img = {rid: ref_image(c) for rid, c in scripted.ref_images.items()}
    refs_wav = {rid: np.concatenate([np.zeros(800, np.float32), harmonic(f0, 8000), np.zeros(800, np.float32)])
                for rid, f0 in scripted.ref_voices.items()}
    row = {"id": scripted.clip_id, "split": "eval", "fps": FPS, "num_frames": scripted.frames, "sample_rate": SR,
           "world": world_of(scripted)}
    return Clip(scripted.clip_id, "eval", frames, wav, SR, FPS, script_of(scripted), row, refs_img, refs_wav)


RED, GREEN, BLUE, YELLOW = (200, 40, 40), (40, 170, 60), (50, 70, 210), (230, 210, 60)
WALL_A, WALL_B = (120, 200, 220), (230, 150, 200)


def three_shot_spec(clip_id: str = "k000001") -> ClipSpec:
    """25 frames, cuts at 8 and 16; R1 in every shot, R2 in the last two; scenes Ra, Rb, Ra;
    R1 speaks 0.5-1.5 s at 150 Hz, R2 2.1-2.6 s at 240 Hz; an sfx at 1.7-1.9 s."""
    return ClipSpec(
        clip_id=clip_id,
        frames=25,
        shots=[
            ShotSpec(0, 8, "Ra", WALL_A, {"R1": (RED, (4, 10, 10, 26))}),
            ShotSpec(8, 16, "Rb", WALL_B, {"R1": (RED, (6, 8, 12, 26)), "R2": (BLUE, (20, 12, 26, 26))}),
            ShotSpec(16, 25, "Ra", WALL_A, {"R1": (RED, (3, 12, 9, 26)), "R2": (BLUE, (22, 10, 28, 26))}),
        ],
        dialogue=[(0.5, 1.5, "R1", 150.0), (2.1, 2.6, "R2", 240.0)],
        sfx=[(1.7, 1.9)],
        ref_images={"R1": RED, "R2": BLUE},
        ref_voices={"R1": 150.0, "R2": 240.0},
    )


@pytest.fixture
def spec() -> ClipSpec:
    return three_shot_spec()


@pytest.fixture(scope="session")
def _shared_mlflow_uri(tmp_path_factory) -> str:
    """One SQLite MLflow store for the evaluation tests that need a registry or runs:
    creating the schema costs seconds, so it is done once (tests use distinct names)."""
    import os

    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    here = os.getcwd()
    os.chdir(folder)  # the default experiment's ./mlruns lands here, not in the checkout
    try:
        MlflowClient(uri).search_experiments()
    finally:
        os.chdir(here)
    return uri


@pytest.fixture
def mlflow_uri(_shared_mlflow_uri, monkeypatch) -> str:
    """Point MLFLOW_TRACKING_URI (and so settings.tracking_uri()) at the shared store."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", _shared_mlflow_uri)
    mlflow.set_tracking_uri(_shared_mlflow_uri)
    return _shared_mlflow_uri


@pytest.fixture
def model_name(request) -> str:
    """A registered-model name no other test uses."""
    return "m-" + "".join(ch if ch.isalnum() else "-" for ch in request.node.name)[:80]


@pytest.fixture
def onnx_mean_colour(tmp_path) -> Path:
    """A tiny ONNX image embedder built here: (N, 3, H, W) -> per-image mean colour (N, 3)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["x"], ["p"]), helper.make_node("Flatten", ["p"], ["y"], axis=1)],
        "mean_colour", [x], [y],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    path = tmp_path / "mean_colour.onnx"
    onnx.save(model, str(path))
    return path


def metrics_doc(values: dict[str, list[float | None]], digest: str = "d" * 64, bench_id: str = "bench/eval",
                run_level: dict[str, float] | None = None) -> dict[str, Any]:
    """A metrics.json document with the given per-clip values (one list per metric, clip
    ids c0, c1, ...) and their aggregates, as the runner would write it."""
    from mavin_ops.evaluation.metrics import aggregate

    n = max((len(v) for v in values.values()), default=0)
    # A None value stands for "does not apply to this clip" (the runner's not_applicable).
    clips = [{"id": f"c{i}", "metrics": {k: v[i] for k, v in values.items()}, "notes": {}, "details": {},
              "not_applicable": sorted(k for k, v in values.items() if v[i] is None)} for i in range(n)]
    agg = aggregate([c["metrics"] for c in clips], list(values))
    for k, v in (run_level or {}).items():
        agg[k] = {"mean": v, "count": 1, "missing": 0, "per_clip": False}
    return {"schema": SCHEMA, "benchmark": {"id": bench_id, "digest": digest, "n_clips": n}, "config": {},
            "metrics": agg, "clips": clips}


def write_doc(path: Path, doc: dict[str, Any]) -> Path:
    from mavin_ops.evaluation.results import write_json

    return write_json(path, doc)


@pytest.fixture
def kit():
    """The helpers above, for test modules (conftest is not importable by name)."""
    import types

    return types.SimpleNamespace(
        FPS=FPS, SR=SR, H=H, W=W, GREY=GREY, RED=RED, GREEN=GREEN, BLUE=BLUE, YELLOW=YELLOW,
        WALL_A=WALL_A, WALL_B=WALL_B, ShotSpec=ShotSpec, ClipSpec=ClipSpec, harmonic=harmonic,
        render=render, script_of=script_of, world_of=world_of, ref_image=ref_image,
        make_clip=make_clip, three_shot_spec=three_shot_spec, metrics_doc=metrics_doc, write_doc=write_doc,
    )
