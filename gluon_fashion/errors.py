"""User-facing errors and the CLI edge that turns them into one clear line and a non-zero exit."""
from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable[..., int])


class UserError(Exception):
    """An error the user can fix (bad flag, bad file, missing weights). Printed without a traceback."""


def cli_entry(main: F) -> F:
    """Wrap a CLI ``main``: UserError -> 'error: ...' on stderr and exit 2; Ctrl-C -> exit 130."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper  # type: ignore[return-value]


def print_uncaught_user_errors() -> None:
    """Make an uncaught UserError (one raised at import, before any ``cli_entry`` can catch it, such as the
    MXNet/GluonCV version check) print as one ``error: ...`` line instead of a traceback; other exceptions
    keep the previous hook."""
    previous = sys.excepthook
    if getattr(previous, "prints_user_errors", False):
        return

    def hook(exc_type, exc, tb):
        if issubclass(exc_type, UserError):
            print(f"error: {exc}", file=sys.stderr)
        else:
            previous(exc_type, exc, tb)

    hook.prints_user_errors = True  # type: ignore[attr-defined]
    sys.excepthook = hook
