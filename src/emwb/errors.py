"""The one exception type the CLI turns into a one-line error."""


class EmwbError(Exception):
    """A user-facing error: its message is one line saying what is wrong and where."""
