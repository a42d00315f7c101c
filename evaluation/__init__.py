"""Evaluation: the papers' metrics on generated clips, and the release gate.

- :mod:`.metrics`   the definitions (STA, shot boundary deviation, TAMS, CISC/BISC, cosine), pure
- :mod:`.detectors` pluggable cut / speech detectors and visual / voice feature extractors
- :mod:`.regions`   where characters and backgrounds are in a shot
- :mod:`.runner`    every metric for every clip -> ``metrics.json`` (+ MLflow)
- :mod:`.results`   the ``metrics.json`` layout
- :mod:`.gate`      floors + paired-bootstrap non-regression vs the champion -> ``gate.json``
- :mod:`.report`    the gate's HTML page

``eval_config.yaml`` and ``gate_policy.yaml`` beside this file are the defaults.
"""

__all__ = ["detectors", "gate", "metrics", "regions", "report", "results", "runner"]
