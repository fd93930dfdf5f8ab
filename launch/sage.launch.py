"""Launch SAGE with ROS 2's launch: `ros2 launch sage_bringup sage.launch.py`.

The same arguments and the same params file as `sage run`; the node list comes
from sage_bringup.graph, which the `sage` command reads too, so the two cannot
drift. Lifecycle nodes are configured and activated when autostart is true.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, ExecuteProcess, LogInfo, OpaqueFunction,
                            RegisterEventHandler)
from launch.event_handlers import OnProcessStart
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from sage_bringup import graph
from sage_bringup.cli import executable_path

BOOL = ['true', 'false', 'True', 'False']


def _nodes(context):
    arg = {name: LaunchConfiguration(name).perform(context) for name in (
        'namespace', 'use_sim_time', 'params_file', 'log_level', 'source', 'autostart',
        'respawn', 'respawn_delay')}
    params_file = arg['params_file'] or graph.default_params_file()
    params = graph.load_params(params_file)
    specs = graph.select_nodes(params, arg['source'])
    namespace = graph.check_namespace(arg['namespace'])
    try:
        respawn_delay = float(arg['respawn_delay'])
    except ValueError:
        raise graph.ConfigError(
            f"respawn_delay must be seconds, got {arg['respawn_delay']!r}") from None
    for spec in specs:  # find all first: a launch error would orphan nodes already started
        executable_path(spec)
    if not specs:
        return [LogInfo(msg=f"no SAGE node to start: {params_file} has no block for a node "
                            f"that runs with source {arg['source']}")]
    params_file = graph.params_file_for(params_file, namespace)
    sim_time = (arg['source'] in ('world', 'bag')) if arg['use_sim_time'] == '' \
        else arg['use_sim_time'].lower() == 'true'
    actions = []
    for spec in specs:
        kwargs = dict(
            package=spec.package, executable=spec.executable, name=spec.name,
            exec_name=spec.name,        # the label in launch's output, niced or not
            namespace=namespace, output='screen',
            parameters=[params_file, {'use_sim_time': sim_time}, spec.params_for(arg['source'])],
            arguments=['--ros-args', '--log-level', arg['log_level']],
            respawn=arg['respawn'].lower() == 'true', respawn_delay=respawn_delay,
            prefix=' '.join(spec.prefix) or None)
        if not spec.lifecycle:
            actions.append(Node(**kwargs))
            continue
        node = LifecycleNode(**kwargs)
        actions.append(node)
        if arg['autostart'].lower() == 'true':
            actions += _autostart(node, spec.name, namespace)
    return actions


def _autostart(node, name: str, namespace: str):
    """On every start of the process, respawns included: `sage activate` brings the node
    to active by asking its state (launch_ros's ChangeState would wait forever on the
    dead process's service after a respawn)."""
    from ament_index_python.packages import get_package_prefix
    sage = os.path.join(get_package_prefix('sage_bringup'), 'lib', 'sage_bringup', 'sage')

    def activate(event, context):       # a new action each start: one runs only once
        return [ExecuteProcess(cmd=[sage, 'activate', name, '--namespace', namespace or '/'],
                               output='screen', name=f'activate_{name}')]
    return [RegisterEventHandler(OnProcessStart(target_action=node, on_start=activate))]


def generate_launch_description():
    """Declare the launch arguments shared with `sage run`, then start the graph."""
    default_params = os.path.join(get_package_share_directory('sage_bringup'),
                                  'config', 'sage.yaml')
    args = [
        DeclareLaunchArgument('namespace', default_value='',
                              description='namespace for every node and topic'),
        DeclareLaunchArgument('use_sim_time', default_value='', choices=[''] + BOOL,
                              description="'true'/'false'; empty: true for world and bag"),
        DeclareLaunchArgument('params_file', default_value=default_params,
                              description='ROS 2 params YAML with one block per node'),
        DeclareLaunchArgument('log_level', default_value='info', choices=list(graph.LOG_LEVELS)),
        DeclareLaunchArgument('source', default_value='world', choices=list(graph.SOURCES),
                              description='input: built-in world, a bag, or hardware drivers'),
        DeclareLaunchArgument('autostart', default_value='true', choices=BOOL,
                              description='configure and activate lifecycle nodes'),
        DeclareLaunchArgument('respawn', default_value='false', choices=BOOL,
                              description='restart nodes that exit'),
        DeclareLaunchArgument('respawn_delay', default_value='2.0',
                              description='seconds before a respawn'),
    ]
    return LaunchDescription(args + [OpaqueFunction(function=_nodes)])
