"""Shared by the fault tests: what "fails well" means, and hypothesis settings that stay bounded."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

from sam3video.errors import Sam3VideoError

# Bounded, reproducible (the same 200 cases on every run and machine: CI cannot flake), and nothing
# written to the repository (no example database). To explore more cases, drop derandomize locally.
FAULT = settings(max_examples=200, deadline=None, database=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def assert_fails_well(error: BaseException) -> None:
    """``error`` is one of ours (a ``Sam3VideoError``) with a non-empty one-line message."""
    assert isinstance(error, Sam3VideoError), f"{type(error).__name__} escaped: {error!r}"
    message = str(error)
    assert message.strip(), f"{type(error).__name__} with an empty message"
    assert len(message.splitlines()) == 1, f"message is not one line: {message!r}"


def outcome(function, *args, **kwargs):
    """``function(*args, **kwargs)``'s result, or None after checking the error it raised fails well."""
    try:
        return function(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - the point: any type other than ours is a failure
        assert_fails_well(error)
        return None
