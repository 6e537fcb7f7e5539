#!/usr/bin/env bash
# Builds (and with --push, pushes) the pix2video image, the four services in one,
# from deploy/docker/Dockerfile with a registry at hand (no registry: build-local.sh).
#
#   deploy/docker/build.sh [--registry REG] [--tag TAG] [--cuda] [--push]
#
# Image: REG/pix2video:TAG (the Helm chart's image.registry and image.tag). A CPU
# build on python:3.12-slim-bookworm; --cuda builds on NVIDIA's CUDA base with the
# CUDA torch wheels and tags TAG-cuda.
set -euo pipefail
cd "$(dirname "$0")/../.."

registry="" tag="0.1.0" push=0 cuda=0
while [ $# -gt 0 ]; do
  case "$1" in
    --registry) registry="${2%/}/"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --push) push=1; shift ;;
    --cuda) cuda=1; shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

image="${registry}pix2video:${tag}"
args=()
if [ "$cuda" = 1 ]; then
  image="${image}-cuda"
  args=(--build-arg BASE_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04
        --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128)
fi
echo "building ${image}" >&2
docker build -f deploy/docker/Dockerfile -t "${image}" "${args[@]}" .
if [ "$push" = 1 ]; then
  docker push "${image}"
fi
