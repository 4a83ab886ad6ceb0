# Plain setuptools: metadata and entry points are in setup.cfg (pbr needs a git history and is
# not required here).
import setuptools

setuptools.setup()
