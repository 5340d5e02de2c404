# syntax=docker/dockerfile:1
# Retraining image: the `train` extra (torch, transformers, optimum, wandb) on top of the package.
# Runs as a Kubernetes Job from the chart's suspended CronJob (`python -m trainer train ...`).
#
#   docker build -f docker/trainer.Dockerfile -t complaints-allocation/trainer:0.1.0 .
#
# TORCH_INDEX_URL: PyPI's torch wheel carries CUDA libraries (several GB). On CPU-only clusters
# point it at a CPU-only wheel index to keep the image small; the torch pin in pyproject still applies.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
RUN mkdir consumer explainer trainer bench \
 && pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} ".[train]" \
 && pip uninstall -y complaints-allocation
COPY consumer ./consumer
COPY explainer ./explainer
COPY trainer ./trainer
COPY bench ./bench
RUN pip install --no-deps ".[train]"

FROM ${PYTHON_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 app \
 && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    HF_HOME=/var/cache/complaints-allocation/hf \
    WANDB_DIR=/work
WORKDIR /work
USER 10001:10001
ENTRYPOINT ["python", "-m", "trainer"]
CMD ["--help"]
