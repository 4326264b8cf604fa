# syntax=docker/dockerfile:1
# litemaas-cache: the kopf operator (`operator`, liveness on :8080/healthz) and the analytics HTTP API (`api`, :8000).
#   docker build -t litemaas-cache-operator:0.1.0 .
#   docker run --rm -e DATABASE_URL=... -e REDIS_URL=... litemaas-cache-operator:0.1.0 operator
# No secrets are baked in: every connection string comes from the environment (a Kubernetes Secret in the chart).
ARG PYTHON_IMAGE=python:3.11-slim

# --- build: install the package and its dependencies into a virtualenv (wheels only, no compiler needed) -----------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# README.md is optional here (pyproject names it; the wildcard keeps the build working without it).
COPY pyproject.toml README.md* ./
COPY operator/ ./operator/
RUN pip install --upgrade pip \
    && pip install . \
    && python -m compileall -q /opt/venv/lib

# --- runtime: the virtualenv only, as an unprivileged user ----------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="litemaas-cache-operator" \
      org.opencontainers.image.description="Two-tier (Redis + PostgreSQL) cache and Kubernetes operator for LiteMaaS / LiteLLM admin usage analytics" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 litemaas \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin litemaas
COPY --from=build /opt/venv /opt/venv
# HOME and the working directory point at /tmp: the chart mounts an emptyDir there and keeps the root filesystem
# read-only.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
WORKDIR /tmp
USER 10001:10001
# 8080: the operator's kopf liveness endpoint (/healthz); 8000: the analytics HTTP API.
EXPOSE 8080 8000
ENTRYPOINT ["litemaas-cache"]
CMD ["operator"]
