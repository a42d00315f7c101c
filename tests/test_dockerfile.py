"""No Docker engine runs here: check that the component image installs exactly what
`make test` installs (same lock, same order, same pinned tools)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def pip_installs(text: str) -> list[str]:
    return [" ".join(m.split()) for m in re.findall(r"(?:pip|\$\(PIP\)) install ([^\n&\\]+)", text)]


def test_dockerfile_installs_from_the_same_lock_in_the_same_order():
    docker = (REPO / "Dockerfile").read_text()
    make = (REPO / "Makefile").read_text()
    strip = lambda args: [a for a in args.split() if not a.startswith(("-q", "--disable-pip", "--no-cache"))]
    docker_steps = [strip(s) for s in pip_installs(docker)]
    make_steps = [strip(s) for s in pip_installs(make)]
    assert docker_steps == make_steps, (docker_steps, make_steps)
    assert "COPY requirements.lock" in docker
    assert any("torch==2.13.0" in " ".join(s) for s in make_steps[:2])


def test_lock_respects_the_stack_pins():
    lock = (REPO / "requirements.lock").read_text().splitlines()
    pins = dict(line.split("==", 1) for line in lock if "==" in line and not line.startswith("#"))
    assert pins["torch"] == "2.13.0"
    assert int(pins["numpy"].split(".")[0]) < 2
    assert "onnxscript" in pins and pins["nvidia-pytriton"] == "0.7.0"
    assert all(not v.endswith("+cpu") for v in pins.values())
