"""Jinja templates for the popup."""
