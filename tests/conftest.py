"""Tests run on two XLA host devices, as the CLI does on a 2-core machine, so the seed axis is
sharded in-process too (subprocess tests set their own device counts)."""

import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    ).strip()
