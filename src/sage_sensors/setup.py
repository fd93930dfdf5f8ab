from setuptools import find_packages, setup

package_name = 'sage_sensors'

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
    description=('SAGE sensors: camera, microphone and IMU '
                 'nodes with drivers, encoders and trust estimators.'),
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'camera_node = sage_sensors.sensor_nodes:camera_main',
            'microphone_node = sage_sensors.sensor_nodes:microphone_main',
            'imu_node = sage_sensors.sensor_nodes:imu_main',
        ],
    },
)
