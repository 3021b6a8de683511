"""The simulator's one error: a request the real provider would refuse."""

from __future__ import annotations


class BadRequest(ValueError):
    """The request is not one the provider would accept.  The message names the field; the
    server answers 400 in the provider's error format."""
