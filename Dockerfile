# The component image for the cluster: the pinned stack from requirements.lock (the same
# lock `make test` installs) plus the project. Build: docker build -t mavin-ops:0.1.0 .
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends git g++ make \
 && rm -rf /var/lib/apt/lists/*

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DVC_NO_ANALYTICS=1 \
    MAVIN_HOME=/var/lib/mavin \
    TORCH_EXTENSIONS_DIR=/var/lib/mavin/torch_extensions

WORKDIR /opt/mavin-ops
COPY requirements.lock pyproject.toml README.md ./
# Same order as the Makefile: torch first and pinned, then exactly the lock (--no-deps).
RUN python -m pip install --no-cache-dir pip==26.3 setuptools==84.2.1 wheel==0.48.0 \
 && python -m pip install --no-cache-dir torch==2.13.0 \
 && python -m pip install --no-cache-dir --no-deps -r requirements.lock

COPY . .
RUN python -m pip install --no-cache-dir --no-deps --no-build-isolation -e . \
 && mavin-ops --help > /dev/null

ENTRYPOINT []
