#!/usr/bin/env bash
# One-step set-up on a fresh machine: .venv/ with pinned dependencies (torch, sam2, torchscale,
# transformers, real ROS 2 kilted wheels with Fast DDS), this package (editable), and the custom
# messages in msg/ built with CMake into the venv. Safe to run again: it skips finished steps.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
t0=$(date +%s)
stamp() { echo "[setup] $1 ($(( $(date +%s) - t0 )) s)"; }

"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), "ROS 2 kilted wheels need Python 3.11"' || {
  echo "error: Python 3.11 is required (found $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2; exit 1; }

if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv "$VENV"
  stamp "created $VENV"
fi
lock_hash=$(sha256sum "$REPO/requirements.lock" | cut -d' ' -f1)
if [[ "$(cat "$VENV/.lock-installed" 2>/dev/null)" != "$lock_hash" ]]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REPO/requirements.lock"
  echo "$lock_hash" > "$VENV/.lock-installed"
  stamp "installed pinned dependencies"
else
  stamp "pinned dependencies already installed"
fi
# compat mode: a .pth path entry, so the repo's mpg_sam2_ros/__init__.py runs and merges with
# the generated message modules that CMake installs into site-packages
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
  -e "$REPO" --config-settings editable_mode=compat
stamp "installed mpg_sam2_ros (editable)"
mkdir -p "$REPO/build"; MPG_SAM2_NO_PIP=1 VENV="$VENV" bash "$REPO/scripts/build_msgs.sh" > "$REPO/build/msgs.log" 2>&1 || {
  mkdir -p "$REPO/build"; cat "$REPO/build/msgs.log" >&2; exit 1; }
stamp "built messages from msg/ (log: build/msgs.log)"
