"""The real tracers (mlflow-tracing, the OpenTelemetry SDK, OpenInference, Openlayer)
against our middleware on real servers; every bridge is switched off after each test."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sessiontrace.bridges

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "examples") not in sys.path:
    sys.path.insert(0, str(ROOT / "examples"))


@pytest.fixture(autouse=True)
def no_bridges() -> Iterator[None]:
    yield
    sessiontrace.bridges.disable()


@pytest.fixture(scope="session")
def mlflow_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """mlflow-tracing writing to a local file store (the store it can use without the
    full mlflow), one experiment per test (see ``mlflow_store``)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    import mlflow

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    mlflow.set_tracking_uri((tmp_path_factory.mktemp("mlflow") / "mlruns").as_uri())
    yield mlflow
    mlflow.flush_trace_async_logging()
    mp.undo()


_experiments = iter(range(1_000_000))


@pytest.fixture
def mlflow_store(mlflow_dir: Any) -> Any:
    """A fresh experiment; ``mlflow_store.traces()`` reads its traces back with
    ``mlflow.search_traces`` as ``{label: (session, user)}``."""
    mlflow = mlflow_dir
    experiment = mlflow.set_experiment(f"bridges-{next(_experiments)}")

    class Store:
        def traces(self) -> dict[str, tuple[str | None, str | None]]:
            mlflow.flush_trace_async_logging()
            found = mlflow.search_traces(
                locations=[experiment.experiment_id], return_type="list", max_results=1000
            )
            out: dict[str, tuple[str | None, str | None]] = {}
            for trace in found:
                meta = trace.info.trace_metadata
                root = next(s for s in trace.data.spans if s.parent_id is None)
                inputs = root.inputs or {}
                label = inputs.get("label") or inputs["messages"][-1]["content"]
                assert label not in out, f"{label!r} traced twice"
                out[label] = (meta.get("mlflow.trace.session"), meta.get("mlflow.trace.user"))
            return out

    return Store()
