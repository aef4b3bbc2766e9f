# Container image of analyticsd: built on Debian 12, run on debian:12-slim.
#
#   docker build -t analytics-service:0.1.0 --build-arg REVISION=$(git rev-parse --short=12 HEAD) .
#   docker run -p 3004:3004 --env-file .env analytics-service:0.1.0
#
# Tag images with the version of CMakeLists.txt's project() (what
# `analyticsd --version` prints and k8s/ deploys); REVISION becomes the
# revision label of analyticsd_build_info and the image's OCI label.
#
# Publish 50051 too (-p 50051:50051) for the gRPC API. Data lives in the
# /var/lib/analyticsd volume; mount one (-v analytics-data:/var/lib/analyticsd)
# to keep it across containers. On SIGTERM the service drains for up to
# SHUTDOWN_GRACE_MS, so give `docker stop -t SECONDS` more than that.

# ---- build stage: compilers and -dev packages, thrown away afterwards ----
FROM debian:12 AS build
ARG REVISION=unknown

WORKDIR /src
# The dependency list changes rarely: install it before copying the tree so
# the package layer is reused across source edits.
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN sh scripts/install-deps.sh build && rm -rf /var/lib/apt/lists/*

COPY . .
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DANA_REVISION="$REVISION" \
 && cmake --build build --parallel "$(nproc)" \
 && cmake --install build --prefix /opt/analyticsd

# ---- runtime stage: the installed tree and its shared libraries only ----
FROM debian:12-slim AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="analyticsd" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$REVISION"

COPY scripts/install-deps.sh /tmp/install-deps.sh
RUN sh /tmp/install-deps.sh runtime \
 && rm -rf /var/lib/apt/lists/* /tmp/install-deps.sh

# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it and a
# mounted volume can be chowned to it ahead of time.
RUN groupadd --system --gid 10001 analyticsd \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /var/lib/analyticsd --shell /usr/sbin/nologin analyticsd \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/analyticsd

COPY --from=build /opt/analyticsd /opt/analyticsd
# analyticsctl and other tools link the client library in /opt/analyticsd/lib.
RUN echo /opt/analyticsd/lib > /etc/ld.so.conf.d/analyticsd.conf && ldconfig

# Defaults for a container; --env-file or the Kubernetes ConfigMap override
# them. GRPC_HOST binds all interfaces so published ports are reachable.
ENV PATH=/opt/analyticsd/bin:$PATH \
    PORT=3004 \
    GRPC_PORT=50051 \
    GRPC_HOST=0.0.0.0 \
    DATA_DIR=/var/lib/analyticsd \
    REPORTS_DIR=/var/lib/analyticsd/reports \
    EXPORTS_DIR=/var/lib/analyticsd/exports

# The embedded SQLite store, reports and exports; relative paths in an env
# file resolve here too.
VOLUME ["/var/lib/analyticsd"]
WORKDIR /var/lib/analyticsd
USER 10001:10001

# 3004: REST + WebSocket bridge (GET /health); 50051: gRPC (grpc.health.v1).
EXPOSE 3004 50051
STOPSIGNAL SIGTERM
# `analyticsd healthcheck` GETs /health on PORT (libcurl, 3 s timeout): 200
# is healthy; 503 (draining, disk full, REST side stalled) or no answer is not.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["/opt/analyticsd/bin/analyticsd", "healthcheck"]
ENTRYPOINT ["/opt/analyticsd/bin/analyticsd"]
