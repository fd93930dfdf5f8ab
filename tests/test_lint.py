"""ament-style linters as tests: flake8 (max line 99) and pep257 docstrings."""

import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = sorted(os.path.basename(os.path.dirname(p))
                  for p in glob.glob(os.path.join(ROOT, 'src', '*', 'package.xml')))
PY_PACKAGES = [p for p in PACKAGES if os.path.exists(os.path.join(ROOT, 'src', p, 'setup.py'))]
# ament_pep257's defaults: public docstrings required, the rest of pep257's style.
PEP257_IGNORE = 'D100,D101,D102,D103,D104,D105,D106,D107,D203,D212,D404'


def test_all_design_packages_exist():
    assert set(PACKAGES) >= {'sage_msgs', 'sage_common', 'sage_ros', 'sage_hrm', 'sage_sensors',
                             'sage_memory', 'sage_cognition', 'sage_coherence', 'sage_safety',
                             'sage_interop', 'sage_viz',
                             'sage_sleep', 'sage_sim', 'sage_bringup'}


@pytest.mark.parametrize('package', PY_PACKAGES)
def test_flake8(package):
    out = subprocess.run([sys.executable, '-m', 'flake8', '--max-line-length=99',
                          os.path.join(ROOT, 'src', package)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_flake8_launch_and_bench():
    paths = [os.path.join(ROOT, d) for d in ('launch', 'bench', 'tests') if
             os.path.isdir(os.path.join(ROOT, d))]
    out = subprocess.run([sys.executable, '-m', 'flake8', '--max-line-length=99', *paths],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize('package', PY_PACKAGES)
def test_pep257(package):
    out = subprocess.run([sys.executable, '-m', 'pydocstyle', '--convention=pep257',
                          f'--add-ignore={PEP257_IGNORE}',
                          '--match=(?!test_|setup).*\\.py', os.path.join(ROOT, 'src', package)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
