# etcdraft demo node image, used by compose.yaml (the docker-compose dev cluster).
#
#   docker compose up --build      # or: docker-compose up --build
#
# There is no ENTRYPOINT: the command is the whole command line, by default (and in
# compose.yaml) `etcdraft node`, a toy sequencer node configured by ETCDRAFT_* variables.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src
COPY . /src
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --create-home --home-dir /home/etcdraft --shell /usr/sbin/nologin etcdraft

USER etcdraft
WORKDIR /home/etcdraft
# The node's own address for its peers (ETCDRAFT_RAFT_ADDR=nodeN:7000 in compose.yaml).
EXPOSE 7000

CMD ["etcdraft", "node"]
