"""abcgen: learn folk tunes in ABC notation and write new ones."""

__version__ = "0.1.0"
