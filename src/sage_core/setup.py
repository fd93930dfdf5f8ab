from setuptools import find_packages, setup

package_name = 'sage_core'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    package_data={'sage_core': ['coherence/base/*']},   # the shipped base coherence model
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='SAGE maintainers',
    maintainer_email='sage@example.org',
    description=('SAGE core: the HRM model, the coherence node, '
                 'cognition nodes, inference backends and shared node helpers.'),
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'coherence_node = sage_core.coherence_node:main',
            'cognition_node = sage_core.cognition_node:main',
        ],
    },
)
