"""Helpers of tests/lane_engine.py: stand-in images, a loopback registry, the Pulumi CLI driver."""
