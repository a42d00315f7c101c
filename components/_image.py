"""The container image every component runs in on a cluster (the Dockerfile builds it from
the same lock as `make test`). Override with MAVIN_COMPONENT_IMAGE when compiling."""

import os

IMAGE = os.environ.get("MAVIN_COMPONENT_IMAGE", "mavin-ops:0.1.0")
