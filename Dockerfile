# syntax=docker/dockerfile:1
# The umbrella `qcdr` command line with every service package: the once-mode CronJob image
# (`qcdr run --once ...`, the original tool's CronJob mode) and the one-shot migrations
# (`qcdr-<service> db upgrade` for every service). Build from the repository root:
#   docker build -t qcdr/qcdr:0.1.0 .
# The long-running services have their own images: services/<service>/Dockerfile.
ARG BASE_IMAGE=python:3.11-slim

# ---- build: the whole workspace, as uv.lock pins it, into /opt/qcdr/venv
FROM ${BASE_IMAGE} AS build
ARG UV_VERSION=0.13.9
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/qcdr/venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
COPY libs/common/pyproject.toml libs/common/
COPY services/ingest/pyproject.toml services/ingest/
COPY services/analysis/pyproject.toml services/analysis/
COPY services/response/pyproject.toml services/response/
COPY services/admission/pyproject.toml services/admission/
COPY services/federation/pyproject.toml services/federation/
# Third-party dependencies alone first: this layer is reused until uv.lock changes.
RUN uv sync --locked --no-dev --no-install-workspace --all-packages
COPY src src
COPY libs/common/src libs/common/src
COPY services/ingest/src services/ingest/src
COPY services/analysis/src services/analysis/src
COPY services/response/src services/response/src
COPY services/admission/src services/admission/src
COPY services/federation/src services/federation/src
RUN uv sync --locked --no-dev --no-editable --all-packages

# ---- runtime
FROM ${BASE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="qcdr" \
      org.opencontainers.image.description="qcdr command line: once mode and migrations" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 qcdr \
 && useradd --system --uid 10001 --gid qcdr --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin qcdr
COPY --from=build /opt/qcdr/venv /opt/qcdr/venv
ENV PATH=/opt/qcdr/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /work
# A command that runs and exits: there is nothing to health-check.
HEALTHCHECK NONE
ENTRYPOINT ["qcdr"]
CMD ["--help"]
