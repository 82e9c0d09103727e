import os
import sys

# Two host devices so data-parallel (pmap) tests have something to split over.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SHARED = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
CUHK03_SAMPLE = os.path.join(SHARED, "data", "cuhk03_sample")
