"""Tests run with the CLI's XLA settings on two host devices, as the CLI does on a 2-core
machine: the seed axis is sharded in-process too, and a result computed in the test process
has the bits of the same command run from the shell (subprocess tests set their own device
counts). Set here, before any test starts jax's backends, since XLA reads its flags once."""

import os

from benchmarks.cli import xla_flags

_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    _flags += " --xla_force_host_platform_device_count=2"
os.environ["XLA_FLAGS"] = xla_flags(_flags)
