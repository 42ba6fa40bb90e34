# syntax=docker/dockerfile:1.7
# aicrush-serve: the KServe model server (serving.server) for the model folder KServe's storage
# initializer puts in /mnt/models. Used by the aicrush-serve ServingRuntime. CPU only.
# Build from the repository root: docker build -f docker/serve.Dockerfile -t aicrush-serve .
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
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
RUN groupadd --system --gid 10001 aicrush \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/aicrush aicrush
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    HOME=/home/aicrush
USER 10001:10001
WORKDIR /home/aicrush
# REST (V1 + V2 Open Inference Protocol, /metrics) and gRPC
EXPOSE 8080 8081
ENTRYPOINT ["python", "-m", "serving.server"]
CMD ["--model_dir=/mnt/models", "--http_port=8080", "--grpc_port=8081"]
