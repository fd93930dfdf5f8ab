from setuptools import find_packages, setup

package_name = 'sage_cognition'

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
    description=('SAGE cognition: language models as trust-weighted sensors of possible '
                 'futures: backends, trust of a thought, LoRA, the cognition node.'),
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'cognition_node = sage_cognition.cognition_node:main',
        ],
    },
)
