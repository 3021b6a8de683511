"""The one error of the translation tables.

A translation either produces a complete request or answer in the other wire format, or it
raises :class:`UntranslatableError`; it never drops a field the caller set.  The error carries
the path of the field (``messages[2].content[0].type``) so that the gateway's 400 and the
library's ``InvalidRequestError`` can name it without parsing the message.
"""

from __future__ import annotations

from typing import NoReturn

__all__ = ["UntranslatableError", "refuse"]


class UntranslatableError(ValueError):
    """A field with no counterpart in the target format, or a value the translation cannot
    carry across (for example tool-call arguments that are not a JSON object).

    Raised by every function of :mod:`service.llm.translate` before anything is sent: the
    caller's request (or, for an answer, the provider's) used something the other format cannot
    express.  ``field`` is its path in the input (``logprobs``, ``messages[2].content[0].type``,
    ``choices[0].message.tool_calls[0].function.arguments``), ``reason`` says why in one
    sentence.  It is a ``ValueError`` so that code which validates input catches it as such;
    the gateway answers it with a 400 naming ``field`` and the breaker ignores it (the provider
    was never called).
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def __repr__(self) -> str:
        return f"UntranslatableError(field={self.field!r}, reason={self.reason!r})"

    def __reduce__(self) -> tuple[type[UntranslatableError], tuple[str, str]]:
        # Pickle with both arguments (the default would pass only the message).
        return (type(self), (self.field, self.reason))


def refuse(field: str, reason: str) -> NoReturn:
    """Raise :class:`UntranslatableError` (a helper that keeps each rule on one line)."""
    raise UntranslatableError(field, reason)
