"""User errors: bad input a person can fix (a recipe, a manifest line, a path).

The CLI prints them without a traceback and exits with code 2; everything else is a bug and keeps
its traceback. Messages name the file, line and field when there is one."""

from __future__ import annotations


class UserError(Exception):
    """An error in what the user gave us; ``str()`` is the whole message."""

    exit_code = 2
