"""Every public error has a documented import path: exported by its package's facade and
listed in the README section that names that facade."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()

# The errors module of each package, and the public module its users import errors from.
FACADES = [
    ("actors.errors", "service.circuit_breaker"),
    ("service.llm.errors", "service.llm_client"),
]


def public_errors(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    return sorted(
        name
        for name, value in vars(module).items()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == module_name
        and not name.startswith("_")
    )


def sections_naming(facade: str) -> str:
    """The README sections (split at headings) that mention ``facade`` in backticks."""
    sections = re.split(r"^#{2,4} ", README, flags=re.MULTILINE)
    return "\n".join(section for section in sections if f"`{facade}`" in section)


@pytest.mark.parametrize(("errors", "facade"), FACADES)
def test_every_public_error_has_a_documented_import_path(errors: str, facade: str) -> None:
    names = public_errors(errors)
    assert names, f"no errors found in {errors}"
    module = importlib.import_module(facade)
    documented = sections_naming(facade)
    for name in names:
        assert getattr(module, name, None) is getattr(importlib.import_module(errors), name), (
            f"{name} cannot be imported from {facade}"
        )
        assert name in module.__all__, f"{name} is missing from {facade}.__all__"
        assert f"| `{name}` |" in documented, f"the README does not list {name} with {facade}"


def test_call_timeout_error_imports_beside_the_open_error() -> None:
    from service.circuit_breaker import CallTimeoutError, CircuitBreakerOpenError

    assert issubclass(CallTimeoutError, TimeoutError)
    assert CallTimeoutError.__module__ == CircuitBreakerOpenError.__module__
