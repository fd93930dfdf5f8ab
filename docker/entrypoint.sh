#!/usr/bin/env bash
# Source ROS, the SAGE venv and workspace, then run the given command (default: sage run).
set -e
if [ -f "/opt/ros/${ROS_DISTRO}/setup.bash" ]; then
  source "/opt/ros/${ROS_DISTRO}/setup.bash"
elif [ -f "/opt/ros/${ROS_DISTRO}/install/setup.bash" ]; then
  source "/opt/ros/${ROS_DISTRO}/install/setup.bash"
fi
source /opt/sage/venv/bin/activate
source /opt/sage/install/setup.bash
exec "$@"
