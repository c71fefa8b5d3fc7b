# syntax=docker/dockerfile:1
# The corvid image: corvid-server, corvid-controlplane, corvidctl, corvid-run, corvid-index
# and corvid-quantize, run as user 10001, the chart's runAsUser.
#
#   docker build -t corvid:0.1.0 .                              # CUDA build (default)
#   docker build --build-arg VARIANT=cpu -t corvid:0.1.0-cpu .  # CPU-only build
#
# The build stage runs the commands of .ci/run (Debian packages from .ci/apt-packages,
# then make with the same targets), so every CI run exercises them even though no
# Docker engine runs there. The runtime stage installs only the packages that own the
# shared libraries the binaries link, found with ldd and dpkg in the build stage.
ARG VARIANT=cuda
ARG CUDA_VERSION=13.0.0
ARG CUDA_OS=ubuntu24.04

FROM nvidia/cuda:${CUDA_VERSION}-devel-${CUDA_OS} AS build-cuda
FROM debian:12 AS build-cpu
FROM nvidia/cuda:${CUDA_VERSION}-runtime-${CUDA_OS} AS runtime-cuda
FROM debian:12-slim AS runtime-cpu

FROM build-${VARIANT} AS build
ARG VARIANT
ENV DEBIAN_FRONTEND=noninteractive
WORKDIR /src
COPY .ci/apt-packages .ci/apt-packages
RUN apt-get update -qq \
 && apt-get install -y -qq $(cat .ci/apt-packages) >/dev/null \
 && rm -rf /var/lib/apt/lists/*
COPY . .
# .ci/run: `make -j"$nproc_" all`, and with nvcc `make -j"$nproc_" CUDA=1 BUILD=build/cuda all`.
RUN if [ "$VARIANT" = cuda ]; then \
        make -j"$(nproc)" CUDA=1 BUILD=build/cuda all && bin=build/cuda/bin; \
    else \
        make -j"$(nproc)" all && bin=build/bin; \
    fi \
 && mkdir -p /out/bin \
 && cp "$bin"/corvid-* "$bin"/corvidctl /out/bin/ \
 && for lib in $(ldd /out/bin/* | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u); do \
        dpkg -S "$(readlink -f "$lib")" 2>/dev/null || dpkg -S "$lib"; \
    done | cut -d: -f1 | sort -u > /out/runtime-packages \
 && cat /out/runtime-packages

FROM runtime-${VARIANT}
ENV DEBIAN_FRONTEND=noninteractive
COPY --from=build /out/runtime-packages /tmp/runtime-packages
# curl and sha256sum serve the chart's fetch-model init container.
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends $(cat /tmp/runtime-packages) curl ca-certificates >/dev/null \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages \
 && groupadd --gid 10001 corvid \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin corvid
COPY --from=build /out/bin/ /usr/local/bin/
# A library no package provided would only show when the pod starts: fail the build instead.
RUN ! ldd /usr/local/bin/* | grep -F "not found"
USER 10001:10001
WORKDIR /tmp
EXPOSE 50051 9464
ENTRYPOINT []
CMD ["corvid-server", "--help"]
