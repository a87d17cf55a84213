"""Bundled task data (package so pip carries it)."""
