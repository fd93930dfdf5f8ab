"""The `sage` command: config validation, start/stop and failure exit codes."""

import os
import select
import signal
import subprocess
import sys
import threading
import time

import pytest
from sage_bringup import graph

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..'))


def sage(*args, timeout=60, **kw):
    """Run the installed `sage` command and return the completed process."""
    return subprocess.run(['sage', *args], capture_output=True, text=True, timeout=timeout, **kw)


def write(tmp_path, text):
    path = tmp_path / 'params.yaml'
    path.write_text(text)
    return str(path)


def test_help_lists_the_jobs():
    out = sage('--help')
    assert out.returncode == 0
    for command in ('run', 'status'):
        assert command in out.stdout


def test_default_config_is_valid_and_lists_nodes():
    out = sage('run', '--list')
    assert out.returncode == 0, out.stderr
    params = graph.load_params(graph.default_params_file())
    for name in params:
        if name != '/**':
            assert name in out.stdout


@pytest.mark.parametrize('text,message', [
    ('not_a_node:\n  ros__parameters: {}\n', "unknown node 'not_a_node'"),
    ('world: [1, 2]\n', 'needs a "ros__parameters:" mapping'),
    ('world:\n  ros__parameters: {a: [\n', 'not valid YAML'),
    ('- a\n- b\n', 'must map node names'),
])
def test_bad_params_file_gives_clear_error(tmp_path, text, message):
    out = sage('run', '--params-file', write(tmp_path, text))
    assert out.returncode == 2
    assert message in out.stderr


def test_missing_params_file():
    out = sage('run', '--params-file', '/nonexistent/sage.yaml')
    assert out.returncode == 2 and 'does not exist' in out.stderr


def test_bad_namespace_and_source(tmp_path):
    out = sage('run', '--namespace', 'bad-name!', '--list')
    assert out.returncode == 2 and 'invalid namespace' in out.stderr
    out = sage('run', '--source', 'nowhere')
    assert out.returncode == 2 and 'invalid choice' in out.stderr


WORLD_FAST = 'world:\n  ros__parameters:\n    real_time_factor: 5.0\n'


def test_run_in_process_stops_after_duration(tmp_path):
    out = sage('run', '--params-file', write(tmp_path, WORLD_FAST), '--duration', '2')
    assert out.returncode == 0, out.stderr
    assert 'running 1 node(s) in one process: world' in out.stdout
    assert 'stopped (exit 0)' in out.stdout


@pytest.mark.parametrize('mode', [[], ['--processes']])
@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_signals_stop_cleanly(tmp_path, mode, sig):
    proc = subprocess.Popen(['sage', 'run', '--params-file', write(tmp_path, WORLD_FAST),
                             *mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3.0)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert 'stopped (exit 0)' in stdout


@pytest.mark.parametrize('mode', [[], ['--processes']])
def test_wrong_parameter_type_fails_with_clear_error(tmp_path, mode):
    bad = 'world:\n  ros__parameters:\n    seed: "not a number"\n'
    out = sage('run', '--params-file', write(tmp_path, bad), '--duration', '5', *mode)
    assert out.returncode == 1
    assert 'seed' in out.stderr and 'world' in out.stderr


def test_out_of_range_parameter_is_refused(tmp_path):
    bad = 'world:\n  ros__parameters:\n    real_time_factor: -3.0\n'
    out = sage('run', '--params-file', write(tmp_path, bad), '--duration', '5')
    assert out.returncode == 1 and 'real_time_factor out of range' in out.stderr


def _children(pid):
    import psutil
    return psutil.Process(pid).children()


def test_dying_node_process_fails_the_graph_without_respawn(tmp_path):
    proc = subprocess.Popen(['sage', 'run', '--processes', '--no-respawn', '--params-file',
                             write(tmp_path, WORLD_FAST)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3.0)
    for child in _children(proc.pid):
        child.kill()
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert 'node world exited with code -9' in stderr


def test_respawn_restarts_a_dying_node(tmp_path):
    from sage_bringup.cli import UP_AFTER_S
    proc = subprocess.Popen(['sage', 'run', '--processes', '--respawn-delay', '0.5',
                             '--params-file', write(tmp_path, WORLD_FAST)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(UP_AFTER_S + 1.0)          # up: a death now is respawned, not a failed start
    first = _children(proc.pid)
    for child in first:
        child.kill()
    time.sleep(2.5)
    second = _children(proc.pid)
    assert second and {c.pid for c in second}.isdisjoint({c.pid for c in first})
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0 and 'respawning' in stderr


def test_a_respawned_lifecycle_node_is_active_again(tmp_path):
    from sage_bringup.cli import UP_AFTER_S
    env = dict(os.environ, SAGE_HOME=str(tmp_path / 'home'))
    assert subprocess.run(['sage', 'init'], env=env, capture_output=True).returncode == 0
    params = write(tmp_path, 'coherence:\n  ros__parameters:\n    backend: torch\n')
    proc = subprocess.Popen(['sage', 'run', '--processes', '--respawn-delay', '0.5',
                             '--params-file', params], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines, errors = [], []                                # read both pipes: none may fill
    readers = [threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True),
               threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True)]
    for reader in readers:
        reader.start()
    time.sleep(UP_AFTER_S + 1.0)
    for child in _children(proc.pid):
        child.kill()                                      # however it died
    again = 'lifecycle node coherence configured and activated again'
    deadline = time.monotonic() + 90                      # respawn, model load, autostart
    while time.monotonic() < deadline and not any(again in line for line in lines):
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    proc.wait(60)
    for reader in readers:
        reader.join(10)
    stderr = ''.join(errors)
    assert 'respawning' in stderr, stderr
    assert any(again in line for line in lines), ''.join(lines) + stderr
    assert proc.returncode == 0, stderr


def slow_servers(*args):
    server = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__),
                                                            'slow_action_servers.py'), *args],
                              stdout=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == 'ready'
    return server


CLIENTS = {'sleep': (['sage', 'sleep', '--wait', '30'], ['slept well', 'loss']),
           'think': (['sage', 'think', 'where is red?', '--wait', '30'],
                     ['go to the red beacon', 'trust 0.90'])}


@pytest.mark.parametrize('client', CLIENTS)
def test_clients_report_the_result_of_a_finished_goal(client):
    command, expected = CLIENTS[client]
    server = slow_servers('3')
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert all(e in out.stdout for e in expected), out.stdout
    finally:
        server.kill()
        server.wait()


@pytest.mark.parametrize('client', CLIENTS)
def test_clients_fail_on_a_goal_the_server_aborted(client):
    server = slow_servers('abort')
    try:
        out = subprocess.run(CLIENTS[client][0], capture_output=True, text=True, timeout=60)
        assert out.returncode == 1 and 'aborted the goal' in out.stderr, out.stderr
    finally:
        server.kill()
        server.wait()


@pytest.mark.parametrize('client', CLIENTS)
def test_clients_end_when_their_server_dies_mid_goal(client):
    server = slow_servers()
    try:
        proc = subprocess.Popen(CLIENTS[client][0], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        # the goal is under way (or the client never sent it: fail, don't hang)
        assert select.select([server.stdout], [], [], 60)[0], proc.communicate(timeout=60)
        assert server.stdout.readline().strip() == 'working'
        time.sleep(1.0)                          # feedback streams to the client
        server.kill()
        killed = time.monotonic()
        _, stderr = proc.communicate(timeout=30)
        assert time.monotonic() - killed < 10.0, 'the client noticed too late'
        assert proc.returncode == 1 and 'went away' in stderr, stderr
    finally:
        server.kill()
        server.wait()


def test_namespace_keeps_the_params_file_in_force(tmp_path):
    from sage_testing.graph import Graph
    from sensor_msgs.msg import Image
    params = write(tmp_path, WORLD_FAST + '    width: 64\n    height: 48\n')
    proc = subprocess.Popen(['sage', 'run', '--namespace', 'robot1', '--params-file', params,
                             '--duration', '8'], stdout=subprocess.PIPE, text=True)
    with Graph() as g:
        images = g.collect(Image, '/robot1/camera/image_raw')
        assert g.wait_for(lambda: images, timeout=15), 'no image under the namespace'
        assert (images[0].width, images[0].height) == (64, 48)
    proc.wait(timeout=30)
    assert proc.returncode == 0


def test_lifecycle_node_that_cannot_configure_fails_the_start(tmp_path):
    text = (f'sleep:\n  ros__parameters:\n    model_dir: {tmp_path}/models\n'
            f'    store_path: {tmp_path}/none.db\n')
    out = sage('run', '--params-file', write(tmp_path, text), '--duration', '5')
    assert out.returncode == 1
    assert 'lifecycle node sleep' in out.stderr and 'configure' in out.stderr


def test_two_cognition_nodes_side_by_side_from_config(tmp_path):
    params = write(tmp_path, 'cognition:\n  ros__parameters:\n    name: main\n'
                   'advisor:\n  ros__parameters:\n    name: advisor\n    backend: local\n')
    out = sage('run', '--params-file', params, '--list')
    assert out.returncode == 0, out.stderr
    assert 'cognition ' in out.stdout and 'advisor ' in out.stdout


def test_a_second_terminal_sees_the_graph_make_run_started(tmp_path):
    """`make run` in one terminal, `source scripts/env.sh && sage status` in another: both
    shells keep the user's ROS_DOMAIN_ID (ROS's default when unset), so they meet."""
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..'))
    user = {k: os.environ[k] for k in ('HOME', 'PATH', 'LANG') if k in os.environ}
    user['ROS_DOMAIN_ID'] = os.environ['ROS_DOMAIN_ID']   # "the user's", run-unique here
    shell = ['bash', '-c']
    unset = subprocess.run(shell + ['source scripts/env.sh && echo "${ROS_DOMAIN_ID-unset}"'],
                           cwd=root, env={k: v for k, v in user.items() if k != 'ROS_DOMAIN_ID'},
                           capture_output=True, text=True)
    assert unset.stdout.strip() == 'unset'                 # ROS's own default, not a new one
    params = write(tmp_path, WORLD_FAST)
    first = subprocess.Popen(shell + [f'source scripts/env.sh && exec sage run --params-file '
                                      f'{params} --duration 40'], cwd=root, env=user,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = ''
        for _ in range(10):
            second = subprocess.run(shell + ['source scripts/env.sh && sage status --wait 3'],
                                    cwd=root, env=user, capture_output=True, text=True,
                                    timeout=60)
            seen = second.stdout
            if 'world' in seen:
                break
        assert 'world' in seen, seen + second.stderr
    finally:
        first.terminate()
        first.communicate(timeout=30)


def test_the_live_line_on_a_terminal_and_not_in_a_pipe(tmp_path):
    """On a TTY `sage run` says once a second how it goes; piped, it stays quiet."""
    import pty
    params = write(tmp_path, 'world:\n  ros__parameters:\n    real_time_factor: 20.0\n'
                             '    time_limit_s: 2.0\n'
                             'safety:\n  ros__parameters:\n    rate_hz: 20.0\n')
    main, child = pty.openpty()
    proc = subprocess.Popen(['sage', 'run', '--params-file', params, '--duration', '12'],
                            stdout=child, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    os.close(child)
    seen = b''
    try:
        while proc.poll() is None or select.select([main], [], [], 0)[0]:
            if select.select([main], [], [], 0.5)[0]:
                try:
                    seen += os.read(main, 4096)
                except OSError:
                    break
    finally:
        proc.wait(timeout=30)
        os.close(main)
    text = seen.decode(errors='replace')
    lines = [x for x in text.split('\r') if x.startswith('episode ')]
    assert len(lines) >= 5, text[-2000:]                  # about once a second
    assert any(' | success ' in x and '/' in x and 'sleep: off' in x for x in lines)
    finished = [int(x.split('success ')[1].split('/')[1].split()[0]) for x in lines]
    assert finished[-1] >= 2                              # 2 s episodes at 20x: counted
    piped = sage('run', '--params-file', params, '--duration', '4')
    assert 'episode ' not in piped.stdout and piped.returncode == 0
