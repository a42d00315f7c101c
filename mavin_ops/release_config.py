"""A release as a file: ``mavin-ops release --config release.yaml`` (and ``submit`` /
``schedule --config``), so a recurring run is declared in a reviewed file.

Every option of ``mavin-ops release`` has a field of the same name (dashes become
underscores); unknown fields and bad values are refused up front with one line naming the
file, the field path and what is allowed. Relative paths in the file (``policy``,
``source``, ``registry``, a local ``remote``) are read relative to the file's folder, so the
file means the same wherever it is run from. Flags given on the command line win over it.

Example::

    # release.yaml
    preset: tiny
    train_steps: 0            # the recipe's
    dataset_rev: latest       # the newest registered version
    policy: gate_policy.yaml  # next to this file
    model: mavin-nightly
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mavin_ops.bounded import shown
from mavin_ops.presets import RELEASE_PRESETS
from mavin_ops.errors import MavinError

__all__ = ["ConfigError", "ReleaseConfig", "load_release_config", "pipeline_arguments"]


class ConfigError(MavinError, ValueError):
    """A release file that cannot be used (one line: file, field, what is allowed)."""


class ReleaseConfig(BaseModel):
    """The options of one release, as ``mavin-ops release`` takes them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Literal[RELEASE_PRESETS] = "tiny"
    seed: int = Field(0, ge=0)
    registry: str = ""
    remote: str = ""
    endpoint_url: str = ""
    max_quarantine_share: float = Field(0.05, ge=0.0, le=1.0)
    train_steps: int = Field(0, ge=0)
    sample_steps: int = Field(0, ge=0)
    sample_limit: int = Field(0, ge=0)
    model: str = "mavin"
    policy: str = ""
    dataset_rev: str = ""
    source: str = ""
    ingest_shards: int = Field(1, ge=1)
    train_procs: int = Field(1, ge=1)
    base: str = ""
    cache: bool = True

    @field_validator("model")
    @classmethod
    def _safe_model(cls, v: str) -> str:
        from mavin_ops.safety import check_name

        return check_name(v, "model name")

    @field_validator("remote", "endpoint_url", "registry")
    @classmethod
    def _no_credentials(cls, v: str) -> str:
        from mavin_ops.safety import check_url

        return check_url(v) if v else v


#: File field -> the pipeline parameter it sets (``submit`` / ``schedule``).
_PIPELINE_NAME = {"model": "model_name", "policy": "gate_policy"}


def load_release_config(path: str | os.PathLike) -> ReleaseConfig:
    """Read and check a release file; relative paths become paths next to it."""
    from mavin_ops.bounded import InputError, load_yaml, read_text

    path = Path(path)
    try:
        data = load_yaml(read_text(path, "a release file"), str(path))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such release file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.__class__.__name__})") from None
    except InputError as exc:
        raise ConfigError(f"{exc}; fix the file") from None
    if data is None:
        data = {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ConfigError(f"{path}: a release file is a mapping of option: value (e.g. 'preset: tiny'), option names in words")
    try:
        cfg = ReleaseConfig(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(x) for x in err["loc"]) or "(top)"
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(ReleaseConfig.model_fields)
            raise ConfigError(f"{path}: {field}: unknown option; allowed: {allowed}") from None
        from mavin_ops.safety import redact

        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(redact(f"{path}: {field}: {msg} (got {shown(err.get('input'))})")) from None
    base = path.resolve().parent
    fixes: dict[str, Any] = {}
    for name in ("policy", "source", "registry", "remote"):
        value = getattr(cfg, name)
        if value and "://" not in value and not Path(value).is_absolute():
            fixes[name] = str(base / value)
    return cfg.model_copy(update=fixes)


def pipeline_arguments(cfg: ReleaseConfig) -> dict[str, str]:
    """The options the file sets, as ``submit`` / ``schedule`` pipeline parameters (strings);
    what it leaves out stays with the cluster profile's parameters."""
    out = {}
    for name, value in cfg.model_dump(exclude_unset=True).items():
        if name == "cache":
            continue
        out[_PIPELINE_NAME.get(name, name)] = str(value)
    return out
