"""The cluster path: a training stage as a Kubeflow job for N nodes x G GPUs, from the same recipe.

Two renderings of the same launch, plain dicts ready for ``yaml.safe_dump`` / kubectl:

- :func:`render_trainjob`: a Kubeflow Trainer v2 ``TrainJob`` on the ``torch-distributed``
  runtime (the runtime sets the ``PET_*`` rendezvous variables torchrun reads);
- :func:`render_pytorchjob`: a Training Operator ``PyTorchJob`` (Master + Workers), for
  clusters that still run the v1 operator.

Both run the trainer exactly as on one machine, under torchrun::

    torchrun --nnodes N --nproc-per-node G -m mavin_ops.training train --stage S --preset P ...

so every rank builds the DeepSpeed engine itself (NCCL on GPUs, ZeRO stage from the recipe).
Credentials (MLflow, S3) come from Kubernetes secrets through ``secretKeyRef``, never as
literal values; MAVIN_HOME (latents, checkpoints) sits on a shared volume so every node reads
the same precomputed data and rank 0's checkpoints, and a retried job resumes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from .recipes import get_recipe, previous_stage

#: Who owns the runtime patch in a TrainJob (the Trainer keys patches by manager).
RUNTIME_PATCH_MANAGER = "mavin-ops.io/release"

__all__ = ["ClusterSpec", "SecretEnv", "job_name", "launch_command", "plan_for_stage", "render_pytorchjob", "render_trainjob", "to_yaml"]


@dataclass(frozen=True)
class SecretEnv:
    """An environment variable read from a Kubernetes secret key."""

    env: str
    secret: str
    key: str

    def to_k8s(self) -> dict[str, Any]:
        return {"name": self.env, "valueFrom": {"secretKeyRef": {"name": self.secret, "key": self.key}}}


#: Credentials the trainer needs on a cluster: the MLflow server and the S3 object store.
DEFAULT_SECRETS: tuple[SecretEnv, ...] = (
    SecretEnv("MLFLOW_TRACKING_URI", "mavin-mlflow", "tracking-uri"),
    SecretEnv("MLFLOW_TRACKING_USERNAME", "mavin-mlflow", "username"),
    SecretEnv("MLFLOW_TRACKING_PASSWORD", "mavin-mlflow", "password"),
    SecretEnv("AWS_ACCESS_KEY_ID", "mavin-s3", "access-key-id"),
    SecretEnv("AWS_SECRET_ACCESS_KEY", "mavin-s3", "secret-access-key"),
)


@dataclass(frozen=True)
class ClusterSpec:
    """Where and how big: nodes, GPUs per node, image, volumes, secrets."""

    nodes: int = 1
    gpus_per_node: int = 8
    image: str = field(default_factory=lambda: os.environ.get("MAVIN_COMPONENT_IMAGE", "mavin-ops:0.1.0"))
    namespace: str = "mavin"
    runtime: str = "torch-distributed"  # TrainJob runtimeRef (ClusterTrainingRuntime)
    home_pvc: str = "mavin-home"  # shared volume for MAVIN_HOME (latents, checkpoints)
    home_mount: str = "/mnt/mavin"
    shm_size: str = "64Gi"
    cpu: str = "64"
    memory: str = "1024Gi"
    gpu_resource: str = "nvidia.com/gpu"
    node_selector: dict[str, str] = field(default_factory=lambda: {"nvidia.com/gpu.present": "true"})
    secrets: tuple[SecretEnv, ...] = DEFAULT_SECRETS
    backoff_limit: int = 3  # retries resume from the newest checkpoint
    #: MAVIN_HOME inside the job (default: the volume's mount path); must lie on that volume.
    home: str = ""
    #: Plain (non-secret) environment for the trainer, e.g. the MLflow server's address.
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.gpus_per_node < 1:
            raise ValueError(f"a cluster job needs nodes >= 1 and gpus_per_node >= 1, got {self.nodes} x {self.gpus_per_node}")
        home = self.home or self.home_mount
        if home != self.home_mount and not home.startswith(self.home_mount.rstrip("/") + "/"):
            raise ValueError(f"MAVIN_HOME {home} is not on the shared volume mounted at {self.home_mount}")

    @property
    def state_folder(self) -> str:
        return self.home or self.home_mount


#: What a cluster profile's ``training`` section may set (pipelines/cluster.py), and per stage.
PLAN_FIELDS = ("backend", "nodes", "gpus_per_node", "namespace", "runtime", "home_pvc", "home_mount", "shm_size", "cpu", "memory",
               "gpu_resource", "node_selector", "backoff_limit", "stages")
STAGE_FIELDS = ("nodes", "gpus_per_node")


#: How a train step runs its stage: in this process, as local ranks, or as a Kubeflow TrainJob.
BACKENDS = ("inprocess", "local", "trainjob")


def plan_for_stage(plan: dict[str, Any], stage: str, *, image: str = "", home: str = "", env: dict[str, str] | None = None,
                   secrets: tuple[SecretEnv, ...] | None = None, where: str = "training") -> tuple[str, ClusterSpec | None]:
    """(backend, cluster size) of ``stage`` from a launch plan: a profile's ``training``
    section, ``{backend, nodes, gpus_per_node, ..., stages: {<stage>: {nodes, gpus_per_node}}}``.
    An empty plan is ("", None): the launcher picks by process count. Raises ValueError
    naming the field (``where``) for anything it does not know."""
    from .recipes import STAGES

    if not plan:
        return "", None
    if not isinstance(plan, dict):
        raise ValueError(f"{where}: a mapping of {', '.join(PLAN_FIELDS)}")
    unknown = sorted(set(plan) - set(PLAN_FIELDS))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(PLAN_FIELDS)}")
    backend = str(plan.get("backend", "trainjob"))
    if backend not in BACKENDS:
        raise ValueError(f"{where}.backend: '{backend}' is not one of {', '.join(BACKENDS)}")
    stages = plan.get("stages") or {}
    for name, over in stages.items():
        if name not in STAGES or not isinstance(over, dict) or set(over) - set(STAGE_FIELDS):
            raise ValueError(f"{where}.stages.{name}: a stage of {', '.join(STAGES)} with only {', '.join(STAGE_FIELDS)}")
    fields_ = {k: v for k, v in plan.items() if k not in ("backend", "stages")}
    fields_.update(stages.get(stage, {}))
    for key in ("nodes", "gpus_per_node", "backoff_limit"):
        if key in fields_ and (not isinstance(fields_[key], int) or isinstance(fields_[key], bool)):
            raise ValueError(f"{where}.{key}: a whole number, got {fields_[key]!r}")
    if image:
        fields_["image"] = image
    if home:
        fields_["home"] = home
    if env:
        fields_["env"] = dict(env)
    if secrets is not None:
        fields_["secrets"] = tuple(secrets)
    try:
        return backend, ClusterSpec(**fields_)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None


def _dns(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].rstrip("-")


def job_name(stage: str, preset: str, release_id: str = "") -> str:
    """A DNS-1123 name: ``mavin-train-<stage>-<preset>[-<release>]`` (at most 63 characters)."""
    return _dns("-".join(p for p in ("mavin-train", stage, preset, release_id) if p))


def launch_command(
    stage: str,
    preset: str,
    spec: ClusterSpec,
    *,
    dataset: str,
    out_root: str,
    release_id: str = "",
    dataset_digest: str = "",
    steps: int = 0,
) -> list[str]:
    """The torchrun command every node runs (node rank and rendezvous come from the job).
    ``steps`` > 0 overrides the recipe's step count (short runs, tests)."""
    get_recipe(stage, preset)  # unknown stage/preset fail here, at render time
    cmd = [
        "torchrun",
        f"--nnodes={spec.nodes}",
        f"--nproc-per-node={spec.gpus_per_node}",
        "-m",
        "mavin_ops.training",
        "train",
        "--stage",
        stage,
        "--preset",
        preset,
        "--dataset",
        dataset,
        "--out",
        f"{out_root}/{stage}",
    ]
    prev = previous_stage(stage)
    if prev is not None:
        cmd += ["--init", f"{out_root}/{prev}"]
    if release_id:
        cmd += ["--release-id", release_id]
    if dataset_digest:
        cmd += ["--dataset-digest", dataset_digest]
    if steps:
        cmd += ["--steps", str(int(steps))]
    return cmd


def _env(spec: ClusterSpec) -> list[dict[str, Any]]:
    plain = [
        {"name": "MAVIN_HOME", "value": spec.state_folder},
        {"name": "TORCH_EXTENSIONS_DIR", "value": f"{spec.state_folder}/torch_extensions"},
        {"name": "NCCL_DEBUG", "value": "WARN"},
        {"name": "DVC_NO_ANALYTICS", "value": "1"},
    ]
    fixed = {e["name"] for e in plain} | {s.env for s in spec.secrets}
    plain += [{"name": k, "value": str(v)} for k, v in spec.env.items() if k not in fixed]
    return plain + [s.to_k8s() for s in spec.secrets]


def _volumes(spec: ClusterSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes = [
        {"name": "mavin-home", "persistentVolumeClaim": {"claimName": spec.home_pvc}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size}},
    ]
    mounts = [{"name": "mavin-home", "mountPath": spec.home_mount}, {"name": "dshm", "mountPath": "/dev/shm"}]
    return volumes, mounts


def _resources(spec: ClusterSpec) -> dict[str, Any]:
    gpus = str(spec.gpus_per_node)  # a Kubernetes quantity is a string
    return {
        "requests": {"cpu": spec.cpu, "memory": spec.memory, spec.gpu_resource: gpus},
        "limits": {spec.gpu_resource: gpus},
    }


def _labels(stage: str, preset: str, release_id: str) -> dict[str, str]:
    labels = {"app.kubernetes.io/part-of": "mavin-ops", "mavin.stage": stage, "mavin.preset": preset}
    if release_id:
        labels["mavin.release-id"] = _dns(release_id) or "none"
    return labels


def render_trainjob(
    stage: str,
    preset: str = "paper",
    spec: ClusterSpec | None = None,
    *,
    dataset: str = "/mnt/mavin/datasets/mavinset",
    out_root: str = "/mnt/mavin/checkpoints",
    release_id: str = "",
    dataset_digest: str = "",
    steps: int = 0,
) -> dict[str, Any]:
    """A Kubeflow Trainer ``TrainJob`` (trainer.kubeflow.org/v1alpha1) for one stage."""
    spec = spec or ClusterSpec()
    volumes, mounts = _volumes(spec)
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": job_name(stage, preset, release_id), "namespace": spec.namespace, "labels": _labels(stage, preset, release_id)},
        "spec": {
            "runtimeRef": {"name": spec.runtime},
            "trainer": {
                "image": spec.image,
                "command": launch_command(
                    stage, preset, spec, dataset=dataset, out_root=out_root, release_id=release_id, dataset_digest=dataset_digest,
                    steps=steps,
                ),
                "numNodes": spec.nodes,
                "numProcPerNode": spec.gpus_per_node,
                "resourcesPerNode": _resources(spec),
                "env": _env(spec),
            },
            # Node placement and volumes as a runtime patch of the runtime's "node" job (the
            # Trainer API's runtimePatches; checked against its published models in tests).
            "runtimePatches": [
                {
                    "manager": RUNTIME_PATCH_MANAGER,
                    "trainingRuntimeSpec": {
                        "template": {
                            "spec": {
                                "replicatedJobs": [
                                    {
                                        "name": "node",
                                        "template": {
                                            "spec": {
                                                "template": {
                                                    "spec": {
                                                        "nodeSelector": dict(spec.node_selector),
                                                        "volumes": volumes,
                                                        "containers": [{"name": "node", "volumeMounts": mounts}],
                                                    }
                                                }
                                            }
                                        },
                                    }
                                ]
                            }
                        }
                    },
                }
            ],
        },
    }


def render_pytorchjob(
    stage: str,
    preset: str = "paper",
    spec: ClusterSpec | None = None,
    *,
    dataset: str = "/mnt/mavin/datasets/mavinset",
    out_root: str = "/mnt/mavin/checkpoints",
    release_id: str = "",
    dataset_digest: str = "",
) -> dict[str, Any]:
    """A Training Operator ``PyTorchJob`` (kubeflow.org/v1): one Master and nodes-1 Workers."""
    spec = spec or ClusterSpec()
    volumes, mounts = _volumes(spec)
    command = launch_command(stage, preset, spec, dataset=dataset, out_root=out_root, release_id=release_id, dataset_digest=dataset_digest)

    def replica(n: int) -> dict[str, Any]:
        return {
            "replicas": n,
            "restartPolicy": "OnFailure",
            "template": {
                "metadata": {"labels": _labels(stage, preset, release_id)},
                "spec": {
                    "nodeSelector": dict(spec.node_selector),
                    "volumes": volumes,
                    "containers": [
                        {
                            "name": "pytorch",  # the operator looks for this container name
                            "image": spec.image,
                            "command": command,
                            "env": _env(spec),
                            "resources": _resources(spec),
                            "volumeMounts": mounts,
                        }
                    ],
                },
            },
        }

    replicas = {"Master": replica(1)}
    if spec.nodes > 1:
        replicas["Worker"] = replica(spec.nodes - 1)
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": job_name(stage, preset, release_id), "namespace": spec.namespace, "labels": _labels(stage, preset, release_id)},
        "spec": {
            "nprocPerNode": str(spec.gpus_per_node),
            "runPolicy": {"backoffLimit": spec.backoff_limit, "cleanPodPolicy": "None"},
            "pytorchReplicaSpecs": replicas,
        },
    }


def to_yaml(obj: dict[str, Any] | list[dict[str, Any]]) -> str:
    """YAML for kubectl (a list becomes a multi-document stream)."""
    if isinstance(obj, list):
        return yaml.safe_dump_all(obj, sort_keys=False)
    return yaml.safe_dump(obj, sort_keys=False)
