"""CLI wiring of export -> publish, and generate refusing a bad script before any server."""

from __future__ import annotations

import json

import torch

from mavin_ops.cli import main
from mavin_ops.model import build_model, save_checkpoint


def test_export_then_publish(tmp_path, capsys, isolated_home):
    torch.manual_seed(0)
    model = build_model("debug")
    with torch.no_grad():
        for p in model.denoiser.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ckpt = tmp_path / "debug.safetensors"
    save_checkpoint(model.eval(), ckpt, {"release_id": "cli-test"})
    assert main(["export", str(ckpt), "--out", str(tmp_path / "repo")]) == 0
    capsys.readouterr()
    assert main(["publish", str(tmp_path / "repo")]) == 0
    published = json.loads(capsys.readouterr().out)
    assert published["version"] == 1 and published["uri"].startswith(str(isolated_home / "model-store"))
    assert main(["publish", str(tmp_path / "repo"), "--store", str(tmp_path / "store")]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 1


def test_generate_refuses_bad_script_before_any_server(tmp_path, capsys):
    script = {
        "clip_id": "bad", "duration": 1.0,
        "reference": [{"id": "R1", "category": "person", "semantic_description": "x", "appearance_anchor": {"detail_description": "y"}}],
        "shot": [{"id": "S1", "time_range": [0, 1], "visual_description": "z", "references_in_shot": ["R9"]}],
        "event": [], "global": {"scene_description": "g"},
    }
    path = tmp_path / "scene.json"
    path.write_text(json.dumps(script))
    # No server listens on this port: the script must be refused before a connection is tried.
    assert main(["generate", "--script", str(path), "--out", str(tmp_path / "x.mp4"), "--url", "127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip()
    assert "R9" in err and "cited-id" in err and "\n" not in err
    assert not (tmp_path / "x.mp4").exists()
