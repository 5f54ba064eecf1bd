"""The one exception type the CLI turns into a one-line error, and Ctrl-C that cannot be lost."""


class EmwbError(Exception):
    """A user-facing error: its message is one line saying what is wrong and where."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_interrupted = 0  # the signal that asked to stop (0: none)


def on_interrupt(signum=None, frame=None) -> None:
    """SIGINT and SIGTERM handler (the CLI installs it): remember the request, then raise KeyboardInterrupt. Python
    drops an exception raised while a finalizer runs, so long loops also call `check_interrupt` between units of
    work."""
    global _interrupted
    import signal

    _interrupted = signum or signal.SIGINT
    raise KeyboardInterrupt


def interrupted_by() -> int:
    """The signal number that stopped the process (SIGINT when Ctrl-C came without the handler)."""
    import signal

    return int(_interrupted or signal.SIGINT)


def check_interrupt() -> None:
    """Raise KeyboardInterrupt when Ctrl-C (or SIGTERM) came, even if its first KeyboardInterrupt was swallowed."""
    if _interrupted:
        raise KeyboardInterrupt
