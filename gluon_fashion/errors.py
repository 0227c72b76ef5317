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
