"""nova-dt: continuous disaster tolerance for OpenStack Nova servers (Python side)."""

__version__ = "0.1.0"
