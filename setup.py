"""Packaging: metadata lives in pyproject.toml.

setup.py exists for one thing pyproject.toml cannot say: ``twisted.plugins`` must be
shipped as a *namespace* directory (no ``__init__.py``) next to the ``chatserv`` package,
so that ``twistd`` finds ``twisted/plugins/chatserv_plugin.py`` after ``pip install .``.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["chatserv", "chatserv.*"]) + ["twisted.plugins"],
    package_data={"twisted.plugins": ["chatserv_plugin.py"]},
    include_package_data=False,
)
