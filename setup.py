"""Install dmcp: Differentiable Markov Channel Pruning for OpenMMLab."""

import os.path as osp
import re

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def parse_requirements(fname: str) -> list:
    """Read a requirements file, following ``-r`` includes.

    Args:
        fname (str): Path relative to the repository root.

    Returns:
        list: Requirement strings without comments.
    """
    reqs = []
    with open(osp.join(HERE, fname)) as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if not line:
                continue
            if line.startswith('-r '):
                reqs += parse_requirements(
                    osp.join(osp.dirname(fname), line[3:].strip())
                )
            else:
                reqs.append(line)
    return reqs


def get_version() -> str:
    with open(osp.join(HERE, 'projects', 'dmcp', 'version.py')) as f:
        return re.search(r"__version__ = '([^']+)'", f.read()).group(1)


setup(
    name='dmcp',
    version=get_version(),
    description='DMCP: Differentiable Markov Channel Pruning on OpenMMLab',
    long_description=open(osp.join(HERE, 'README.md')).read(),
    long_description_content_type='text/markdown',
    license='Apache License 2.0',
    python_requires='>=3.9',
    packages=find_packages(include=['projects', 'projects.*']),
    include_package_data=True,
    install_requires=parse_requirements('requirements/runtime.txt'),
    extras_require={
        'tests': parse_requirements('requirements/tests.txt'),
        'optional': parse_requirements('requirements/optional.txt'),
    },
    zip_safe=False,
)
