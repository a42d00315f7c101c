"""Train one stage of the recipe (training/trainer.py) and output its final checkpoint."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from mavin_ops.components._image import IMAGE


@dsl.component(base_image=IMAGE)
def train(
    stage: str,
    preset: str,
    dataset: Input[Dataset],
    dataset_digest: str,
    release_id: str,
    kfp_run_id: str,
    checkpoint: Output[Model],
    parent_checkpoint: Input[Model] = None,
    steps: int = 0,
    procs: int = 1,
    base: str = "",
) -> NamedTuple("TrainOutputs", step=int, final_loss=float, checkpoint_sha256=str, run_id=str):
    """Train ``stage`` (id | multishot | av | joint) of ``preset`` on ``dataset``, starting from
    ``parent_checkpoint`` (the previous stage's output; not given for ``id``, which starts from
    the foundation model ``base`` names: empty for the one the project ships for the preset,
    ``mavin-base@<alias|version>``, or a path; see mavin_ops/foundation.py. The release's parent
    run records which: ``mavin.base``, ``mavin.base_sha256``, ``mavin.base_checkpoint``). ``steps`` > 0
    overrides the recipe's step count; ``procs`` > 1 trains with that many local processes
    (training/launch.py: torchrun, gloo on CPU, NCCL on GPUs). On a cluster the profile's
    launch plan (``$MAVIN_LAUNCH``) decides instead: a TrainJob of N nodes x G GPUs that this
    step submits and follows (training/k8s.py), or G local processes on the step's own pod. The working checkpoints live under
    ``$MAVIN_HOME/runs/<release>/train/<stage>`` so a retried task resumes; the final
    checkpoint is copied to ``checkpoint.path``. Logs a nested MLflow run ``train_<stage>``.

    ``dataset`` is validate_data's validated dataset in the release pipeline: only the clips
    validation kept. The run records what was left out: tags ``mavin.quarantined_count`` and
    ``mavin.quarantined_ids`` (and ``mavin.dataset_validated``: false for a folder that did
    not come out of validation)."""
    from collections import namedtuple

    from mavin_ops import settings, tracking
    from mavin_ops.data import validate
    from mavin_ops.training import checkpoint as ckpt
    from mavin_ops.training.launch import StageLaunch, from_environment, launch

    record = validate.quarantine_record(dataset.path)  # what validation left out of this dataset
    from mavin_ops.training.recipes import STAGES

    init = parent_checkpoint.path if parent_checkpoint is not None else None
    if init is None and stage == STAGES[0]:  # the id stage fine-tunes a foundation model
        from mavin_ops import foundation

        found = foundation.resolve(base, preset)  # None: a preset that trains from scratch
        if found is not None:
            init = str(found.checkpoint)
            parent = tracking.parent_run(release_id, kfp_run_id)
            for tag, value in {"mavin.base": found.ref, "mavin.base_sha256": found.sha256,
                               "mavin.base_checkpoint": settings.portable(found.checkpoint)}.items():
                tracking.client().set_tag(parent, tag, value)
    key = tracking.release_key(release_id, kfp_run_id)
    workdir = settings.home() / "runs" / key / "train" / stage
    # The cluster profile's launch plan ($MAVIN_LAUNCH) picks the backend and size; without
    # one, procs does (in this process, or torchrun on this machine).
    kind, nproc, cluster = from_environment(stage, str(settings.home()), procs)
    spec = StageLaunch(stage, preset, dataset=dataset.path, out_dir=str(workdir), nproc=nproc,
                       init_checkpoint=init,
                       steps=steps if steps > 0 else 0, dataset_digest=dataset_digest, release_id=release_id, kfp_run_id=kfp_run_id,
                       kind=kind)
    result = launch(spec, log_dir=workdir.parent / f".{stage}.ranks", cluster=cluster)
    if result.run_id:
        c = tracking.client()
        quarantine = {"mavin.dataset_validated": "true" if record is not None else "false"}
        if record is not None:
            quarantine.update({"mavin.quarantined_count": str(record.count), "mavin.quarantined_ids": record.ids_text()})
        for tag, value in quarantine.items():
            c.set_tag(result.run_id, tag, value)
    ckpt.copy_checkpoint(result.checkpoint, checkpoint.path)
    final_loss = result.losses[-1]["loss"] if result.losses else float("nan")
    checkpoint.metadata.update(
        {
            "stage": stage,
            "preset": preset,
            "step": result.step,
            "checkpoint_sha256": result.checkpoint_sha256,
            "dataset_digest": result.dataset_digest,
            "mlflow_run_id": result.run_id or "",
            "parent_checkpoint": result.init_checkpoint or "",
            "quarantined_count": record.count if record is not None else -1,
        }
    )
    out = namedtuple("TrainOutputs", ["step", "final_loss", "checkpoint_sha256", "run_id"])
    return out(result.step, float(final_loss), result.checkpoint_sha256, result.run_id or "")
