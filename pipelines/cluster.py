"""The cluster path: a profile file says how the release pipeline runs on Kubernetes, the
compiler writes the IR YAML with those settings (kfp-kubernetes), and submit / schedule send
it to a Kubeflow Pipelines endpoint.

A profile (YAML, see ``pipelines/profiles/cluster.example.yaml``)::

    image: mavin-ops:0.1.0              # the component image (built by the Dockerfile)
    pipeline_root: s3://bucket/pipelines
    experiment: mavin-release
    parameters: {preset: tiny, remote: s3://bucket/dvc, endpoint_url: ""}
    gpu: {steps: [train], accelerator: nvidia.com/gpu, type: NVIDIA_H100_80GB_HBM3, count: 8}
    node_selector: {mavin.dev/pool: gpu}          # GPU steps only
    tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
    volumes: [{pvc: mavin-cache, mount_path: /mnt/cache}]
    env: {MLFLOW_TRACKING_URI: http://mlflow.mlflow.svc:5000}   # never secrets
    secrets:                                    # secret name -> {secret key: env var}
      mavin-s3: {access_key: AWS_ACCESS_KEY_ID, secret_key: AWS_SECRET_ACCESS_KEY}
      mavin-mlflow: {token: MLFLOW_TRACKING_TOKEN}

Credentials only ever travel as references to Kubernetes secrets; a profile that puts a
credential-looking variable in ``env`` or ``parameters`` is refused.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from mavin_ops.errors import MavinError

__all__ = ["ClusterProfile", "ProfileError", "compile_pipeline", "dumps", "recurring_run_request", "run_request", "submit"]

SECRET_LIKE = re.compile(r"(SECRET|TOKEN|PASSWORD|ACCESS_KEY|CREDENTIAL|PRIVATE)", re.I)
DEFAULT_PROFILE = Path(__file__).with_name("profiles") / "cluster.example.yaml"
COMPILED = Path(__file__).with_name("release.yaml")


class ProfileError(MavinError, ValueError):
    """A cluster profile that cannot be used; names the file and the field."""


@dataclass
class ClusterProfile:
    image: str
    pipeline_root: str = ""
    experiment: str = "mavin-release"
    namespace: str = "kubeflow"
    service_account: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    gpu: dict[str, Any] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, str]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    #: Per step: CPU and memory the pod requests and is limited to, e.g. the ingest shards
    #: ``{ingest_shard: {cpu: "16", memory: 32G}}`` (ingest uses every core it is given).
    resources: dict[str, dict[str, str]] = field(default_factory=dict)
    #: How the train steps launch their stage: ``{backend: trainjob | local, nodes, gpus_per_node,
    #: namespace, home_pvc, home_mount, ..., stages: {<stage>: {nodes, gpus_per_node}}}``
    #: (training/manifests.py: plan_for_stage). Empty: one process in the train step's pod.
    training: dict[str, Any] = field(default_factory=dict)
    source: str = "<memory>"

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ClusterProfile":
        from mavin_ops.bounded import InputError, load_yaml, read_text

        path = Path(path)
        try:
            data = load_yaml(read_text(path, "a cluster profile (YAML)"), f"cluster profile {path}") or {}
        except FileNotFoundError:
            raise ProfileError(f"cluster profile {path} does not exist; start from {DEFAULT_PROFILE}") from None
        except InputError as exc:
            raise ProfileError(str(exc)) from None
        known = set(cls.__dataclass_fields__) - {"source"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ProfileError(f"cluster profile {path}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if not isinstance(data.get("image"), str) or not data["image"]:
            raise ProfileError(f"cluster profile {path}: 'image' is required (the component image tag)")
        profile = cls(**data, source=str(path))
        profile.check()
        return profile

    def check(self) -> None:
        from mavin_ops.safety import UnsafeName, UnsafeURL, check_parameters, check_url

        for where, mapping in (("env", self.env), ("parameters", self.parameters)):
            for key, value in mapping.items():
                if SECRET_LIKE.search(str(key)) and value not in ("", None):
                    raise ProfileError(
                        f"cluster profile {self.source}: {where}.{key} looks like a credential; reference a Kubernetes secret under 'secrets' instead"
                    )
                try:
                    check_url(str(value), f"cluster profile {self.source}: {where}.{key}:")
                except UnsafeURL as exc:
                    raise ProfileError(str(exc)) from None
        try:
            check_parameters(self.parameters, f"cluster profile {self.source}: parameters")
        except (UnsafeName, UnsafeURL) as exc:
            raise ProfileError(str(exc)) from None
        for step, res in self.resources.items():
            if not isinstance(res, dict) or set(res) - {"cpu", "memory"}:
                raise ProfileError(f"cluster profile {self.source}: resources.{step} takes only 'cpu' and 'memory', got {res!r}")
        gpu_steps = self.gpu.get("steps", [])
        if self.gpu and (not isinstance(gpu_steps, list) or int(self.gpu.get("count", 0)) < 1):
            raise ProfileError(f"cluster profile {self.source}: gpu needs 'steps' (a list) and 'count' >= 1")
        if self.training:
            from mavin_ops.training.manifests import plan_for_stage
            from mavin_ops.training.recipes import STAGES

            home = self.env.get("MAVIN_HOME", "")
            for stage in STAGES:  # the same parser the train step runs, so a bad plan fails here
                try:
                    kind, _ = plan_for_stage(self.training, stage, image=self.image, home=home, where=f"cluster profile {self.source}: training")
                except ValueError as exc:
                    raise ProfileError(str(exc)) from None
            if kind == "trainjob" and "train" in gpu_steps:
                raise ProfileError(f"cluster profile {self.source}: with training.backend trainjob the train step only submits "
                                   "and follows the TrainJob; take 'train' out of gpu.steps")

    def launch_env(self) -> str:
        """``$MAVIN_LAUNCH`` for the train steps (training/launch.py: from_environment)."""
        secrets = [[env, secret, key] for secret, keys in self.secrets.items() for key, env in keys.items()]
        return json.dumps({"training": self.training, "image": self.image, "env": dict(self.env), "secrets": secrets}, sort_keys=True)

    def platform(self):
        """The per-task hook the pipeline builder applies (pipelines/release.py: Platform)."""
        from kfp import kubernetes

        gpu_steps = set(self.gpu.get("steps", []))

        def apply(task, step: str) -> None:
            task.set_container_image(self.image)
            task.set_caching_options(True)
            for key, value in self.env.items():
                task.set_env_variable(key, str(value))
            for secret, keys in self.secrets.items():
                kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env=dict(keys))
            for vol in self.volumes:
                kubernetes.mount_pvc(task, pvc_name=vol["pvc"], mount_path=vol["mount_path"])
            if step == "train" and self.training:
                from mavin_ops.training.launch import LAUNCH_ENV

                task.set_env_variable(LAUNCH_ENV, self.launch_env())
            res = self.resources.get(step, {})
            if "cpu" in res:
                task.set_cpu_request(str(res["cpu"])).set_cpu_limit(str(res["cpu"]))
            if "memory" in res:
                task.set_memory_request(str(res["memory"])).set_memory_limit(str(res["memory"]))
            if step in gpu_steps:
                task.set_accelerator_type(self.gpu.get("accelerator", "nvidia.com/gpu"))
                task.set_accelerator_limit(int(self.gpu["count"]))
                if self.gpu.get("type"):
                    kubernetes.add_node_selector(task, "nvidia.com/gpu.product", str(self.gpu["type"]))
                for key, value in self.node_selector.items():
                    kubernetes.add_node_selector(task, key, str(value))
                for tol in self.tolerations:
                    kubernetes.add_toleration(task, **tol)

        return apply


def compile_pipeline(profile: ClusterProfile, out: str | os.PathLike = COMPILED) -> Path:
    """Compile the release pipeline with ``profile`` applied to IR YAML at ``out``."""
    from kfp import compiler

    from mavin_ops.pipelines import release

    pipeline = release.build_release_pipeline(profile.platform())
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline, str(out), pipeline_parameters=dict(profile.parameters) or None)
    return out


def _spec(profile: ClusterProfile) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = compile_pipeline(profile, Path(tmp) / "release.yaml")
        docs = list(yaml.safe_load_all(path.read_text()))
    return {"pipeline_spec": docs[0], "platform_spec": docs[1] if len(docs) > 1 else {}}


def run_request(profile: ClusterProfile, host: str, arguments: dict[str, Any], run_name: str) -> dict[str, Any]:
    """The exact HTTP request `mavin-ops submit` sends (KFP v2beta1 API)."""
    from mavin_ops.safety import UnsafeName, UnsafeURL, check_parameters, check_url

    try:
        check_parameters(arguments, "--param")
        check_url(host, "--host")
    except (UnsafeName, UnsafeURL) as exc:
        raise ProfileError(str(exc)) from None
    spec = _spec(profile)
    body = {
        "display_name": run_name,
        "pipeline_spec": spec["pipeline_spec"],
        "runtime_config": {"parameters": {**profile.parameters, **arguments}, "pipeline_root": profile.pipeline_root},
        "service_account": profile.service_account,
    }
    return {"method": "POST", "url": host.rstrip("/") + "/apis/v2beta1/runs", "experiment": profile.experiment, "body": body}


def recurring_run_request(
    profile: ClusterProfile, host: str, arguments: dict[str, Any], name: str, cron: str, max_concurrency: int
) -> dict[str, Any]:
    """The exact HTTP request `mavin-ops schedule` sends (KFP v2beta1 recurring runs)."""
    if len(cron.split()) not in (5, 6):
        raise ProfileError(f"--cron '{cron}' is not a cron expression (5 or 6 fields, e.g. '0 0 3 * * *')")
    if max_concurrency < 1:
        raise ProfileError("--max-concurrency must be at least 1 (1 = never two trainings at once)")
    request = run_request(profile, host, arguments, name)
    request["url"] = host.rstrip("/") + "/apis/v2beta1/recurringruns"
    request["body"].update(
        {
            "trigger": {"cron_schedule": {"cron": cron}},
            "max_concurrency": str(max_concurrency),
            "mode": "ENABLE",
            "no_catchup": True,
        }
    )
    return request


def submit(request: dict[str, Any], *, existing_token: str | None = None) -> dict[str, Any]:
    """Send a request built by :func:`run_request` / :func:`recurring_run_request` through
    the KFP client. Returns the created run's (or recurring run's) id and URL."""
    import kfp

    host = request["url"].split("/apis/")[0]
    client = kfp.Client(host=host, existing_token=existing_token or os.environ.get("KFP_TOKEN"))
    body = request["body"]
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / "pipeline.yaml"
        package.write_text(yaml.safe_dump(body["pipeline_spec"]))
        experiment = client.create_experiment(request["experiment"])
        params = body["runtime_config"]["parameters"]
        if request["url"].endswith("/recurringruns"):
            rr = client.create_recurring_run(
                experiment_id=experiment.experiment_id,
                job_name=body["display_name"],
                cron_expression=body["trigger"]["cron_schedule"]["cron"],
                max_concurrency=int(body["max_concurrency"]),
                no_catchup=True,
                params=params,
                pipeline_package_path=str(package),
                pipeline_root=body["runtime_config"]["pipeline_root"] or None,
            )
            return {"recurring_run_id": rr.recurring_run_id}
        run = client.create_run_from_pipeline_package(
            str(package),
            arguments=params,
            run_name=body["display_name"],
            experiment_id=experiment.experiment_id,
            pipeline_root=body["runtime_config"]["pipeline_root"] or None,
            service_account=body["service_account"] or None,
        )
        return {"run_id": run.run_id, "url": f"{host}/#/runs/details/{run.run_id}"}


def dumps(request: dict[str, Any]) -> str:
    return json.dumps(request, indent=2, sort_keys=True)
