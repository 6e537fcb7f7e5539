#!/usr/bin/env bash
# Builds (and with --push, pushes) the four service images from the repository root.
#
#   deploy/docker/build.sh [--registry REG] [--tag TAG] [--cuda-small] [--push]
#
# Images: REG/pix2video-{depth,caption,inversion,editor}:TAG (the Helm chart's
# image.registry and image.tag). inversion and editor are CUDA images; depth and
# caption are CPU images unless --cuda-small, which builds their CUDA variant and
# tags it TAG-cuda (set depth.image.tag / caption.image.tag to it in the chart).
set -euo pipefail
cd "$(dirname "$0")/../.."

registry="" tag="0.1.0" push=0 cuda_small=0
while [ $# -gt 0 ]; do
  case "$1" in
    --registry) registry="${2%/}/"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --push) push=1; shift ;;
    --cuda-small) cuda_small=1; shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

for svc in depth caption inversion editor; do
  image="${registry}pix2video-${svc}:${tag}"
  args=()
  if [ "$cuda_small" = 1 ] && { [ "$svc" = depth ] || [ "$svc" = caption ]; }; then
    image="${image}-cuda"
    args=(--build-arg BASE_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04
          --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128)
  fi
  echo "building ${image}" >&2
  docker build -f "deploy/docker/${svc}.Dockerfile" -t "${image}" "${args[@]}" .
  if [ "$push" = 1 ]; then
    docker push "${image}"
  fi
done
