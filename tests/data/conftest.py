"""Fixtures for the data tests: one debug MAVINSet-mini generated per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from mavin_ops.data import manifest, synth


@pytest.fixture(scope="session")
def synth_debug_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``debug`` preset generated with seed 0 (read-only for tests)."""
    root = tmp_path_factory.mktemp("mavinset") / "debug"
    synth.generate(root, preset="debug", seed=0, progress=False)
    return root


@pytest.fixture(scope="session")
def synth_debug_rows(synth_debug_root: Path) -> list[dict]:
    rows = []
    for line in manifest.read_manifest(synth_debug_root):
        assert line.row is not None, line.error
        rows.append(line.row)
    return rows
