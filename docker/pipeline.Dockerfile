# syntax=docker/dockerfile:1.7
# aicrush-pipeline: the KFP components (lightweight components over the installed aicrush
# package), and the MLflow and Feast servers, which need the same libraries. CPU only.
# Build from the repository root: docker build -f docker/pipeline.Dockerfile -t aicrush-pipeline .
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first (the lock the tests use), so code changes do not reinstall them.
# The extra index supplies torch's CPU build of the same release (2.13.0+cpu).
COPY docker/constraints.txt docker/constraints.txt
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu -r docker/constraints.txt
# Feast's MLflow plugin would import all of Feast (seconds of CPU) in every process that calls an
# MLflow server; aicrush uses no Feast MLflow data source (docker/skip_feast_mlflow_plugin.py).
COPY docker/skip_feast_mlflow_plugin.py docker/skip_feast_mlflow_plugin.py
RUN python docker/skip_feast_mlflow_plugin.py
COPY pyproject.toml README.md ./
COPY aicrush aicrush
COPY pipelines pipelines
COPY components components
COPY features features
COPY serving serving
RUN pip install --no-deps . && pip check

FROM ${PYTHON_IMAGE} AS runtime
# git: ingest_sources clones git sources (components/sources/git.py); the slim image has none.
# Unpinned (DL3008): the base image's tag fixes the Debian release, whose security updates
# replace a pinned version.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 aicrush \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/aicrush aicrush \
    # KFP's launcher stages artifacts under these roots; a non-root step must be able to write.
    && mkdir -p /gcs /minio /s3 \
    && chown 10001:10001 /gcs /minio /s3
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    HOME=/home/aicrush
USER 10001:10001
WORKDIR /home/aicrush
CMD ["aicrush", "--help"]
