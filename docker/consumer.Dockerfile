# syntax=docker/dockerfile:1
# Runtime image: `allocator` (consume, promoter, topics, strategy) with the base dependencies only,
# no torch. The explainer image is the same with the `explain` extra (shap):
#
#   docker build -f docker/consumer.Dockerfile -t complaints-allocation/consumer:0.1.0 .
#   docker build -f docker/consumer.Dockerfile --build-arg EXTRAS=explain \
#                -t complaints-allocation/explainer:0.1.0 .
#
# Runs as uid 10001 with a read-only root filesystem in Kubernetes: everything written goes to /tmp
# or /var/cache/complaints-allocation, both emptyDirs in the chart.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG EXTRAS=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies change less often than code: resolve them in their own layer first.
COPY pyproject.toml README.md LICENSE ./
RUN mkdir consumer explainer trainer bench \
 && pip install ".${EXTRAS:+[$EXTRAS]}" \
 && pip uninstall -y complaints-allocation
COPY consumer ./consumer
COPY explainer ./explainer
COPY trainer ./trainer
COPY bench ./bench
RUN pip install --no-deps ".${EXTRAS:+[$EXTRAS]}" \
 && ! pip show torch >/dev/null 2>&1  # the runtime must never pull torch in

FROM ${PYTHON_IMAGE}
# libgomp: OpenMP runtime for onnxruntime and numba (shap).
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
    ALLOCATOR_MODEL_CACHE_DIR=/var/cache/complaints-allocation/models \
    HF_HOME=/var/cache/complaints-allocation/hf
USER 10001:10001
# 9100: /metrics, /healthz, /readyz; 8080: explainer HTTP.
EXPOSE 9100 8080
ENTRYPOINT ["allocator"]
CMD ["consume"]
