"""Everyday read commands, whole process: wall time and peak memory, as ratios to
``mavin-ops --version`` measured in the same run.

The commands (``history``, ``verify``, ``lineage``, ``releases``, ``gate --json`` on an existing
result) read one state folder holding a real release: a debug release of 2 training steps
made once with this checkout (``--home`` keeps it for the next run). Each command runs
``--repeat`` times as its own process (``python -m mavin_ops.cli``); the median wall time and
the median peak RSS (``os.wait4``) are reported. With ``--before REV`` the same commands also
run from the code of git revision REV (extracted to a temporary folder that shadows this
checkout on ``PYTHONPATH``) against the same folder, interleaved with this checkout's runs,
so both are measured under the same load.

Usage: .venv/bin/python bench/read_commands.py [--before cf9ba2e] [--repeat 5] [--home DIR]
                                               [--out bench/results/read_commands.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODEL = "mavin-debug"
#: The installed layout (pyproject.toml's package-dir): mavin_ops.<sub> lives in ./<sub>.
SUBPACKAGES = ("data", "model", "evaluation", "training", "serving", "pipelines", "components")


def make_home(home: Path) -> Path:
    """A state folder with one promoted debug release (made once; reused when it exists)."""
    if (home / "releases").is_dir() and any((home / "releases").iterdir()):
        return home
    env = dict(os.environ, MAVIN_HOME=str(home), MLFLOW_TRACKING_URI=f"sqlite:///{home / 'mlflow.db'}")
    policy = home.parent / "lenient.yaml"
    home.mkdir(parents=True, exist_ok=True)
    policy.write_text("version: 1\nmetrics:\n  sta: {min: 0.0, tolerance: 1.0}\n")
    subprocess.run([sys.executable, "-m", "mavin_ops.cli", "-q", "release", "--preset", "debug", "--train-steps", "2", "--sample-steps", "2",
                    "--sample-limit", "2", "--model", MODEL, "--policy", str(policy)], env=env, check=True)
    return home


def old_tree(rev: str, where: Path) -> Path:
    """The code of ``rev`` laid out as it is installed (mavin_ops/<sub> -> ./<sub>), to put
    first on PYTHONPATH."""
    archive = where / "src.tar"
    with open(archive, "wb") as fh:
        subprocess.run(["git", "-C", str(REPO), "archive", rev], stdout=fh, check=True)
    src = where / "src"
    with tarfile.open(archive) as tar:
        tar.extractall(src, filter="data")
    for sub in SUBPACKAGES:
        (src / "mavin_ops" / sub).symlink_to(src / sub)
    return src


def commands(home: Path, scratch: Path) -> dict[str, list[str]]:
    metrics = next((home / "releases").rglob("evaluation/metrics.json"))  # the release's evaluate step
    policy = REPO / "evaluation" / "gate_policy.yaml"
    gate = ["gate", str(metrics), "--out", str(scratch / "gate"), "--model", MODEL, "--json"]
    if policy.is_file():
        gate[2:2] = ["--policy", str(policy)]
    return {
        "--version": ["--version"],
        "history": ["history", MODEL],
        "verify": ["verify", MODEL],
        "lineage": ["lineage", f"{MODEL}@champion"],
        "releases": ["releases"],
        "gate --json": gate,
    }


def run_once(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, int]:
    """(wall s, peak RSS MiB, exit code) of one whole process, run from ``cwd`` (not the
    checkout: ``python -m`` puts the working folder first on sys.path)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "mavin_ops.cli", *argv], env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, proc.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default=None, metavar="REV", help="also measure the code of this git revision")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--home", type=Path, default=None, help="state folder to build once and reuse")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "read_commands.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mavin-read-bench-") as tmp:
        tmp = Path(tmp)
        home = make_home(args.home or tmp / "home")
        base_env = dict(os.environ, MAVIN_HOME=str(home), MLFLOW_TRACKING_URI=f"sqlite:///{home / 'mlflow.db'}")
        arms = {"after": base_env}
        if args.before:
            arms = {"before": dict(base_env, PYTHONPATH=str(old_tree(args.before, tmp))), **arms}
        samples: dict[str, dict[str, list]] = {arm: {} for arm in arms}
        cmds = commands(home, tmp)
        for _ in range(args.repeat):  # interleaved: every arm and command once per round
            for name, argv in cmds.items():
                for arm, env in arms.items():
                    wall, rss, code = run_once(argv, env, tmp)
                    if code not in (0, 1):
                        raise SystemExit(f"{arm} {name}: exit {code}")
                    samples[arm].setdefault(name, []).append((wall, rss))
        report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "python": platform.python_version(),
                  "repeat": args.repeat, "before": args.before, "arms": {}}
        for arm, by_cmd in samples.items():
            version = statistics.median(w for w, _ in by_cmd["--version"])
            report["arms"][arm] = {
                name: {"wall_s": round(statistics.median(w for w, _ in runs), 3), "peak_mib": round(statistics.median(r for _, r in runs), 1),
                       "x_version": round(statistics.median(w for w, _ in runs) / version, 2)}
                for name, runs in by_cmd.items()
            }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"{'command':<14}" + "".join(f"{arm + ' s':>12}{'MiB':>8}{'x ver':>8}" for arm in report["arms"]))
    for name in cmds:
        print(f"{name:<14}" + "".join(f"{r[name]['wall_s']:>12.3f}{r[name]['peak_mib']:>8.0f}{r[name]['x_version']:>8.1f}"
                                      for r in report["arms"].values()))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
