# syntax=docker/dockerfile:1
# Runtime image: `allocator` (consume, promoter, topics, strategy) with the base dependencies only, no torch.
# The explainer image is the same with the explainer lock (the `explain` extra, shap):
#
#   scripts/images.sh build consumer explainer      # buildah, no Docker engine (what CI runs)
#   docker build -f docker/consumer.Dockerfile -t complaints-allocation/consumer:0.1.0 .
#   docker build -f docker/consumer.Dockerfile --build-arg LOCK=explainer -t complaints-allocation/explainer:0.1.0 .
#
# Dependencies come from requirements/$LOCK.lock, hash-pinned, a subset of requirements/dev.lock that the tests
# install: the image runs exactly the versions the tests passed with.
# Runs as uid 10001 with a read-only root filesystem in Kubernetes: everything written goes to /tmp
# or /var/cache/complaints-allocation, both emptyDirs in the chart.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE}
# libgomp: OpenMP runtime for onnxruntime and numba (shap). Pinning it would break on every Debian point
# release, and the base image's digest already fixes the distribution.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 app \
 && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin app
ARG LOCK=consumer
# Set by scripts/images.sh when the build host reaches PyPI through a private CA (mounted for the build only).
ARG PIP_CERT
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Dependencies change less often than code: their own layer, keyed by the lock alone.
COPY requirements/build.lock requirements/${LOCK}.lock /tmp/
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --require-hashes --only-binary=:all: -r /tmp/build.lock -r /tmp/${LOCK}.lock
# The package itself, from a bind mount of the context: no layer holds a copy of the sources.
# A bind mount is not part of a layer's cache key: the digest of the sources (set by scripts/images.sh) is.
ARG SOURCE_DIGEST=unset
RUN --mount=type=bind,target=/src,rw \
    pip install --no-cache-dir --no-deps --no-build-isolation /src \
 && ! pip show torch >/dev/null 2>&1  # the runtime must never pull torch in
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
    ALLOCATOR_MODEL_CACHE_DIR=/var/cache/complaints-allocation/models \
    HF_HOME=/var/cache/complaints-allocation/hf
USER 10001:10001
# 9100: /metrics, /healthz, /readyz; 8080: explainer HTTP.
EXPOSE 9100 8080
ENTRYPOINT ["allocator"]
CMD ["consume"]
