"""Atomic checkpoints: manifest last, refusal of partial or corrupt ones, fallback, no pickle."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

from mavin_ops.data.manifest import sha256_file
from mavin_ops.training import checkpoint as ckpt


def _save(root, step, value=None, **kw):
    value = float(step) if value is None else value
    return ckpt.save_checkpoint(
        root,
        step,
        tensors={"model.safetensors": {"w": torch.full((4, 4), value)}, "optimizer.safetensors": {"m": torch.arange(6.0) * value}},
        json_files={"meta.json": {"step": step}},
        **kw,
    )


def _flip_byte(path, offset=-5):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_save_writes_every_file_with_its_sha256_and_no_temporary_folder(tmp_path):
    info = _save(tmp_path, 2)
    assert info.path == tmp_path / "step-00000002"
    manifest = json.loads((info.path / ckpt.MANIFEST).read_text())
    assert set(manifest["files"]) == {"model.safetensors", "optimizer.safetensors", "meta.json"}
    for name, entry in manifest["files"].items():
        assert sha256_file(info.path / name) == entry["sha256"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    assert torch.equal(ckpt.load_tensors(info, "model.safetensors")["w"], torch.full((4, 4), 2.0))


def test_manifest_is_written_last(tmp_path):
    order = []
    _save(tmp_path, 1, on_file_written=lambda p: order.append((p.name, (p.parent / ckpt.MANIFEST).exists())))
    assert [n for n, _ in order] == ["model.safetensors", "optimizer.safetensors", "meta.json"]
    assert not any(has_manifest for _, has_manifest in order)


def test_a_flipped_byte_is_refused_naming_the_file_and_the_previous_checkpoint_is_used(tmp_path):
    _save(tmp_path, 2)
    _save(tmp_path, 4)
    bad = tmp_path / "step-00000004" / "optimizer.safetensors"
    _flip_byte(bad)
    lines = []
    info = ckpt.find_resumable(tmp_path, log=lines.append)
    assert info.step == 2
    assert len(lines) == 1 and "\n" not in lines[0]
    assert str(bad) in lines[0] and "corrupt" in lines[0] and "falling back" in lines[0]
    assert info.refused and str(bad) in info.refused[0]
    with pytest.raises(ckpt.CheckpointError, match="optimizer.safetensors has sha256"):
        ckpt.load_tensors(tmp_path / "step-00000004", "optimizer.safetensors")


def test_a_partial_checkpoint_without_manifest_is_refused(tmp_path):
    _save(tmp_path, 2)
    info = _save(tmp_path, 4)
    (info.path / ckpt.MANIFEST).unlink()
    lines = []
    assert ckpt.find_resumable(tmp_path, log=lines.append).step == 2
    assert "partial" in lines[0] and str(info.path / ckpt.MANIFEST) in lines[0]


def test_a_truncated_file_is_refused(tmp_path):
    _save(tmp_path, 2)
    info = _save(tmp_path, 4)
    f = info.path / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(ckpt.CheckpointError, match=f"{f} has .* bytes.*truncated"):
        ckpt.verify_checkpoint(info.path)
    assert ckpt.find_resumable(tmp_path, log=None).step == 2


def test_temporary_folders_of_dead_writers_are_never_listed_and_are_pruned(tmp_path):
    _save(tmp_path, 2)
    dead = tmp_path / ".tmp-step-00000004-999-deadbeef"
    dead.mkdir()
    (dead / "model.safetensors").write_bytes(b"half")
    assert [s for s, _ in ckpt.checkpoint_dirs(tmp_path)] == [2]
    assert ckpt.find_resumable(tmp_path, log=None).step == 2
    _save(tmp_path, 6, keep_last=2)
    assert not dead.exists()


def test_keep_last_prunes_older_checkpoints(tmp_path):
    for step in (1, 2, 3, 4):
        _save(tmp_path, step, keep_last=2)
    assert [s for s, _ in ckpt.checkpoint_dirs(tmp_path)] == [4, 3]


def test_saving_the_same_step_again_replaces_it(tmp_path):
    _save(tmp_path, 3, value=1.0)
    _save(tmp_path, 3, value=7.0)
    info = ckpt.find_resumable(tmp_path, log=None)
    assert ckpt.load_tensors(info, "model.safetensors")["w"][0, 0].item() == 7.0
    assert [s for s, _ in ckpt.checkpoint_dirs(tmp_path)] == [3]


def test_saving_the_same_step_again_never_leaves_the_step_name_missing(tmp_path, monkeypatch):
    """A reader (resume after SIGTERM) must find step-00000003 at every moment of the
    replace: the old folder is swapped out atomically, not renamed away first."""
    import shutil

    _save(tmp_path, 3, value=1.0)
    final = tmp_path / "step-00000003"
    gaps = []

    def watch(mod, name):
        real = getattr(mod, name)

        def spy(*args, **kwargs):
            if not final.is_dir():
                gaps.append(f"before {name}")
            out = real(*args, **kwargs)
            if not final.is_dir() or not (final / ckpt.MANIFEST).is_file():
                gaps.append(f"after {name}{args}")
            return out

        monkeypatch.setattr(mod, name, spy)

    watch(os, "rename")
    watch(os, "replace")
    watch(shutil, "rmtree")
    _save(tmp_path, 3, value=7.0)
    monkeypatch.undo()
    assert gaps == []
    info = ckpt.find_resumable(tmp_path, log=None)
    assert ckpt.load_tensors(info, "model.safetensors")["w"][0, 0].item() == 7.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000003"]  # no .tmp-replaced-* / .tmp-* left


def test_when_every_checkpoint_is_refused_resume_fails_instead_of_starting_over(tmp_path):
    info = _save(tmp_path, 2)
    _flip_byte(info.path / "meta.json", 3)
    with pytest.raises(ckpt.CheckpointError, match="no intact checkpoint under .*delete the folder"):
        ckpt.find_resumable(tmp_path, log=None)
    assert ckpt.find_resumable(tmp_path / "nothing-here", log=None) is None


class _Boom:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['MAVIN_PICKLE_MARKER']}",))


def test_loading_never_unpickles(tmp_path, monkeypatch):
    """A pickle smuggled in as model.safetensors, with a manifest that matches its bytes, is
    rejected by the safetensors parser and its payload never runs."""
    marker = tmp_path / "pwned"
    monkeypatch.setenv("MAVIN_PICKLE_MARKER", str(marker))
    info = _save(tmp_path / "ck", 2)
    evil = info.path / "model.safetensors"
    evil.write_bytes(pickle.dumps({"w": _Boom()}))
    manifest = json.loads((info.path / ckpt.MANIFEST).read_text())
    manifest["files"]["model.safetensors"] = {"sha256": sha256_file(evil), "bytes": evil.stat().st_size}
    (info.path / ckpt.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(Exception) as exc:
        ckpt.load_tensors(ckpt.find_resumable(tmp_path / "ck", log=None), "model.safetensors")
    assert not isinstance(exc.value, ckpt.CheckpointError)  # the sha256 matched: the parser refused it
    assert not marker.exists()


def test_copy_checkpoint_verifies_the_copy(tmp_path):
    info = _save(tmp_path / "a", 5)
    manifest = ckpt.copy_checkpoint(info.path, tmp_path / "artifact")
    assert manifest["step"] == 5
    assert ckpt.verify_checkpoint(tmp_path / "artifact")["files"] == manifest["files"]
    _flip_byte(tmp_path / "artifact" / "model.safetensors")
    with pytest.raises(ckpt.CheckpointError, match="artifact/model.safetensors has sha256"):
        ckpt.verify_checkpoint(tmp_path / "artifact")
