"""The logarchiver service."""
