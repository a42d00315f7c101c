"""What a release prints: one line per step, a progress bar inside long steps, every step's
full log in a file.

The KFP local runner prints everything to ``sys.stdout``: its own notes ("Executing task
'train-2'", "Task 'train-2' finished with status SUCCESS", the task's outputs) and, line by
line, the output of the step's subprocess (library noise included: Great Expectations, the
ONNX exporter, DeepSpeed). :class:`ReleaseConsole` stands in for ``sys.stdout`` and
``sys.stderr`` while the pipeline runs and sorts that stream:

- every line goes to ``<log_dir>/pipeline.log`` and, while a step runs, to
  ``<log_dir>/<step>.log`` (``train_multishot.log``: the step's own name, never ``train-2``);
- the terminal gets, per step, one line when it ends -- name, status, seconds and the one
  number that matters (final loss, STA, the gate's verdict, ...) -- and a failing step's
  last error line with its log path; on a terminal the running step's line shows first and
  a bar with an ETA follows what the step reports (:mod:`mavin_ops.progress`);
- ``verbose`` streams every line too (``mavin-ops release -v``).
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from mavin_ops import progress as _progress

__all__ = ["ReleaseConsole", "StepLine", "task_names"]

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_START = re.compile(r"Executing task '([^']+)'")
_END = re.compile(r"Task '([^']+)' finished with status (\w+)")
_OUTPUTS = re.compile(r"Task '([^']+)' (?:outputs:|has no outputs)")
_OUTPUT_LINE = re.compile(r"^ {4}(\w+): (.*)$")
#: The output that says how a step went, in order of preference.
_HEADLINE = (("final_loss", "final loss"), ("summary", ""), ("parity_max_abs_diff", "ONNX parity max |diff|"),
             ("passed", "passed"), ("champion", "champion"), ("version", "version"), ("tag", "version"), ("n_clips", "clips"),
             ("Output", ""))
#: Steps whose single output is a count, and what it counts.
_COUNT_OF = {"sample_benchmark": "clips generated", "plan_ingest": "shards"}
#: Steps the terminal does not list (the importer that hands a dataset URI on).
_SILENT = {"dataset"}


def task_names(pipeline: Any) -> dict[str, str]:
    """KFP task key (``train-2``) -> the step's display name (``train_multishot``) for every
    task of a compiled pipeline (its nested DAGs included)."""
    spec = pipeline.pipeline_spec
    out: dict[str, str] = {}

    def walk(dag: Any) -> None:
        for key, task in dag.tasks.items():
            out[key] = task.task_info.name or key

    walk(spec.root.dag)
    for comp in spec.components.values():
        if comp.WhichOneof("implementation") == "dag":
            walk(comp.dag)
    return out


@dataclass
class StepLine:
    """One step as the terminal and the report see it."""

    name: str
    task: str
    started: float
    ended: float | None = None
    status: str = "RUNNING"
    outputs: dict[str, str] = field(default_factory=dict)
    log: str = ""
    error: str = ""
    printed: bool = False  # its line went to the terminal

    @property
    def seconds(self) -> float:
        return (self.ended or time.time()) - self.started

    def headline(self) -> str:
        """The one number that says how the step went, from its outputs."""
        for key, label in _HEADLINE:
            if key not in self.outputs:
                continue
            value = self.outputs[key].strip("'")
            try:
                doc = json.loads(value)
            except ValueError:
                doc = None
            if isinstance(doc, dict):  # a JSON summary: its counts or its headline metrics
                if isinstance(doc.get("metrics"), dict):
                    m = doc["metrics"]
                    value = "  ".join(f"{k.upper()} {m[k]:.3f}" for k in ("sta", "tams", "vc", "ac") if isinstance(m.get(k), (int, float)))
                elif isinstance(doc.get("clips"), dict):
                    value = "clips " + ", ".join(f"{k} {v}" for k, v in doc["clips"].items())
                else:
                    value = ""
            elif key in ("final_loss", "parity_max_abs_diff"):
                try:
                    value = f"{float(value):.4g}"
                except ValueError:
                    pass
            elif key == "Output" and self.name in _COUNT_OF:
                label = _COUNT_OF[self.name]
            # Paths are in the log, not in the line: cut at the first absolute path and the words leading to it.
            value = re.sub(r"\s+(?:in|[a-z][a-z ]*:)\s*$", "", value.split(" /")[0]).rstrip(" ,;:")
            text = f"{label} {value}".strip()
            return text if len(text) <= 100 else text[:97] + "..."
        return ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "task": self.task, "status": self.status, "seconds": round(self.seconds, 2),
                "headline": self.headline(), "log": self.log, "error": self.error}


class _Stream(io.TextIOBase):
    def __init__(self, console: "ReleaseConsole"):
        self.console = console

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.console.feed(text)
        return len(text)

    def isatty(self) -> bool:
        return False


class ReleaseConsole:
    """Install with ``with ReleaseConsole(...) as console:``; ``console.steps`` lists the steps."""

    def __init__(self, log_dir: str | os.PathLike, names: dict[str, str] | None = None, terminal: TextIO | None = None,
                 verbose: bool = False, progress_file: str | os.PathLike | None = None):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.names = dict(names or {})
        self.terminal = terminal or sys.__stderr__
        self.tty = bool(getattr(self.terminal, "isatty", lambda: False)())
        self.verbose = verbose
        self.progress_file = Path(progress_file) if progress_file else self.log_dir / "progress.json"
        self.steps: list[StepLine] = []
        self._partial = ""
        self._lock = threading.RLock()
        self._all = open(self.log_dir / "pipeline.log", "a", encoding="utf-8")
        self._step_log: TextIO | None = None
        self._outputs_of: StepLine | None = None
        self._bar: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._saved: tuple[Any, Any, str | None] | None = None

    # ------------------------------------------------------------------ install

    def __enter__(self) -> "ReleaseConsole":
        self._saved = (sys.stdout, sys.stderr, os.environ.get(_progress.ENV))
        os.environ[_progress.ENV] = str(self.progress_file)
        sys.stdout = sys.stderr = _Stream(self)
        self._thread = threading.Thread(target=self._draw_progress, name="release-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        out, err, env = self._saved or (sys.__stdout__, sys.__stderr__, None)
        sys.stdout, sys.stderr = out, err
        if env is None:
            os.environ.pop(_progress.ENV, None)
        else:
            os.environ[_progress.ENV] = env
        with self._lock:
            if self._partial:
                self._line(self._partial)
                self._partial = ""
            self._finish(interrupted=exc[0] is not None)
            self._all.close()

    # ------------------------------------------------------------------ the stream

    def feed(self, text: str) -> None:
        with self._lock:
            text = self._partial + text
            *lines, self._partial = re.split(r"\r\n|\n|\r", text)
            for line in lines:
                self._line(line)

    def _line(self, raw: str) -> None:
        line = plain(raw)
        if m := _START.search(line):
            self._finish()
            self._start(m.group(1))
        elif (m := _END.search(line)) and self.steps and self.steps[-1].task == m.group(1):
            step = self.steps[-1]
            step.ended, step.status = time.time(), m.group(2)
            self._outputs_of = step
        elif _OUTPUTS.search(line):
            pass
        elif self._outputs_of is not None and (m := _OUTPUT_LINE.match(line)):
            self._outputs_of.outputs[m.group(1)] = m.group(2)
        elif self.steps and self.steps[-1].ended is None and line.strip():
            self.steps[-1].error = line.strip() if _looks_like_error(line) else self.steps[-1].error
        self._all.write(line + "\n")
        self._all.flush()
        if self._step_log is not None:
            self._step_log.write(line + "\n")
            self._step_log.flush()
        if self.verbose:
            self._say(line)

    def _start(self, task: str) -> None:
        name = self.names.get(task, task)
        log = self.log_dir / f"{_safe(name)}.log"
        if any(s.name == name for s in self.steps):  # a step name met twice (ParallelFor shards, a retry)
            k = sum(1 for s in self.steps if s.name == name) + 1
            log = self.log_dir / f"{_safe(name)}-{k}.log"
        self._step_log = open(log, "w", encoding="utf-8")
        self.steps.append(StepLine(name, task, time.time(), log=str(log)))
        self._outputs_of = None
        try:
            self.progress_file.unlink()
        except OSError:
            pass
        if self.tty and not self.verbose:
            self._say(f"  {name:<22} running ...", replace=True, newline=False)

    def _finish(self, interrupted: bool = False) -> None:
        """Print the last step's line once its outputs are in (or the stream ended)."""
        self._close_bar()
        if not self.steps or self.steps[-1].printed:
            return
        step = self.steps[-1]
        if step.ended is None:
            step.ended = time.time()
            step.status = "STOPPED" if interrupted else "FAILED"
        step.printed = True
        if self._step_log is not None:
            self._step_log.close()
            self._step_log = None
        self._outputs_of = None
        if step.name in _SILENT and step.status == "SUCCESS":
            if self.tty and not self.verbose:
                self._say("", replace=True, newline=False)
            return
        mark = {"SUCCESS": "ok"}.get(step.status, step.status)
        text = f"  {step.name:<22} {mark:<7} {step.seconds:7.1f} s  {step.headline()}".rstrip()
        if step.status != "SUCCESS":
            text += f"\n      {step.error or 'see the log'}\n      log: {step.log}"
        self._say(text, replace=self.tty and not self.verbose)

    # ------------------------------------------------------------------ the terminal

    def _say(self, text: str, replace: bool = False, newline: bool = True) -> None:
        """Write to the terminal; ``replace`` overwrites the current line (a terminal's running step)."""
        self.terminal.write(("\r\x1b[2K" if replace else "") + text + ("\n" if newline else ""))
        self.terminal.flush()

    def _draw_progress(self) -> None:
        while not self._stop.wait(0.5):
            state = _progress.read(self.progress_file)
            with self._lock:
                if state is None or not self.steps or self.steps[-1].ended is not None or state.get("finished"):
                    continue
                if not self.tty:
                    continue  # a bar needs a terminal; the step line says how it ended
                self._update_bar(state)

    def _update_bar(self, state: dict[str, Any]) -> None:
        from tqdm import tqdm

        if self._bar is None or self._bar.desc != f"  {state.get('what', '')}" or self._bar.total != state["total"]:
            self._close_bar()
            self.terminal.write("\r\x1b[2K")
            self._bar = tqdm(total=int(state["total"]), initial=int(state.get("initial", 0)), desc=f"  {state.get('what', '')}",
                             unit=str(state.get("unit", "step")), file=self.terminal, leave=False, dynamic_ncols=True)
            self._bar.start_t = float(state["started"])
        self._bar.n = int(state["done"])
        post = state.get("postfix") or {}
        self._bar.set_postfix(post, refresh=False)
        self._bar.refresh()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def plain(text: str) -> str:
    """``text`` without terminal colour codes (KFP's messages carry them)."""
    return _ANSI.sub("", text)


def _looks_like_error(line: str) -> bool:
    s = line.strip()
    return bool(re.match(r"^[\w.]*(Error|Exception|Interrupt)\b", s)) or s.startswith(("error:", "ERROR"))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "step"
