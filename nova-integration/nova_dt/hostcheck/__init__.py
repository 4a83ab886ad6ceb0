"""Compute-host prerequisites of nova-dt, checked (``nova-dt-host-check``, docs/compute-host.md).

``sources`` reads what a compute host has (nova.conf through oslo.config with nova's own option
definitions, libvirt's qemu.conf, the agent's config, kernel module state); ``checks`` judges it,
without I/O of its own beyond what a ``sources.Host`` answers.
"""
