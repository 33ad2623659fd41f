"""Fixtures for the OTLP exporter: a scripted fake OTLP/HTTP endpoint (in-process, on
127.0.0.1) and the real MLflow and Phoenix servers of ``scripts/otlp_servers.py``.

The real servers are session-scoped (each takes 8-40 s to start) and need their venvs
(``make otlp-servers``): without them the tests skip locally and fail under CI=true.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from .fakes import FakeOTLP, load_otlp_servers

OTEL_VARS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
)


def unavailable(message: str) -> NoReturn:
    """Skip locally; fail under CI=true (CI must never pass by skipping)."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake_otlp() -> Iterator[FakeOTLP]:
    fake = FakeOTLP()
    yield fake
    fake.close()


@pytest.fixture
def make_fake() -> Iterator[Callable[[], FakeOTLP]]:
    made: list[FakeOTLP] = []

    def make() -> FakeOTLP:
        made.append(FakeOTLP())
        return made[-1]

    yield make
    for fake in made:
        fake.close()


# -- real servers ------------------------------------------------------------------------


def _server(name: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    servers = load_otlp_servers()
    if not servers.is_installed(name):
        unavailable(
            f"{servers.venv_dir(name)} is missing: make otlp-servers "
            f"(python scripts/otlp_servers.py install {name})"
        )
    workdir: Path = tmp_path_factory.mktemp(f"otlp-{name}")
    try:
        with servers.start(name, workdir) as server:
            yield server
    except servers.ServerUnavailable as exc:
        unavailable(str(exc))


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    yield from _server("mlflow", tmp_path_factory)


@pytest.fixture(scope="session")
def phoenix_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    yield from _server("phoenix", tmp_path_factory)
