"""Helpers shared by the whole-pipeline release tests (debug preset, a few steps): the
cheapest release arguments, a gate policy every challenger passes, what is served now,
and processes a release left behind. Import by name (tests/ goes on sys.path)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DEBUG_RELEASE", "descendants", "lenient_policy", "served", "stray_processes"]

#: The cheapest whole release: debug preset, 2 training steps per stage, 2 sampler steps, 2 clips.
DEBUG_RELEASE = dict(preset="debug", train_steps=2, sample_steps=2, sample_limit=2)


def lenient_policy(folder: Path) -> str:
    """A gate policy every challenger passes (the floor is 0 and any regression is tolerated)."""
    path = Path(folder) / "lenient.yaml"
    path.write_text("version: 1\nmetrics:\n  sta: {min: 0.0, tolerance: 1.0}\n")
    return str(path)


def served(home: Path, model: str) -> dict:
    """What serving follows now: the champion version, its published Triton version and the
    versions in the model store."""
    from mavin_ops import registry, tracking

    champion = registry.champion_version(model)
    triton = tracking.client().get_model_version(model, champion).tags.get("mavin.triton_version") if champion else None
    store = Path(home) / "model-store" / model
    published = sorted(p.name for p in store.iterdir() if not p.name.startswith(".")) if store.is_dir() else []
    return {"champion": champion, "triton_version": triton, "store": published}


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def _ppid(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    return int(stat.rsplit(")", 1)[1].split()[1])


def descendants(root: int | None = None) -> dict[int, list[str]]:
    """{pid: command line} of every live process below ``root`` (default: this one), from /proc."""
    root = os.getpid() if root is None else root
    parents = {int(p.name): _ppid(int(p.name)) for p in Path("/proc").iterdir() if p.name.isdigit()}
    found: dict[int, list[str]] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = _cmdline(pid)
                frontier.append(pid)
    return {pid: cmd for pid, cmd in found.items() if cmd}  # zombies have no command line


def stray_processes(home: Path) -> dict[int, list[str]]:
    """{pid: command line} of live processes (other than this one) whose environment points
    at ``home`` as MAVIN_HOME: pipeline steps, tritonserver, anything a release started."""
    marker = f"MAVIN_HOME={Path(home)}".encode()
    out = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            env = (p / "environ").read_bytes().split(b"\0")
        except OSError:  # another user's process, or gone
            continue
        if marker in env and _cmdline(int(p.name)):
            out[int(p.name)] = _cmdline(int(p.name))
    return out
