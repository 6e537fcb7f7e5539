# syntax=docker/dockerfile:1
# The caption service (BLIP captions), CPU build on a slim Python base by default.
#
#   docker build -f deploy/docker/caption.Dockerfile -t pix2video-caption:0.1.0 .     (from the repository root)
#
# For a GPU node pool build the CUDA variant of the same file:
#
#   docker build -f deploy/docker/caption.Dockerfile -t pix2video-caption:0.1.0-cuda \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04 \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
#
# No model weights in the image: they are read from, or downloaded once into, the
# volume at /models (HF_HOME=/models/huggingface), which the Helm chart mounts.
ARG BASE_IMAGE=python:3.12-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG TORCH_VERSION=2.11.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The slim image has Python; the CUDA image gets Ubuntu's.
RUN if ! command -v python3 >/dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
COPY clients/ /src/clients/
COPY pyproject.toml README.md /src/
COPY services/ /src/services/
RUN pip install /src/clients /src

FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
RUN if ! command -v python3 >/dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && groupadd --gid 10001 pix2video \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin pix2video \
    && mkdir -p /models \
    && chown 10001:10001 /models
COPY --from=build /opt/venv /opt/venv
# Read-only root filesystem friendly: nothing is written outside /tmp and /models.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    HF_HOME=/models/huggingface \
    PIX2VIDEO_HOME=/models/pix2video
# A container is reached from outside itself: listen on every interface (the
# services' own default is loopback only). Turn on TLS and tokens (docs/SECURITY.md).
ENV PIX2VIDEO_HOST=0.0.0.0
USER 10001:10001
WORKDIR /tmp
# gRPC, then Prometheus metrics.
EXPOSE 50062 9462
# Settings: flags or PIX2VIDEO_* variables (python -m pix2video.servers.caption --help).
ENTRYPOINT ["python", "-m", "pix2video.servers.caption"]
