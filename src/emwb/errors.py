"""The one exception type the CLI turns into a one-line error."""


class EmwbError(Exception):
    """A user-facing error: its message is one line saying what is wrong and where."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
