"""Data: the MTSS script contract, synthetic MAVINSet-mini, DVC versioning and validation."""
