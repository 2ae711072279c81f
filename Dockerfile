# etcdraft demo node image, used by compose.yaml (the docker-compose dev cluster).
#
#   docker compose up --build      # or: docker-compose up --build
#
# With a normal Docker engine it builds FROM python:3.11-slim and installs the
# repository with pip from PyPI. scripts/build-node-image builds the same file offline:
# BASE_IMAGE is then a Debian root file system made with debootstrap, and the build
# context holds a wheelhouse (.wheels/) that pip installs from with --no-index.
#
# etcdraft (with its metrics extra, for /metrics) goes into a virtual environment,
# /opt/etcdraft (first on PATH). There is no
# ENTRYPOINT: the command is the whole command line, by default (and in compose.yaml)
# `etcdraft node`, a toy sequencer node configured by ETCDRAFT_* variables.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/etcdraft/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

COPY . /src
RUN set -eu; \
    python3 -m venv /opt/etcdraft; \
    if [ -d /src/.wheels ]; then \
        pip install --no-cache-dir --no-index --find-links /src/.wheels 'etcdraft[metrics]'; \
    else \
        pip install --no-cache-dir "/src[metrics]"; \
    fi; \
    rm -rf /src; \
    etcdraft --version; \
    useradd --system --uid 10001 --create-home --home-dir /home/etcdraft --shell /usr/sbin/nologin etcdraft

USER etcdraft
WORKDIR /home/etcdraft
# ETCDRAFT_HTTP_ADDR (compose.yaml: 0.0.0.0:8080): /health/ready, /raft/node, /metrics, ...
EXPOSE 8080

CMD ["etcdraft", "node"]
