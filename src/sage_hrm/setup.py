from setuptools import find_packages, setup

package_name = 'sage_hrm'

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
    description=('SAGE HRM: the Hierarchical Reasoning Model, its one ACT loop, batched '
                 'and CUDA-graph inference, training, ONNX export and TensorRT engines, '
                 'and the puzzle research (Sudoku, mazes, ARC).'),
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'sage_hrm = sage_hrm.cli:main',
        ],
    },
)
