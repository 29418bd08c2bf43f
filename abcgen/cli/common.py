"""What every command shares: one-line errors with exit codes, logging, the train extra.

Nothing here imports a command module; the command modules import this, and
``abcgen.cli.app`` imports them all to register their commands.
"""

from __future__ import annotations

import functools
import sys

import typer

from ..errors import AbcgenError

_state = {"debug": False}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fail(msg: str, code: int = 2) -> None:
    """Print a one-line error and exit with the given code."""
    print(f"abcgen: error: {msg}", file=sys.stderr, flush=True)
    raise typer.Exit(code)


def print_json_last(obj) -> None:
    """--json: the figures as one JSON object, the last line of stdout."""
    import json

    print(json.dumps(obj, sort_keys=True))


# The modules of the optional ``train`` extra (pyproject.toml): only train, export,
# evaluate --model RUN and bench import them.
TRAIN_EXTRA = ("tensorflow", "keras")


def require_train_extra(command: str) -> None:
    """Fail at once, before any corpus work, when the command needs TensorFlow and it is absent."""
    import importlib.util

    for name in TRAIN_EXTRA:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a broken or blocked install counts as absent
            found = False
        if not found:
            _fail_train_extra(command)


def _fail_train_extra(command: str) -> None:
    fail(f"abcgen {command} needs TensorFlow, which the light install leaves out; "
         "install it with: pip install 'abcgen[train]'", 2)


def handled(fn):
    """Turn abcgen errors into one line and an exit code; tracebacks only with --debug."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except AbcgenError as e:
            if _state["debug"]:
                raise
            fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            print("abcgen: interrupted", file=sys.stderr)
            raise typer.Exit(130)
        except BrokenPipeError:
            raise typer.Exit(0)
        except ModuleNotFoundError as e:
            missing = (e.name or "").split(".")[0]
            if missing not in TRAIN_EXTRA or _state["debug"]:
                raise
            _fail_train_extra(fn.__name__.replace("_", " "))
        except Exception as e:  # a bug: still one line unless --debug
            if _state["debug"]:
                raise
            fail(f"internal error: {type(e).__name__}: {e} (rerun with --debug for a traceback)", 1)

    return wrapper
