"""The `sage` command: config validation, start/stop and failure exit codes."""

import os
import signal
import subprocess
import sys
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
