"""The one root of the errors a user can fix, and the exit code each ends the process with.

`pulse` (``dataflows/cli.py``) and ``python -m bytewax.run dataflows.feedback:flow``
(``dataflows/feedback.py``) catch :class:`PulseError` alone and print its message without a
traceback: the message says what is wrong and what to do. Anything else is a bug and keeps
its traceback. It lives in ``operators`` (the layer everything else imports) so that any
module may raise one.
"""

from __future__ import annotations

from collections.abc import Iterator

EXIT_USAGE = 2
EXIT_WRITE_FAILED = 3


class PulseError(Exception):
    """A setting, the recovery store, an input file or a connection at start is wrong
    (exit 2, as the README's exit codes say)."""

    exit_code = EXIT_USAGE


class WriteFailedError(PulseError):
    """ClickHouse (or the dead-letter topic) refused writes for good (exit 3)."""

    exit_code = EXIT_WRITE_FAILED


def causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and the errors behind it (cause, else context), each once: Bytewax wraps an
    error raised inside the flow (a source, a step resuming its state) in its own."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        yield current
        seen.add(id(current))
        current = current.__cause__ or current.__context__


def pulse_error_in(exc: BaseException) -> PulseError | None:
    """The PulseError behind `exc`, if any."""
    return next((e for e in causes(exc) if isinstance(e, PulseError)), None)
