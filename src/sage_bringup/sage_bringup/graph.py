"""The SAGE node graph: which nodes exist and how a params file selects them.

Both entry points read this module, so they cannot drift apart: the `sage`
command (sage_bringup.cli) and launch/sage.launch.py. ROS-free: it only
reads YAML and describes nodes.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

SOURCES = ('world', 'bag', 'hardware')
LOG_LEVELS = ('debug', 'info', 'warn', 'error', 'fatal')


@dataclass(frozen=True)
class NodeSpec:
    """A SAGE node: where it lives and with which input sources it runs."""

    name: str                 # default node name, and its key in the params YAML
    package: str
    executable: str           # console script installed in lib/<package>/
    entry: str                # 'module:Class' for in-process start
    description: str
    lifecycle: bool = False   # configured and activated by the starter (autostart)
    sources: tuple = SOURCES  # input sources the node runs with
    # parameter overrides per input source, e.g. {'hardware': {'source': 'device'}}
    source_params: dict = field(default_factory=dict)
    # CPU niceness of the node's process: nodes off the sensor -> decision path yield the
    # cores to it (on 2 cores: 30 Hz camera -> decision p99 24 ms instead of 44 ms)
    nice: int = 0

    @property
    def prefix(self) -> list[str]:
        """Command prefix that starts the node's process (``nice``), or none."""
        return ['nice', '-n', str(self.nice)] if self.nice else []

    def node_class(self):
        """Import and return the node class (imports rclpy and the node's libraries)."""
        module, cls = self.entry.split(':')
        return getattr(importlib.import_module(module), cls)

    def params_for(self, source: str) -> dict[str, Any]:
        """Return the parameter overrides this node takes for ``source``."""
        return dict(self.source_params.get(source, {}))


BACKGROUND = 10     # niceness of nodes that must not delay a control cycle
VIEW = 15           # ... nor a plan or the places: what people watch, and the nights (the
#                     day's loop is quiet at night; a night's wall-time budget is its own)

# Every node SAGE can start. A node runs only when its block is present in the
# params file, so a deployment picks its nodes by config alone.
NODES: dict[str, NodeSpec] = {spec.name: spec for spec in [
    NodeSpec('world', 'sage_sim', 'world_node', 'sage_sim.world_node:WorldNode',
             'the built-in world: camera, IMU, audio, instruction, reward, teacher, /clock',
             sources=('world',)),
    NodeSpec('camera', 'sage_sensors', 'camera_node', 'sage_sensors.sensor_nodes:CameraNode',
             'camera/image_raw -> sage/features/vision (trust from blur, exposure, freezes)',
             source_params={'hardware': {'source': 'device'}}),
    NodeSpec('microphone', 'sage_sensors', 'microphone_node',
             'sage_sensors.sensor_nodes:MicrophoneNode',
             'audio/chunk -> sage/features/audio (trust from dropouts, clipping)',
             source_params={'hardware': {'source': 'device'}}),
    NodeSpec('imu', 'sage_sensors', 'imu_node', 'sage_sensors.sensor_nodes:ImuNode',
             'imu/data_raw -> sage/features/imu (trust from saturation, variance)',
             source_params={'hardware': {'source': 'device'}}),
    NodeSpec('cognition', 'sage_cognition', 'cognition_node',
             'sage_cognition.cognition_node:CognitionNode',
             'sage/instruction -> sage/features/cognition_<name> (sentence embedding)',
             nice=BACKGROUND),
    NodeSpec('advisor', 'sage_cognition', 'cognition_node',
             'sage_cognition.cognition_node:CognitionNode',
             'a second cognition node: a language model thinks about the instruction '
             '-> sage/features/cognition_<name>', nice=BACKGROUND),
    NodeSpec('memory', 'sage_memory', 'memory_node', 'sage_memory.memory_node:MemoryNode',
             'features -> sage/salience (SNARC), sage/features/memory (sidecar), '
             'experience store', nice=BACKGROUND),
    NodeSpec('safety', 'sage_safety', 'safety_node', 'sage_safety.safety_node:SafetyNode',
             'sage/cmd_vel_raw, sage/estop -> cmd_vel (limits, slew, e-stop, watchdog)'),
    NodeSpec('coherence', 'sage_coherence', 'coherence_node',
             'sage_coherence.coherence_node:CoherenceNode',
             'lifecycle: features -> sage/action, sage/cmd_vel_raw, sage/coherence (HRM '
             'fusion)', lifecycle=True),
    NodeSpec('markers', 'sage_viz', 'markers_node', 'sage_viz.markers_node:MarkersNode',
             'sage/coherence, sage/salience, the world -> sage/markers (RViz)', nice=VIEW),
    NodeSpec('groot', 'sage_interop', 'groot_node', 'sage_interop.groot_node:GrootNode',
             'GR00T policy server (ZeroMQ) -> groot/action_chunk, cognition feature or teacher',
             nice=BACKGROUND),
    NodeSpec('foxglove', 'sage_viz', 'foxglove_node', 'sage_viz.foxglove_node:FoxgloveNode',
             'live WebSocket view for Foxglove (127.0.0.1:8765) and MCAP recording',
             nice=VIEW),
    NodeSpec('sleep', 'sage_sleep', 'sleep_node', 'sage_sleep.sleep_node:SleepNode',
             'lifecycle: consolidates stored experience into new model versions',
             lifecycle=True, nice=VIEW),
    NodeSpec('teacher', 'sage_sleep', 'teacher_node', 'sage_sleep.teacher_node:TeacherNode',
             'sage/features/places + the instruction -> sage/teacher_action (the planner '
             'labels; it never drives)', nice=BACKGROUND),
]}


class ConfigError(ValueError):
    """The params file or a launch argument is wrong; the message says how to fix it."""


def default_params_file() -> str:
    """Return config/sage.yaml: the installed share copy, else the source tree's."""
    try:
        from ament_index_python.packages import get_package_share_directory
        path = os.path.join(get_package_share_directory('sage_bringup'), 'config', 'sage.yaml')
        if os.path.exists(path):
            return os.path.realpath(path)
    except Exception:  # not installed: fall back to the repository layout
        pass
    here = os.path.dirname(os.path.realpath(__file__))
    return os.path.normpath(os.path.join(here, '..', '..', '..', 'config', 'sage.yaml'))


def load_params(path: str) -> dict[str, dict[str, Any]]:
    """Read a ROS 2 params file and return {node_name: parameters}.

    Raises ConfigError for a missing file, bad YAML, a block without
    ``ros__parameters`` or a node SAGE does not know. A ``/**`` block (params
    for every node) is returned under that key.
    """
    if not os.path.isfile(path):
        raise ConfigError(f'params file {path!r} does not exist')
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f'params file {path} is not valid YAML: {exc}') from exc
    if not isinstance(data, dict):
        raise ConfigError(f'params file {path} must map node names to blocks, '
                          f'got {type(data).__name__}')
    params = {}
    for key, block in data.items():
        name = str(key).strip('/').split('/')[-1] if key != '/**' else key
        if not isinstance(block, dict) or not isinstance(block.get('ros__parameters'), dict):
            raise ConfigError(f'{path}: block {key!r} needs a "ros__parameters:" mapping')
        if name != '/**' and name not in NODES:
            known = ', '.join(sorted(NODES)) or 'none yet'
            raise ConfigError(f'{path}: unknown node {key!r}; SAGE nodes are: {known}')
        params[name] = block['ros__parameters']
    return params


def select_nodes(params: dict[str, dict[str, Any]], source: str,
                 only: list[str] | None = None) -> list[NodeSpec]:
    """Return the nodes to start for ``source``, in registry order."""
    if source not in SOURCES:
        raise ConfigError(f'unknown source {source!r}; choose one of {", ".join(SOURCES)}')
    for name in only or []:
        if name not in params:
            raise ConfigError(f'--only {name}: no such node in the params file '
                              f'(present: {", ".join(n for n in params if n != "/**")})')
    return [spec for name, spec in NODES.items()
            if name in params and source in spec.sources and (not only or name in only)]


def params_file_for(params_file: str, namespace: str) -> str:
    """Return a params file whose blocks apply under ``namespace``.

    rcl applies a ``world:`` block only to the node /world, so under a
    namespace the blocks are rewritten to their full names, into one file per
    namespace under $ROS_HOME/sage (rewritten on each start: nothing piles up in
    the temporary directory).
    """
    if not namespace:
        return params_file
    blocks = {key if key == '/**' else f'{namespace}/{key}': {'ros__parameters': block}
              for key, block in load_params(params_file).items()}
    folder = os.path.join(os.environ.get('ROS_HOME') or os.path.expanduser('~/.ros'), 'sage')
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f'params{namespace.replace("/", "_")}.yaml')
    tmp = f'{path}.{os.getpid()}.tmp'
    with open(tmp, 'w') as f:
        yaml.safe_dump(blocks, f)
    os.replace(tmp, path)       # atomic: a launch and a `sage run` may start side by side
    return path


def check_namespace(namespace: str) -> str:
    """Return ``namespace`` normalised to '' or '/name[/name]', or raise ConfigError."""
    ns = namespace.strip()
    if not ns or ns == '/':
        return ''
    ns = '/' + ns.strip('/')
    for part in ns[1:].split('/'):
        if not part or not (part[0].isalpha() or part[0] == '_') or \
                not all(c.isalnum() or c == '_' for c in part):
            raise ConfigError(f'invalid namespace {namespace!r}: use letters, digits and '
                              f'underscores, each part starting with a letter')
    return ns
