# computenode's container image. Build it with scripts/build-image.sh, which makes the
# base image locally (debootstrap, nothing pulled) and the wheels on the host, then runs
#   docker build --network host -t computenode:latest .
# Nothing here reaches the network: pip installs only from build/image/*.
# How to run it (Docker socket, kubo, data dir): docs/docker-image.md.
ARG BASE=computenode-base/debian-python:bookworm

# Stage 1: a virtualenv with computenode and its dependencies, from wheels only.
FROM ${BASE} AS build
RUN python3 -m venv /opt/venv
# Dependencies first, in their own layer: it stays cached while only the code changes.
COPY build/image/wheels/ /wheels/
RUN /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels \
        --disable-pip-version-check $(ls /wheels/*.whl)
COPY build/image/project/ /project/
RUN /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels \
        --disable-pip-version-check /project/computenode-*.whl \
    && /opt/venv/bin/python -c 'import computenode'

# Stage 2: the runtime, without the wheels and the build layers. Everything that does
# not depend on the code comes first, so a code change rebuilds only the last COPY.
FROM ${BASE}
# A fixed uid/gid so a bind-mounted data dir can be chowned on the host beforehand.
# The HEALTHCHECK probe is a few lines of Python (the image has no curl): GET /healthz
# where COMPUTENODE_API__LISTEN says the node listens.
RUN groupadd --system --gid 10001 computenode \
    && useradd --system --uid 10001 --gid computenode --home-dir /var/lib/computenode \
        --no-create-home --shell /usr/sbin/nologin computenode \
    && install -d -o computenode -g computenode -m 0750 /var/lib/computenode \
    && install -d -m 0755 /etc/computenode \
    && printf '%s\n' \
        '#!/opt/venv/bin/python' \
        '"""Docker HEALTHCHECK for computenode: GET /healthz on COMPUTENODE_API__LISTEN."""' \
        'import os, sys, urllib.request' \
        'host, _, port = os.environ.get("COMPUTENODE_API__LISTEN", "127.0.0.1:1234").rpartition(":")' \
        '# A wildcard listen address is reached on loopback.' \
        'host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "[::]": "[::1]", "::": "[::1]"}.get(host, host)' \
        'try:' \
        '    urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=4).close()' \
        'except Exception as exc:' \
        '    sys.exit(f"unhealthy: {exc}")' \
        >/usr/local/bin/computenode-healthcheck \
    && chmod 0755 /usr/local/bin/computenode-healthcheck

ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    COMPUTENODE_API__LISTEN=0.0.0.0:1234 \
    COMPUTENODE_NODE__DATA_DIR=/var/lib/computenode
# The node ID, store and results live here. Job containers started through the host's
# Docker bind-mount paths under it, so mount the host dir at the same path (docs).
VOLUME /var/lib/computenode
EXPOSE 1234
WORKDIR /var/lib/computenode
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/computenode-healthcheck"]
# tini reaps zombies and forwards SIGTERM, which makes the node drain; give
# `docker stop -t` more than timeouts.drain_grace.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "computenode"]
CMD ["run", "--config", "/etc/computenode/computenode.yaml"]
USER computenode
# COPY ignores USER: both stay root-owned, read-only to the node.
COPY build/image/computenode.yaml /etc/computenode/computenode.yaml
COPY --from=build /opt/venv /opt/venv
