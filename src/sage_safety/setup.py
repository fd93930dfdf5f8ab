from setuptools import find_packages, setup

package_name = 'sage_safety'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='SAGE maintainers',
    maintainer_email='sage@example.org',
    description=('SAGE safety: command limits, slew, e-stop and the watchdog between the '
                 'decision and cmd_vel, and the safety node.'),
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'safety_node = sage_safety.safety_node:main',
        ],
    },
)
