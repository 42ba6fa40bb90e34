# syntax=docker/dockerfile:1.7
# aicrush-monitor: the drift monitor service. Receives the predictor's payload log (CloudEvents),
# runs Evidently over windows against the registered reference, exports /metrics on 8080. CPU only.
# Build from the repository root: docker build -f docker/monitor.Dockerfile -t aicrush-monitor .
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
EXPOSE 8080
ENTRYPOINT ["python", "-m", "serving.monitor"]
