"""Fixtures for the data tests: the rows of the session's debug MAVINSet-mini (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mavin_ops.data import manifest


@pytest.fixture(scope="session")
def synth_debug_rows(debug_dataset: Path) -> list[dict]:
    rows = []
    for line in manifest.read_manifest(debug_dataset):
        assert line.row is not None, line.error
        rows.append(line.row)
    return rows
