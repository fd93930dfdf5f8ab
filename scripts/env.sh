# Source this (after scripts/setup.sh) to use the SAGE workspace:  source scripts/env.sh
# Keeps ROS on this machine (Fast DDS discovery on localhost only) and logs inside the
# workspace. ROS_DOMAIN_ID stays yours (ROS's default 0 when unset), so `sage status`,
# ros2 and rviz2 in a second terminal see the graph; tests and benchmarks pick their own.
_sage_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SAGE_ROOT="$_sage_root"
# shellcheck disable=SC1091
source "$_sage_root/.venv/bin/activate"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
# a node killed with -9 leaves the graph in 3 s (config/fastdds.xml), not 20
export FASTDDS_DEFAULT_PROFILES_FILE="${FASTDDS_DEFAULT_PROFILES_FILE:-$_sage_root/config/fastdds.xml}"
export ROS_HOME="${ROS_HOME:-$_sage_root/.ros}"
export ROS_LOG_DIR="${ROS_LOG_DIR:-$ROS_HOME/log}"
export SAGE_DATA_DIR="${SAGE_DATA_DIR:-$_sage_root/.cache/data}"
export SAGE_HOME="${SAGE_HOME:-$_sage_root/.sage}"   # models, memory, recordings
export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [ -f "$_sage_root/install/setup.bash" ]; then
  # shellcheck disable=SC1091
  source "$_sage_root/install/setup.bash"
  export PATH="$_sage_root/install/sage_bringup/lib/sage_bringup:$PATH"  # the `sage` command
fi
unset _sage_root
