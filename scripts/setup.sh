#!/usr/bin/env bash
# Set up napari-pandg on a fresh Debian/Ubuntu-like machine: system libraries for napari under
# Xvfb (when run as root with apt), a virtual environment in .venv, torch (CPU use), sam2 1.1.0
# and the package with its GUI, model and test extras. Safe to run again: it skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${PANDG_VENV:-.venv}"
PY="${PYTHON:-python3}"
TORCH_SPEC="${PANDG_TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"

DEBS="xvfb xauth libgl1 libegl1 libopengl0 libglx-mesa0 libgl1-mesa-dri libosmesa6 libdbus-1-3 \
libfontconfig1 libxkbcommon-x11-0 libx11-xcb1 libxcb-cursor0 libxcb-icccm4 libxcb-image0 \
libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xfixes0 libxcb-xinerama0 \
libxcb-xinput0 x11-utils"
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  # shellcheck disable=SC2086
  if ! command -v Xvfb >/dev/null 2>&1 || ! dpkg -s $DEBS >/dev/null 2>&1; then
    echo "[setup] installing Debian packages for napari under Xvfb + Mesa"
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $DEBS >/dev/null
  fi
elif ! command -v Xvfb >/dev/null 2>&1; then
  echo "[setup] warning: Xvfb not found and not root: the napari GUI tests need 'xvfb' and Mesa" >&2
fi

stamp_src="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
stamp="$VENV/.pandg-setup-$stamp_src"
if [ -f "$stamp" ]; then
  echo "[setup] $VENV is up to date"
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
echo "[setup] torch ($TORCH_SPEC)"
# shellcheck disable=SC2086
"${PIP[@]}" $TORCH_SPEC
echo "[setup] sam2 1.1.0 (source package, built against the installed torch, no CUDA extension)"
SAM2_BUILD_CUDA=0 "${PIP[@]}" --no-build-isolation "sam2==1.1.0"
echo "[setup] napari-pandg with GUI, model and test extras"
"${PIP[@]}" -e ".[all,test]"
rm -f "$VENV"/.pandg-setup-*
touch "$stamp"
echo "[setup] done: $VENV"
