"""Shared test code: loopback stand-in servers, tiny models, fakes and stage data."""
