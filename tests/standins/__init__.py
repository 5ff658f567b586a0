"""Loopback stand-ins for external services, shared by the test folders."""
