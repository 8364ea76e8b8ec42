"""The one exception type that means "the user's data, config or state is wrong".

The CLI turns it into a one-line message and exit code 1; anything else is a bug
and keeps its traceback.
"""

import difflib


class PatchworkError(Exception):
    """A clear, user-facing problem with a file, key, argument or project state."""


def did_you_mean(word: str, options) -> str:
    """' (did you mean 'x'?)' for the closest of `options`, or ''."""
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
