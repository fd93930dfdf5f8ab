from setuptools import find_packages, setup

package_name = 'sage_sleep'

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
    description=('SAGE sleep: the lifecycle consolidation '
                 'node, augmentation, training and checkpoints.'),
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'sleep_node = sage_sleep.sleep_node:main',
            'teacher_node = sage_sleep.teacher_node:main',
        ],
    },
)
