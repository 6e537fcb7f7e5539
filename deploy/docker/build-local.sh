#!/usr/bin/env bash
# Builds the pix2video image (deploy/docker/Dockerfile) with no container registry:
#
#   deploy/docker/build-local.sh [--tag IMAGE] [--model-sets "tiny ..."] [--torch-version V]
#
# - engine: docker where a daemon answers, else podman (buildah underneath);
# - base: a Debian bookworm rootfs made with mmdebstrap (python3, python3-venv,
#   ca-certificates), imported as localhost/pix2video-base:bookworm;
# - wheels: torch and the project's requirements, built/downloaded on this host
#   with its pip (so its Python must be the base's, 3.11), served to the build from a
#   local index on 127.0.0.1 (the build runs with --network host).
# The base rootfs, the wheels and the engine's layer cache are kept between runs
# (PIX2VIDEO_BUILD_CACHE, default /var/cache/pix2video-build); a cold run needs
# only Debian's mirror and the host's pip index. Prints the image's size at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."

tag="localhost/pix2video:dev" model_sets="tiny" torch_version="2.13.0"
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag="$2"; shift 2 ;;
    --model-sets) model_sets="$2"; shift 2 ;;
    --torch-version) torch_version="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "build-local.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
done

cache="${PIX2VIDEO_BUILD_CACHE:-/var/cache/pix2video-build}"
python="${PYTHON:-python3}"
base="localhost/pix2video-base:bookworm"
mkdir -p "$cache/wheels"

if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  engine=docker
  export DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-0}"  # BuildKit's host network needs an entitlement
elif command -v podman >/dev/null; then
  engine=podman
else
  echo "build-local.sh: neither a running docker nor podman found" >&2
  exit 1
fi

if [ "$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" != 3.11 ]; then
  echo "build-local.sh: $python is not Python 3.11 (bookworm's), its wheels would not fit the image" >&2
  exit 1
fi

# 1. The base image, once per recipe: the recipe's hash names the rootfs and labels
#    the image, so a changed recipe makes a new base rather than reusing a stale one.
#    essential: no apt in the image (nothing installs packages there); no manual
#    pages, translations or documentation but the copyright files. The .tar name
#    tells mmdebstrap the output format (a name it does not know makes a directory).
recipe=(--variant=essential --include=python3,python3-venv,ca-certificates,libstdc++6
  '--dpkgopt=path-exclude=/usr/share/man/*' '--dpkgopt=path-exclude=/usr/share/locale/*'
  '--dpkgopt=path-exclude=/usr/share/doc/*' '--dpkgopt=path-include=/usr/share/doc/*/copyright' bookworm)
key="$(printf '%s\n' "${recipe[@]}" | sha256sum | cut -c1-12)"
# mmdebstrap runs in the background while the wheels are gathered (step 2).
mmdebstrap_pid="" server="" context=""
# On any exit: stop what this script started in the background, remove the context.
cleanup() {
  for pid in $mmdebstrap_pid $server; do kill "$pid" 2>/dev/null || true; done
  if [ -n "$context" ]; then rm -rf "$context"; fi
}
trap cleanup EXIT
trap 'exit 143' TERM INT
if [ "$("$engine" image inspect --format '{{index .Labels "pix2video.base"}}' "$base" 2>/dev/null)" != "$key" ]; then
  rootfs="$cache/rootfs-$key.tar"
  if [ ! -s "$rootfs" ]; then
    echo "build-local.sh: mmdebstrap bookworm base ($key)" >&2
    mmdebstrap_start=$SECONDS
    mmdebstrap --quiet --format=tar "${recipe[@]}" "$cache/rootfs-$key.part.tar" &
    mmdebstrap_pid=$!
  fi
fi

# 2. The wheels: torch, the third-party requirements of both pyproject files, uv
#    and the build backend of the project's own packages (installed with no
#    isolation). Gathered again only when that list changes (a stamp of its hash).
requirements="$cache/requirements.txt"
uv_version="$(sed -n 's/^ARG UV_VERSION=//p' deploy/docker/Dockerfile | head -n 1)"
"$python" - pyproject.toml clients/pyproject.toml >"$requirements" <<'EOF'
import sys, tomllib
for f in sys.argv[1:]:
    for r in tomllib.load(open(f, "rb"))["project"]["dependencies"]:
        if not r.startswith(("torch", "pix2video")):
            print(r)
EOF
printf '%s\n' "torch==$torch_version" setuptools==80.9.0 wheel==0.45.1 "uv==$uv_version" >>"$requirements"
stamp="$(sha256sum "$requirements" | cut -c1-16)"
if [ "$(cat "$cache/wheels/.stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "build-local.sh: wheels into $cache/wheels" >&2
  start=$SECONDS
  "$python" -m pip wheel -q --wheel-dir "$cache/wheels" --find-links "$cache/wheels" -r "$requirements"
  echo "$stamp" >"$cache/wheels/.stamp"
  echo "build-local.sh: wheels took $((SECONDS - start)) s" >&2
fi

if [ -n "$mmdebstrap_pid" ]; then
  wait "$mmdebstrap_pid"
  mmdebstrap_pid=""
  mv "$cache/rootfs-$key.part.tar" "$cache/rootfs-$key.tar"
  echo "build-local.sh: mmdebstrap took $((SECONDS - mmdebstrap_start)) s" >&2
fi
if [ "$("$engine" image inspect --format '{{index .Labels "pix2video.base"}}' "$base" 2>/dev/null)" != "$key" ]; then
  "$engine" import --change 'CMD ["/bin/bash"]' --change "LABEL pix2video.base=$key" \
    "$cache/rootfs-$key.tar" "$base" >/dev/null
fi

# The index URL is a build argument, and a changed build argument invalidates the
# layer cache of every RUN after it: a fixed port (the first free one from
# PIX2VIDEO_WHEELS_PORT, default 18765) keeps the cache across runs.
port="$("$python" -c '
import socket, sys
for port in range(int(sys.argv[1]), int(sys.argv[1]) + 100):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(port)
        break
' "${PIX2VIDEO_WHEELS_PORT:-18765}")"
"$python" -m http.server --bind 127.0.0.1 --directory "$cache/wheels" "$port" >/dev/null 2>&1 &
server=$!
context="$(mktemp -d)"
for _ in $(seq 50); do
  "$python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/')" 2>/dev/null && break
  sleep 0.1
done

# 3. The build context: only what the image installs (the .dockerignore list), so
#    every engine sees the same files whatever it makes of ignore files.
tar -c --exclude=__pycache__ --exclude='*.py[cod]' --exclude='*.egg-info' --exclude=build --exclude=dist \
  pyproject.toml README.md services clients deploy/docker/models deploy/docker/Dockerfile | tar -x -C "$context"

echo "build-local.sh: $engine build $tag" >&2
start=$SECONDS
jobs=()
# podman builds independent stages side by side (the app stage's uv beside deps).
[ "$engine" = podman ] && jobs=(--jobs 2)
"$engine" build "${jobs[@]}" --network host -f "$context/deploy/docker/Dockerfile" -t "$tag" \
  --build-arg BASE_IMAGE="$base" \
  --build-arg WHEELS_URL="http://127.0.0.1:$port/" \
  --build-arg TORCH_VERSION="$torch_version" \
  --build-arg MODEL_SETS="$model_sets" \
  "$context"
echo "build-local.sh: $engine build took $((SECONDS - start)) s" >&2
size="$("$engine" image inspect --format '{{.Size}}' "$tag")"
echo "build-local.sh: built $tag, $((size / 1000000)) MB" >&2
