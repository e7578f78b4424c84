"""Helpers shared by test modules: plain functions, never tests. Real servers and their
fixtures live in tests/servers/."""
