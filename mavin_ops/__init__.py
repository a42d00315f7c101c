"""mavin-ops: the training-and-release platform for multi-shot audio-visual generation models.

Subpackages mirror the repository's top-level folders: ``mavin_ops.data`` (data/),
``mavin_ops.model`` (model/), ``mavin_ops.evaluation`` (evaluation/), ``mavin_ops.serving``
(serving/), ``mavin_ops.components`` (components/) and ``mavin_ops.pipelines`` (pipelines/).
"""

__version__ = "0.1.0"
