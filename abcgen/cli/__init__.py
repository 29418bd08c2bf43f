"""The ``abcgen`` command line: ``app`` (abcgen.cli.app) with its commands grouped by purpose
in data.py, model.py and studio.py, and what they share in common.py."""

from .app import app

__all__ = ["app"]
