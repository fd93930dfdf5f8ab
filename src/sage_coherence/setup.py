from setuptools import find_packages, setup

package_name = 'sage_coherence'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    package_data={'sage_coherence': ['base/*']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='SAGE maintainers',
    maintainer_email='sage@example.org',
    description=('SAGE coherence (fusion): the HRM coherence model, its runtimes (torch, '
                 'ONNX Runtime, TensorRT) and the lifecycle coherence node.'),
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'coherence_node = sage_coherence.coherence_node:main',
        ],
    },
)
