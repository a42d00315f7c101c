"""Helpers shared by the training tests (imported by name: tests/training is on sys.path)."""

from __future__ import annotations

import os

__all__ = ["RANK_VARS", "child_env", "stage_runs"]

#: Rank variables a world-size-1 run sets in this process; child processes must not inherit them.
RANK_VARS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK")


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child training process: this one's, minus the rank variables an
    in-process run set, plus one thread and the shared extension cache."""
    env = {k: v for k, v in os.environ.items() if k not in RANK_VARS}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore"})
    env.update(extra)
    return env


def stage_runs(step: str) -> list:
    """MLflow runs of one pipeline step (e.g. ``train_id``), newest first."""
    from mavin_ops import tracking

    c = tracking.client()
    return c.search_runs([tracking.experiment_id()], filter_string=f"tags.`mavin.step` = '{step}'", order_by=["attributes.start_time DESC"])
