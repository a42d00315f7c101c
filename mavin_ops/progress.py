"""Progress of long work inside a release step, drawn on the release's terminal.

The KFP local runner runs each step as a subprocess whose output goes to the step's log file
(:mod:`mavin_ops.console`), so a progress bar printed by the step would land in that file.
A step reports its progress through :func:`reporter` instead: when ``MAVIN_PROGRESS_FILE`` is
set (the release console sets it for the steps), the state -- what, done, total, unit, when
it started -- is written atomically to that file at most every half second, and the console
draws it as a bar with an ETA under the step's line. Outside a release nothing is written.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["ENV", "Reporter", "read", "reporter"]

#: The file a release step writes its progress to (set by the release console).
ENV = "MAVIN_PROGRESS_FILE"


class Reporter:
    """Progress of one piece of work (``what``: "train multishot", "sample"...)."""

    def __init__(self, path: Path, what: str, total: int, unit: str = "step", initial: int = 0, every_s: float = 0.5):
        self.path, self.what, self.total, self.unit = path, what, int(total), unit
        self.done, self.every_s = int(initial), every_s
        self.started = time.time()
        self._initial = int(initial)
        self._last = 0.0
        self.postfix: dict[str, Any] = {}
        self._write(force=True)

    def update(self, n: int = 1, **postfix: Any) -> None:
        self.done += n
        self.postfix.update(postfix)
        self._write()

    def close(self) -> None:
        self._write(force=True, finished=True)

    def __enter__(self) -> "Reporter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _write(self, force: bool = False, finished: bool = False) -> None:
        now = time.time()
        if not force and now - self._last < self.every_s and self.done < self.total:
            return
        self._last = now
        state = {"what": self.what, "done": self.done, "total": self.total, "unit": self.unit, "initial": self._initial,
                 "started": self.started, "time": now, "finished": finished,
                 "postfix": {k: (round(v, 5) if isinstance(v, float) else v) for k, v in self.postfix.items()}}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(state), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:  # progress is a courtesy: never fail the work over it
            tmp.unlink(missing_ok=True)


class _Nothing:
    def update(self, n: int = 1, **postfix: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "_Nothing":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def reporter(what: str, total: int, unit: str = "step", initial: int = 0) -> Reporter | _Nothing:
    """A :class:`Reporter` when a release console listens (``MAVIN_PROGRESS_FILE``), else one that does nothing."""
    path = os.environ.get(ENV)
    if not path or total <= 0:
        return _Nothing()
    p = Path(path)
    if not p.parent.is_dir():
        return _Nothing()
    return Reporter(p, what, total, unit, initial)


def read(path: str | os.PathLike) -> dict[str, Any] | None:
    """The last state a step wrote, or None (no file yet, or a torn or foreign file)."""
    try:
        state = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not all(isinstance(state.get(k), (int, float)) for k in ("done", "total", "started")):
        return None
    return state
