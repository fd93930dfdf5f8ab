from glob import glob
import os

from setuptools import find_packages, setup

package_name = 'sage_bringup'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        # launch/ and config/ live at the repository root; installed here.
        ('share/' + package_name + '/launch', glob(os.path.join('..', '..', 'launch', '*.py'))),
        ('share/' + package_name + '/config', glob(os.path.join('..', '..', 'config', '*.*'))),
        ('share/' + package_name + '/config/foxglove',
         glob(os.path.join('..', '..', 'config', 'foxglove', '*.json'))),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='SAGE maintainers',
    maintainer_email='sage@example.org',
    description='SAGE bringup: launch files, the parameters YAML and the sage command.',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'sage = sage_bringup.cli:main',
        ],
    },
)
