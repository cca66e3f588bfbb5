"""Reliability tests print their figures at the end of the session (whatever the capture mode)."""

from __future__ import annotations

import pytest

FIGURES: list[tuple[str, str]] = []


@pytest.fixture
def figure(request: pytest.FixtureRequest):
    """`figure("what", value)`: a figure this test measured, printed in the session summary."""

    def record(what: str, value: object) -> None:
        FIGURES.append((f"{request.node.name}: {what}", str(value)))
        print(f"FIGURE {request.node.name}: {what} = {value}")

    return record


def pytest_terminal_summary(terminalreporter) -> None:
    if FIGURES:
        terminalreporter.section("reliability figures")
        for what, value in FIGURES:
            terminalreporter.write_line(f"{what}: {value}")
