# syntax=docker/dockerfile:1.7
# aicrush-train: the train_model component on NVIDIA L4 (CUDA torch build of the locked release).
# The CUDA "base" image brings only the CUDA compat layer and the env the NVIDIA container runtime
# reads; torch's CUDA wheels bring cuBLAS/cuDNN themselves, so the runtime image stays small.
# Python is the same 3.11.7 the tests use (a relocatable python-build-standalone build via uv).
# Keep CUDA_IMAGE and TORCH_INDEX on the same CUDA major.minor.
# Build from the repository root: docker build -f docker/train.Dockerfile -t aicrush-train .
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.9.5

FROM ${UV_IMAGE} AS uv

FROM ${CUDA_IMAGE} AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_NO_CACHE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN uv python install 3.11.7 \
    && uv venv --seed --python 3.11.7 /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY docker/constraints.txt docker/constraints.txt
RUN pip install --extra-index-url "${TORCH_INDEX}" -r docker/constraints.txt
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

FROM ${CUDA_IMAGE} AS runtime
RUN groupadd --system --gid 10001 aicrush \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/aicrush aicrush \
    # KFP's launcher stages artifacts under these roots; a non-root step must be able to write.
    && mkdir -p /gcs /minio /s3 \
    && chown 10001:10001 /gcs /minio /s3
COPY --from=build /opt/python /opt/python
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    HOME=/home/aicrush
USER 10001:10001
WORKDIR /home/aicrush
CMD ["aicrush", "--help"]
