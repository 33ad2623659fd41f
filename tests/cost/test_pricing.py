"""Pricing LLM calls: genai-prices, overrides, prices files, unknown models, no network."""

from __future__ import annotations

import json
import socket
import sys
import threading
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

import sessiontrace
from sessiontrace.llm import _pricing

from .conftest import COST, last_trace, llm_call, span_attributes, usage

GENAI = f"genai-prices {version('genai-prices')}"


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every attempt to open a connection or resolve a name fails, and is recorded."""
    attempts: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def test_gpt_4o_mini_with_cached_input_is_priced_by_genai_prices(no_network: list[Any]) -> None:
    with sessiontrace.start_span("chat"):
        llm_call(tokens=usage(1000, 100, cache_read=400))
    trace = last_trace()
    attrs = span_attributes(trace, "llm")
    # 600 uncached x $0.15 + 400 cached x $0.075 + 100 out x $0.60, per million
    assert attrs[COST]["total_cost"] == pytest.approx(0.00018)
    assert attrs[COST]["input_cost"] == pytest.approx(0.00012)
    assert attrs[COST]["output_cost"] == pytest.approx(0.00006)
    assert attrs["sessiontrace.llm.price_source"] == GENAI
    assert "sessiontrace.llm.unpriced" not in attrs
    assert json.loads(trace.info.trace_metadata["mlflow.trace.cost"])["total_cost"] == (
        pytest.approx(0.00018)
    )
    assert no_network == []
    assert sessiontrace.get_stats()["llm_pricing"] == {"priced": 1, "unpriced": 0, "errors": 0}


def test_price_usage_directly() -> None:
    cost, source = _pricing.price_usage(
        usage(1000, 100, cache_read=400), "gpt-4o-mini", "openai"
    ) or (
        {},
        "",
    )
    assert cost["total_cost"] == pytest.approx(0.00018) and source == GENAI
    # the provider is optional: genai-prices finds the model's own
    assert _pricing.price_usage(usage(1000, 100, cache_read=400), "gpt-4o-mini") is not None


def test_an_unknown_model_is_unpriced_and_counted_never_zero() -> None:
    with sessiontrace.start_span("chat"):
        llm_call(model="my-local-llama-3", provider=None, tokens=usage(50, 20))
        llm_call("known", tokens=usage(1000, 100, cache_read=400))
    trace = last_trace()
    attrs = span_attributes(trace, "llm")
    assert COST not in attrs and attrs["sessiontrace.llm.unpriced"] is True
    assert "sessiontrace.llm.price_source" not in attrs
    (summary,) = sessiontrace.search_traces(return_type="list")
    assert json.loads(summary.info.trace_metadata["mlflow.trace.cost"])["total_cost"] == (
        pytest.approx(0.00018)
    )
    frame = sessiontrace.search_traces(return_type="pandas")
    assert frame["info.unpriced_calls"].tolist() == [1] and frame["info.llm_calls"].tolist() == [2]
    assert sessiontrace.search_traces("trace.unpriced_calls > 0", return_type="list")
    # an unknown provider is not guessed at: a self-hosted "gpt-4o-mini" is unpriced
    assert _pricing.price_usage(usage(10, 10), "gpt-4o-mini", "my-own-vllm") is None


def test_a_trace_with_only_unknown_models_has_no_cost() -> None:
    with sessiontrace.start_span("chat"):
        llm_call(model="nobody-knows-me", tokens=usage(50, 20))
    trace = last_trace()
    assert "mlflow.trace.cost" not in trace.info.trace_metadata
    assert json.loads(trace.info.trace_metadata["mlflow.trace.tokenUsage"]) == usage(50, 20)
    assert sessiontrace.search_traces("trace.cost IS NULL", return_type="list")
    assert not sessiontrace.search_traces("trace.cost >= 0", return_type="list")


def test_override_glob_wins_over_genai_prices_and_records_its_source() -> None:
    sessiontrace.set_model_price(
        "GPT-4o-mini*", input_per_mtok=1.0, output_per_mtok=2.0, cache_read_per_mtok=0.5
    )
    sessiontrace.set_model_price("my-llama-*", input_per_mtok=0.1, output_per_mtok=0.3)
    with sessiontrace.start_span("chat"):
        llm_call(tokens=usage(1000, 100, cache_read=400))
        llm_call("llama", model="my-llama-3-70b", provider=None, tokens=usage(10**6, 5 * 10**5))
    trace = last_trace()
    attrs = span_attributes(trace, "llm")
    assert attrs[COST]["input_cost"] == pytest.approx((600 * 1.0 + 400 * 0.5) / 1e6)
    assert attrs[COST]["output_cost"] == pytest.approx(100 * 2.0 / 1e6)
    assert attrs["sessiontrace.llm.price_source"] == "override:GPT-4o-mini*"
    llama = span_attributes(trace, "llama")
    assert llama[COST] == {"input_cost": 0.1, "output_cost": 0.15, "total_cost": 0.25}
    assert llama["sessiontrace.llm.price_source"] == "override:my-llama-*"


def test_cache_rates_default_to_the_input_rate_and_writes_have_their_own() -> None:
    sessiontrace.set_model_price(
        "m-*", input_per_mtok=10, output_per_mtok=0, cache_write_per_mtok=20
    )
    priced = _pricing.price_usage(usage(100, 0, cache_read=30, cache_write=50), "m-1")
    assert priced is not None
    # 20 uncached x 10 + 30 read x 10 (no read rate: the input rate) + 50 written x 20
    assert priced[0]["input_cost"] == pytest.approx((20 * 10 + 30 * 10 + 50 * 20) / 1e6)


def test_a_free_model_costs_zero_not_unpriced() -> None:
    sessiontrace.set_model_price("local-*", input_per_mtok=0, output_per_mtok=0)
    with sessiontrace.start_span("chat"):
        llm_call(model="local-qwen", provider="ollama", tokens=usage(500, 50))
    trace = last_trace()
    assert span_attributes(trace, "llm")[COST]["total_cost"] == 0.0
    frame = sessiontrace.search_traces(return_type="pandas")
    assert frame["info.cost"].tolist() == [0.0] and frame["info.unpriced_calls"].tolist() == [0]
    assert sessiontrace.search_traces("trace.cost = 0", return_type="list")


def test_an_override_for_one_provider_leaves_the_others_alone() -> None:
    sessiontrace.set_model_price(
        "gpt-4o-mini", input_per_mtok=0, output_per_mtok=0, provider="azure"
    )
    azure = _pricing.price_usage(usage(1000, 100), "gpt-4o-mini", "azure")
    openai = _pricing.price_usage(usage(1000, 100), "gpt-4o-mini", "openai")
    assert azure is not None and azure[0]["total_cost"] == 0.0
    assert openai is not None and openai[1] == GENAI and openai[0]["total_cost"] > 0


def test_the_latest_price_for_a_pattern_wins() -> None:
    sessiontrace.set_model_price("x*", input_per_mtok=1, output_per_mtok=1)
    assert (_pricing.price_usage(usage(10**6, 0), "x1") or ({}, ""))[0]["total_cost"] == 1.0
    sessiontrace.set_model_price("x*", input_per_mtok=2, output_per_mtok=1)
    assert (_pricing.price_usage(usage(10**6, 0), "x1") or ({}, ""))[0]["total_cost"] == 2.0


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"input_per_mtok": -1, "output_per_mtok": 0}, ValueError),
        ({"input_per_mtok": float("nan"), "output_per_mtok": 0}, ValueError),
        ({"input_per_mtok": "1", "output_per_mtok": 0}, TypeError),
        ({"input_per_mtok": True, "output_per_mtok": 0}, TypeError),
        ({"input_per_mtok": 1, "output_per_mtok": 0, "cache_read_per_mtok": -2}, ValueError),
        ({"input_per_mtok": 1, "output_per_mtok": 0, "provider": 5}, TypeError),
    ],
)
def test_bad_prices_raise_at_once(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        sessiontrace.set_model_price("m", **kwargs)
    with pytest.raises(TypeError):
        sessiontrace.set_model_price("", input_per_mtok=1, output_per_mtok=1)


def test_prices_file_json_and_toml(tmp_path: Path, store_path: Path) -> None:
    json_file = tmp_path / "prices.json"
    json_file.write_text(
        json.dumps({"models": [{"match": "acme-*", "input_per_mtok": 1, "output_per_mtok": 3}]})
    )
    sessiontrace.configure(tracking_uri=f"sqlite:///{store_path}", prices=json_file)
    with sessiontrace.start_span("chat"):
        llm_call(model="acme-7b", provider=None, tokens=usage(10**6, 10**6))
    attrs = span_attributes(last_trace(), "llm")
    assert attrs[COST]["total_cost"] == 4.0
    assert attrs["sessiontrace.llm.price_source"] == "prices-file:acme-*"
    if sys.version_info >= (3, 11):
        toml_file = tmp_path / "prices.toml"
        toml_file.write_text(
            '[[models]]\nmatch = "acme-*"\ninput_per_mtok = 2\noutput_per_mtok = 0\n'
            'cache_read_per_mtok = 1\nprovider = "acme"\n'
        )
        (price,) = _pricing.load_prices_file(toml_file)
        assert (price.pattern, price.cache_read_per_mtok, price.provider) == ("acme-*", 1.0, "acme")


def test_overrides_by_function_beat_the_prices_file(
    tmp_path: Path, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps([{"match": "acme-*", "input_per_mtok": 1, "output_per_mtok": 1}]))
    monkeypatch.setenv("SESSIONTRACE_PRICES", str(path))
    sessiontrace.configure(tracking_uri=f"sqlite:///{store_path}")
    assert (_pricing.price_usage(usage(10**6, 0), "acme-1") or ({}, ""))[1] == "prices-file:acme-*"
    sessiontrace.set_model_price("acme-1", input_per_mtok=5, output_per_mtok=5)
    assert _pricing.price_usage(usage(10**6, 0), "acme-1") == (
        {"input_cost": 5.0, "output_cost": 0.0, "total_cost": 5.0},
        "override:acme-1",
    )


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        json.dumps({"models": "acme"}),
        json.dumps({"models": [{"match": "a", "input_per_mtok": -1, "output_per_mtok": 1}]}),
        json.dumps({"models": [{"match": "a", "input_per_mtok": 1, "output_per_mtok": 1, "x": 1}]}),
        json.dumps({"models": [{"input_per_mtok": 1, "output_per_mtok": 1}]}),
    ],
)
def test_a_bad_prices_file_fails_configure(tmp_path: Path, content: str) -> None:
    path = tmp_path / "prices.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="the prices file"):
        sessiontrace.configure(prices=path)
    with pytest.raises(ValueError, match="cannot read"):
        sessiontrace.configure(prices=tmp_path / "missing.json")


def test_a_bad_prices_file_from_the_environment_never_breaks_tracing(
    tmp_path: Path,
    store_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "prices.json"
    path.write_text("{broken")
    monkeypatch.setenv("SESSIONTRACE_PRICES", str(path))
    sessiontrace.configure(tracking_uri=f"sqlite:///{store_path}")
    with sessiontrace.start_span("chat"):
        llm_call(tokens=usage(1000, 100, cache_read=400))
    assert span_attributes(last_trace(), "llm")[COST]["total_cost"] == pytest.approx(0.00018)
    assert "prices file ignored" in caplog.text


def test_without_the_extra_everything_but_overrides_is_unpriced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "genai_prices", None)  # import fails: not installed
    _pricing.reset_for_tests()
    sessiontrace.set_model_price("mine", input_per_mtok=1, output_per_mtok=1)
    with sessiontrace.start_span("chat"):
        llm_call(tokens=usage(1000, 100))
        llm_call("mine", model="mine", tokens=usage(10**6, 0))
    trace = last_trace()
    assert span_attributes(trace, "llm")["sessiontrace.llm.unpriced"] is True
    assert span_attributes(trace, "mine")[COST]["total_cost"] == 1.0
    assert json.loads(trace.info.trace_metadata["mlflow.trace.tokenUsage"])["total_tokens"] == (
        1_001_100
    )


def test_prices_are_updated_only_when_the_user_opts_in(
    monkeypatch: pytest.MonkeyPatch, no_network: list[Any]
) -> None:
    import genai_prices

    started: list[bool] = []

    class FakeUpdater:
        def start(self, **kwargs: Any) -> None:
            started.append(True)

    monkeypatch.setattr(genai_prices, "UpdatePrices", FakeUpdater)
    _pricing.reset_for_tests()
    assert _pricing.price_usage(usage(10, 10), "gpt-4o-mini") is not None
    assert started == []
    monkeypatch.setenv("SESSIONTRACE_UPDATE_PRICES", "1")
    _pricing.reset_for_tests()
    assert _pricing.price_usage(usage(10, 10), "gpt-4o-mini") is not None
    assert started == [True]
    assert no_network == []


def test_pricing_runs_on_the_writer_thread_not_the_callers(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    real = _pricing.price_usage

    def spy(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(_pricing, "price_usage", spy)
    with sessiontrace.start_span("chat"):
        llm_call(tokens=usage(10, 10))
    assert threads == []  # nothing yet: the caller only queued the trace
    sessiontrace.flush()
    assert threads == ["sessiontrace-writer"]


def test_a_pricing_failure_loses_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("price list bug")

    monkeypatch.setattr(_pricing, "price_usage", broken)
    with sessiontrace.start_span("chat"):
        llm_call(tokens=usage(10, 10))
    trace = last_trace()
    assert COST not in span_attributes(trace, "llm")
    assert sessiontrace.search_traces("trace.unpriced_calls = 1", return_type="list")
    stats = sessiontrace.get_stats()
    assert stats["llm_pricing"]["errors"] == 1 and stats["dropped"] == 0


def test_a_failing_prepare_step_never_loses_the_batch(
    monkeypatch: pytest.MonkeyPatch, store_path: Path
) -> None:
    def broken(items: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(_pricing, "price_items", broken)
    # a new pipeline (same store) picks up the broken step
    sessiontrace.configure(tracking_uri=f"sqlite:///{store_path}", flush_interval=0.01)
    with sessiontrace.start_span("chat"):
        llm_call(tokens=usage(10, 10))
    trace = last_trace()
    assert COST not in span_attributes(trace, "llm")
    assert sessiontrace.get_stats()["internal_errors"] == {"prepare": 1}


def test_lookups_are_cached_per_provider_and_model(monkeypatch: pytest.MonkeyPatch) -> None:
    import genai_prices

    snapshot = genai_prices.data_snapshot.get_snapshot()
    calls: list[tuple[Any, ...]] = []
    real = type(snapshot).find_provider_model

    def counting(self: Any, *args: Any) -> Any:
        calls.append(args)
        return real(self, *args)

    monkeypatch.setattr(type(snapshot), "find_provider_model", counting)
    with sessiontrace.start_span("chat"):
        for i in range(30):
            llm_call(f"llm{i}", tokens=usage(10 + i, 10))
            llm_call(f"other{i}", model="gpt-4o", tokens=usage(10, i))
    sessiontrace.flush()
    assert sorted(c[0] for c in calls) == ["gpt-4o", "gpt-4o-mini"]


def test_spans_without_usage_or_model_or_still_running_are_left_alone() -> None:
    with sessiontrace.start_span("chat"):
        llm_call("no-usage", tokens=None)
        llm_call("no-model", model=None, tokens=usage(10, 10))
        llm_call("bad-usage", tokens={"input_tokens": "many"})  # type: ignore[dict-item]
        llm_call("priced-already", tokens=usage(10, 10), **{COST: {"total_cost": 1.5}})
    trace = last_trace()
    for name in ("no-usage", "no-model", "bad-usage"):
        attrs = span_attributes(trace, name)
        assert COST not in attrs and "sessiontrace.llm.unpriced" not in attrs, name
    assert span_attributes(trace, "priced-already")[COST] == {"total_cost": 1.5}
    frame = sessiontrace.search_traces(return_type="pandas")
    # four LLM calls; the one priced by the app counts, the other three are unpriced
    assert frame["info.llm_calls"].tolist() == [4]
    assert frame["info.unpriced_calls"].tolist() == [3]
    assert frame["info.cost"].tolist() == [1.5]


def test_configuring_another_prices_file_takes_effect(tmp_path: Path, store_path: Path) -> None:
    for rate in (1, 2):
        path = tmp_path / f"prices{rate}.json"
        path.write_text(
            json.dumps([{"match": "acme", "input_per_mtok": rate, "output_per_mtok": 0}])
        )
        sessiontrace.configure(tracking_uri=f"sqlite:///{store_path}", prices=path)
        priced = _pricing.price_usage(usage(10**6, 0), "acme")
        assert priced is not None and priced[0]["total_cost"] == rate


def test_flat_prices_applied_directly_equal_genai_prices_own_calculation() -> None:
    """Every model of the bundled snapshot, priced the fast way where its price is flat
    per token, costs exactly what genai-prices' own calculation says, and a tiered or
    per-request price is left to that calculation."""
    import datetime

    import genai_prices
    from genai_prices import Usage, data_snapshot

    when = datetime.datetime.now(datetime.timezone.utc)
    snapshot = data_snapshot.get_snapshot()
    calls = [(1000, 400, 0, 100), (250_000, 0, 120_000, 5_000), (7, 0, 0, 0), (0, 0, 0, 3)]
    flat = tiered = 0
    for provider in snapshot.providers:
        for model in provider.models:
            price = model.get_prices(when)
            rates = _pricing._flat_rates(genai_prices, model, when)
            kinds = {type(v).__name__ for v in vars(price).values() if v is not None}
            if rates is None:
                tiered += 1
                continue
            assert kinds <= {"Decimal"}, (provider.id, model.id)
            flat += 1
            in_rate, read_rate, write_rate, out_rate = rates
            for inp, read, write, out in calls:
                try:
                    expected = price.calc_price(
                        Usage(
                            input_tokens=inp,
                            output_tokens=out,
                            cache_read_tokens=read or None,
                            cache_write_tokens=write or None,
                        )
                    )
                except Exception:  # genai-prices refuses this usage for this model
                    continue
                got_in = (inp - read - write) * in_rate + read * read_rate + write * write_rate
                assert (got_in, out * out_rate) == (
                    expected["input_price"],
                    expected["output_price"],
                ), (provider.id, model.id, inp, read, write, out)
    # Most prices are flat; some are tiered or charge per request.
    assert flat > 1000 and tiered > 0


def test_the_fast_path_is_what_prices_a_stored_call(no_network: list[Any]) -> None:
    with sessiontrace.start_span("chat"):
        llm_call(model="gpt-4o-mini", provider="openai", tokens=usage(1000, 100, cache_read=400))
    attrs = span_attributes(last_trace(), "llm")
    assert attrs[COST]["total_cost"] == 0.00018  # exact: Decimal arithmetic, as genai-prices
    assert any(rates is not None for _, rates in _pricing._state.flat.values())
