# syntax=docker/dockerfile:1
# litemaas-cache: the kopf operator (`operator`, liveness on :8080/healthz) and the analytics HTTP API (`api`, :8000).
#   docker build -t litemaas-cache-operator:0.1.0 .
#   docker run --rm -e DATABASE_URL=... -e REDIS_URL=... litemaas-cache-operator:0.1.0 operator
# Without a registry, `make image` builds it with podman FROM a Debian base it makes itself (scripts/image.sh).
# No secrets are baked in: every connection string comes from the environment (a Kubernetes Secret in the chart).
ARG PYTHON_IMAGE=python:3.11-slim

# --- build: the package and its dependencies in a virtualenv, trimmed to what runs ----------------------------------
FROM ${PYTHON_IMAGE} AS build
# PIP_CERT: the system bundle (scripts/image.sh mounts the host's over it, read-only, for the build only).
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PYTHONDONTWRITEBYTECODE=1
# binutils (strip) for this stage only. pip lives in a venv of its own and installs into /opt/venv with --python,
# so neither pip nor setuptools ends up in the image.
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends binutils >/dev/null \
    && rm -rf /var/lib/apt/lists/* \
    && python -m venv /opt/pip \
    && /opt/pip/bin/pip install -q --upgrade pip \
    && python -m venv --without-pip /opt/venv
WORKDIR /src
# Dependencies first (their own layer: a change of the package's code does not reinstall them), read from
# pyproject.toml's [project] dependencies, the one list of them.
COPY pyproject.toml ./
RUN SITE="$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
    && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        >requirements.txt \
    && /opt/pip/bin/pip --python /opt/venv/bin/python install -q --no-compile -r requirements.txt \
    # What no import of the package reaches: kubernetes' asyncio twin of its client (kopf uses the separate
    # kubernetes_asyncio; controller/kube.py the sync client); pyarrow's tests, C++ headers and Cython sources, and
    # its optional Flight RPC and S3 components (leaves of its library graph; pyarrow.fs works without them, as in
    # builds of pyarrow that leave them out); vendored test folders.
    && rm -rf "$SITE/kubernetes/aio" "$SITE/pyarrow/tests" "$SITE/pyarrow/include" "$SITE/pyarrow/src" \
        "$SITE"/pyarrow/_pyarrow_cpp_tests.* "$SITE"/pyarrow/*flight* "$SITE"/pyarrow/libarrow_s3.* \
        "$SITE"/pyarrow/_s3fs.* "$SITE/certifi/tests" "$SITE/websocket/tests" \
    && find "$SITE" \( -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' \) -delete \
    # Symbol tables of the wheels' shared objects (about a fifth of the venv). Libraries vendored by auditwheel
    # (*.libs/) were rewritten by patchelf and are left alone.
    && find "$SITE" -name '*.so*' -type f -not -path '*.libs/*' -exec strip --strip-unneeded {} +
COPY README.md* ./
COPY operator/ ./operator/
# Bytecode is compiled once here: the root filesystem is read-only at run time, so nothing could cache it later and
# every start would compile every imported module again. unchecked-hash: no source stat per import, and the same
# bytes for the same sources.
RUN /opt/pip/bin/pip --python /opt/venv/bin/python install -q --no-compile --no-deps . \
    && python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/venv/lib

# --- runtime: the virtualenv only, as an unprivileged user ----------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="litemaas-cache-operator" \
      org.opencontainers.image.description="Two-tier (Redis + PostgreSQL) cache and Kubernetes operator for LiteMaaS / LiteLLM admin usage analytics" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 litemaas \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
        --no-log-init litemaas
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
