import os

# Two host devices so data-parallel (pmap) tests have something to split over.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
