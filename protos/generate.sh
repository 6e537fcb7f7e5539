#!/usr/bin/env bash
# Regenerates the Python gRPC code in clients/pix2video_api from protos/.
# Usage: protos/generate.sh [OUT_DIR]   (default: clients). Needs grpcio-tools
# at the version pinned in clients/pyproject.toml's [dev] extra, so output is
# byte-identical to what is committed (a test checks).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-clients}"
mkdir -p "$out"
find "$out/pix2video_api" -name '*_pb2*.py*' -delete 2>/dev/null || true
python -m grpc_tools.protoc -I protos \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  $(cd protos && find pix2video_api -name '*.proto' | sort)
# Python packages for every generated folder.
find "$out/pix2video_api" -type d -exec sh -c 'for d; do [ -e "$d/__init__.py" ] || : > "$d/__init__.py"; done' _ {} +
