# syntax=docker/dockerfile:1
# The editor service (stateful Pix2Video editing sessions) on the GPU.
#
#   docker build -f deploy/docker/editor.Dockerfile -t pix2video-editor:0.1.0 .     (from the repository root)
#
# Base: NVIDIA's CUDA image, flavour "base" (the CUDA compatibility libraries and
# the NVIDIA_* variables the container toolkit reads). The CUDA runtime, cuBLAS
# and cuDNN come with the PyTorch CUDA wheels, so a "-runtime-" tag would only
# hold a second copy of them; pass CUDA_IMAGE=nvidia/cuda:<v>-runtime-ubuntu24.04
# where a torch built against the system CUDA is used.
# No model weights in the image: they are read from, or downloaded once into, the
# volume at /models (HF_HOME=/models/huggingface), which the Helm chart mounts.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04

FROM ${CUDA_IMAGE} AS build
ARG TORCH_VERSION=2.11.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from the CUDA index (the project's own requirement then holds).
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
COPY clients/ /src/clients/
COPY pyproject.toml README.md /src/
COPY services/ /src/services/
RUN pip install /src/clients /src

FROM ${CUDA_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
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
    PIX2VIDEO_HOME=/models/pix2video \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
# A container is reached from outside itself: listen on every interface (the
# services' own default is loopback only). Turn on TLS and tokens (docs/SECURITY.md).
ENV PIX2VIDEO_HOST=0.0.0.0
USER 10001:10001
WORKDIR /tmp
# gRPC, then Prometheus metrics.
EXPOSE 50064 9464
# Settings: flags or PIX2VIDEO_* variables (python -m pix2video.servers.editor --help).
ENTRYPOINT ["python", "-m", "pix2video.servers.editor"]
