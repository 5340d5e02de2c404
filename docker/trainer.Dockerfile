# syntax=docker/dockerfile:1
# Retraining image: the `train` extra (torch, transformers, optimum, wandb) on top of the package, and the
# training recipes (trainer/config) inside the package. Runs as a Kubernetes Job made from the chart's
# suspended CronJob: `kubectl create job --from=cronjob/<release>-trainer <name>`.
#
#   scripts/images.sh build trainer                 # buildah, no Docker engine (what CI runs)
#   docker build -f docker/trainer.Dockerfile -t complaints-allocation/trainer:0.1.0 .
#
# Dependencies come from requirements/trainer.lock (hash-pinned, a subset of the tests' dev.lock). PyPI's
# torch wheel carries CUDA libraries (several GB): the same wheel trains on a GPU node and on CPU.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 app \
 && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin app
ARG PIP_CERT
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements/build.lock requirements/trainer.lock /tmp/
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --require-hashes --only-binary=:all: -r /tmp/build.lock -r /tmp/trainer.lock
# A bind mount is not part of a layer's cache key: the digest of the sources (set by scripts/images.sh) is.
ARG SOURCE_DIGEST=unset
RUN --mount=type=bind,target=/src,rw \
    pip install --no-cache-dir --no-deps --no-build-isolation /src
# The commit the image was built from, which the trainer writes into each model's lineage. Last, so that a new
# commit rebuilds no dependency layer.
ARG GIT_COMMIT=unknown
LABEL org.opencontainers.image.source="https://github.com/complaints-allocation/complaints-allocation" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    ALLOCATOR_CODE_COMMIT=${GIT_COMMIT} \
    HF_HOME=/var/cache/complaints-allocation/hf \
    WANDB_DIR=/work
WORKDIR /work
USER 10001:10001
ENTRYPOINT ["python", "-m", "trainer"]
CMD ["--help"]
