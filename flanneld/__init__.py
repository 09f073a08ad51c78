"""flanneld-py: the daemon, its CLI, subnet.env, health and the lab."""

__version__ = "0.1.0"
