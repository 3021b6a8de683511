"""The in-process service fixtures of tests/service/http, shared with the operations tests."""

from __future__ import annotations

from tests.service.http.conftest import harness, http, tag

__all__ = ["harness", "http", "tag"]
