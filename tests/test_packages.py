"""Package hygiene: package.xml declares what the code imports; libraries stay ROS-free.

A ROS package imported by a package's code (its library, nodes or tests) must be one of
its package.xml dependencies, so rosdep and colcon order builds right on a robot. Only
nodes (``*_node.py``), the ROS helpers (sage_ros) and the `sage` command may import
rclpy: every other module is the library that training, sleep and benchmarks call.
"""

import ast
import glob
import os
import xml.etree.ElementTree as ET

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = sorted(os.path.basename(os.path.dirname(p))
                  for p in glob.glob(os.path.join(ROOT, 'src', '*', 'setup.py')))
ROS_MAY_IMPORT = {'sage_ros', 'sage_bringup/cli.py'}


def ros_packages() -> set[str]:
    """Names of every ROS package here: the ament index of the venv and our own."""
    index = os.path.join(os.environ.get('VIRTUAL_ENV', os.path.join(ROOT, '.venv')),
                         'share', 'ament_index', 'resource_index', 'packages')
    ours = {os.path.basename(os.path.dirname(p))
            for p in glob.glob(os.path.join(ROOT, 'src', '*', 'package.xml'))}
    return set(os.listdir(index)) | ours if os.path.isdir(index) else ours


def imports(path: str) -> set[str]:
    """Top-level module names a Python file imports (absolute imports only)."""
    tree = ast.parse(open(path, encoding='utf-8').read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split('.')[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split('.')[0])
    return names


def declared(package: str) -> set[str]:
    """Every dependency named in the package's package.xml."""
    tree = ET.parse(os.path.join(ROOT, 'src', package, 'package.xml'))
    return {e.text.strip() for e in tree.getroot() if e.tag.endswith('depend') and e.text}


@pytest.mark.parametrize('package', PACKAGES)
def test_package_xml_declares_every_ros_package_it_imports(package):
    known, deps = ros_packages(), declared(package)
    missing = {}
    for path in glob.glob(os.path.join(ROOT, 'src', package, '**', '*.py'), recursive=True):
        for name in imports(path) & known - deps - {package}:
            missing.setdefault(name, os.path.relpath(path, ROOT))
    assert not missing, (f'src/{package}/package.xml lacks ' + ', '.join(
        f'{name} (imported by {where})' for name, where in sorted(missing.items())))


@pytest.mark.parametrize('package', PACKAGES)
def test_library_modules_do_not_import_rclpy(package):
    if package in ROS_MAY_IMPORT:
        return
    offenders = []
    for path in glob.glob(os.path.join(ROOT, 'src', package, package, '*.py')):
        rel = f'{package}/{os.path.basename(path)}'
        if path.endswith(('_node.py', '_nodes.py')) or rel in ROS_MAY_IMPORT:
            continue
        if 'rclpy' in imports(path):
            offenders.append(rel)
    assert not offenders, f'library modules import rclpy (move the ROS part to a node): ' \
                          f'{offenders}'
