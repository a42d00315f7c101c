"""Helpers shared by the whole-pipeline release tests (debug preset, a few steps): the
cheapest release arguments, a gate policy every challenger passes, what is served now,
and processes a release left behind. Import by name (tests/ goes on sys.path)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DEBUG_RELEASE", "check_release_page", "descendants", "lenient_policy", "served", "stray_processes", "use_home"]

#: The cheapest whole release: debug preset, 2 training steps per stage, 2 sampler steps, 2 clips.
DEBUG_RELEASE = dict(preset="debug", train_steps=2, sample_steps=2, sample_limit=2)


def use_home(mp, home: Path) -> Path:
    """Point this process (and the steps it starts) at the state folder ``home`` through the
    monkeypatch ``mp``: its own MLflow store, DVC without analytics, a git identity."""
    mp.setenv("MAVIN_HOME", str(home))
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{Path(home) / 'mlflow.db'}")
    mp.setenv("DVC_NO_ANALYTICS", "1")
    for var, value in (("NAME", "mavin-ops-tests"), ("EMAIL", "tests@localhost")):
        mp.setenv(f"GIT_AUTHOR_{var}", value)
        mp.setenv(f"GIT_COMMITTER_{var}", value)
    return Path(home)


def lenient_policy(folder: Path) -> str:
    """A gate policy every challenger passes (the floor is 0 and any regression is tolerated)."""
    path = Path(folder) / "lenient.yaml"
    path.write_text("version: 1\nmetrics:\n  sta: {min: 0.0, tolerance: 1.0}\n")
    return str(path)


def served(home: Path, model: str) -> dict:
    """What serving follows now: the champion version, its published Triton version and the
    versions in the model store."""
    from mavin_ops import registry

    champion = registry.champion_version(model)
    triton = str(registry.champion_triton_version(model)) if champion else None
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


def check_release_page(page: Path) -> dict:
    """Open a release.html and check that it works offline: every link and image resolves to
    a file next to it, no URL leaves the machine, and every MLflow run it names exists.
    Returns what was found (hrefs, srcs, run ids) for more checks."""
    import re
    from html.parser import HTMLParser
    from urllib.parse import unquote

    from mavin_ops import tracking

    class Links(HTMLParser):
        def __init__(self):
            super().__init__()
            self.hrefs, self.srcs, self.runs = [], [], []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if a.get("href"):
                self.hrefs.append(a["href"])
            if a.get("src"):
                self.srcs.append(a["src"])
            if a.get("data-mlflow-run"):
                self.runs.append(a["data-mlflow-run"])

    text = Path(page).read_text(encoding="utf-8")
    parser = Links()
    parser.feed(text)
    assert not re.search(r"(?i)\b(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text.replace("mlflow ui --backend-store-uri", "")), \
        "the page names an external address"
    for link in parser.hrefs + parser.srcs:
        assert not re.match(r"(?i)^[a-z][a-z0-9+.-]*:", link), f"{link}: not a relative link"
        target = (Path(page).parent / unquote(link.split("#")[0])).resolve()
        assert target.is_file(), f"{link}: no such file next to the page"
    c = tracking.client()
    for run_id in parser.runs:
        assert c.get_run(run_id).info.run_id == run_id
    return {"hrefs": parser.hrefs, "srcs": parser.srcs, "runs": parser.runs}
