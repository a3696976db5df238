#!/usr/bin/env bash
# Build (or reuse) an mmcv wheel with compiled ops (CPU-only by default) for the mmdetection
# reference install (`make mmdet`).
#
# mmcv 2.1.0 has no wheel for this torch/python, and its setup.py hard-codes
# `-std=c++17` while torch >= 2.10 headers need C++20.  We download the PyPI
# sdist, patch that one build flag with sed (no fork), build a wheel against the
# venv's torch (--no-build-isolation) and cache it outside the repository,
# keyed by mmcv + torch + python versions (+ cpu/cuXY), so later runs reuse it (10-25 min on
# 2 cores otherwise).
#
# Usage: tools/build_mmcv.sh [PYTHON]     (default: .venv/bin/python)
# Env:   RMBENCH_CACHE (default ~/.cache/refinemask-bench), MMCV_VERSION (2.1.0),
#        MAX_JOBS (default: nproc), FORCE_CUDA (default 0: CPU ops unless torch sees a GPU).
# Prints the path of the wheel as its last line.
set -euo pipefail

PY=${1:-${PYTHON_BIN:-.venv/bin/python}}
# absolute path: the build runs from the unpacked source tree
case "$PY" in /*) ;; */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac
MMCV_VERSION=${MMCV_VERSION:-2.1.0}
CACHE=${RMBENCH_CACHE:-$HOME/.cache/refinemask-bench}
WHEELS="$CACHE/wheels"
mkdir -p "$WHEELS"

TORCH_V=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')
PY_V=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
# mmcv compiles CUDA ops when torch sees a GPU or FORCE_CUDA=1 (default here: 0, CPU ops only)
export FORCE_CUDA=${FORCE_CUDA:-0}
VARIANT=$("$PY" -c 'import os, torch
cuda = torch.cuda.is_available() or os.environ["FORCE_CUDA"] == "1"
print(f"cu{torch.version.cuda}" if cuda and torch.version.cuda else "cpu")')
KEY="mmcv-${MMCV_VERSION}_torch-${TORCH_V}_${PY_V}_${VARIANT}"
DEST="$WHEELS/$KEY"

existing=$(ls "$DEST"/mmcv-*.whl 2>/dev/null | head -n1 || true)
if [[ -n "$existing" ]]; then
    echo "build_mmcv: reusing cached wheel ($KEY)" >&2
    echo "$existing"
    exit 0
fi

echo "build_mmcv: building mmcv $MMCV_VERSION ($VARIANT ops) for torch $TORCH_V / $PY_V (10-25 min on 2 cores)" >&2
# Build requirements inside the venv (no build isolation: mmcv compiles against the venv's torch).
"$PY" -m pip install --quiet 'setuptools<81' wheel ninja "${MMENGINE_SPEC:-mmengine==0.10.7}" >&2

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mmcv_build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
"$PY" -m pip download --quiet --no-deps --no-binary :all: "mmcv==$MMCV_VERSION" -d "$WORK" >&2
tar -xzf "$WORK"/mmcv-"$MMCV_VERSION".tar.gz -C "$WORK"
SRC="$WORK/mmcv-$MMCV_VERSION"

# The one fix: torch 2.14's headers require C++20.
n=$(grep -c -- '-std=c++17' "$SRC/setup.py" || true)
if [[ "$n" == "0" ]]; then
    echo "build_mmcv: warning: no '-std=c++17' in setup.py; building unpatched" >&2
fi
sed -i 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
echo "build_mmcv: patched $n occurrence(s) of -std=c++17 -> -std=c++20" >&2

mkdir -p "$WORK/dist"
(
    cd "$SRC"
    export MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)}
    # Python's sysconfig adds -g: without debug info the compile is faster and the wheel ~10x smaller
    export CFLAGS="${CFLAGS:-} -g0" CXXFLAGS="${CXXFLAGS:-} -g0"
    "$PY" -m pip wheel --no-build-isolation --no-deps -v . -w "$WORK/dist" >&2
)
whl=$(ls "$WORK"/dist/mmcv-*.whl | head -n1)
mkdir -p "$DEST.tmp"
cp "$whl" "$DEST.tmp/"
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
echo "build_mmcv: cached $(basename "$whl") under $DEST" >&2
ls "$DEST"/mmcv-*.whl | head -n1
