"""Jinja prompt templates (package so pip carries them)."""
