"""Test setup: 8 simulated CPU devices, so sharded code runs on one machine.

The flag must be set before jax is imported anywhere in the test process.
"""

import os
import sys

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
