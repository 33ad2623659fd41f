"""Pricing LLM calls: price overrides first, then genai-prices, else *unpriced*.

Runs on the pipeline's writer thread (and in the ingest server), never on the
caller's thread. A span is priced when it carries ``mlflow.chat.tokenUsage`` and
``mlflow.llm.model``, has ended, and has no ``mlflow.llm.cost`` yet. It then gets

- ``mlflow.llm.cost`` = ``{"input_cost", "output_cost", "total_cost"}`` (USD floats)
  and ``sessiontrace.llm.price_source`` (``"override:<glob>"``,
  ``"prices-file:<glob>"`` or ``"genai-prices <version>"``), or
- ``sessiontrace.llm.unpriced`` = ``True`` when no price is known: the cost stays
  absent (``NULL``, counted as an unpriced call), never 0.

Input tokens include cached ones (MLflow's and genai-prices' convention); cache
reads and cache writes are priced at their own rates, the rest at the input rate.

Where a price comes from, first match wins:

1. ``sessiontrace.set_model_price(glob, ...)``, the latest call first;
2. the prices file named by ``configure(prices=...)`` or ``SESSIONTRACE_PRICES``;
3. genai-prices (``pip install 'sessiontrace[cost]'``), from the snapshot bundled
   with it: no network unless ``SESSIONTRACE_UPDATE_PRICES=1``.

A lookup is cached per (provider, model), so pricing a call costs a dict probe and
the arithmetic. genai-prices' own calculation takes about 60 us a call; a price that
is flat per token (most are: no tiers, no per-request fee) is found so once, by
probing genai-prices' calculation itself, and then applied directly, in Decimal as
genai-prices does, in a few microseconds.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import fnmatch
import importlib
import json
import logging
import math
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

from .._records import SpanRecord, TraceRecord
from ._keys import COST, MODEL, PRICE_SOURCE, PROVIDER, UNPRICED, USAGE
from ._rollup import usage_counts

__all__ = [
    "ModelPrice",
    "load_prices_file",
    "price_items",
    "price_span",
    "price_usage",
    "pricing_stats",
    "set_model_price",
    "use_prices_file",
]

logger = logging.getLogger("sessiontrace")

UPDATE_ENV = "SESSIONTRACE_UPDATE_PRICES"


@dataclasses.dataclass(frozen=True)
class ModelPrice:
    """A price per million tokens for models whose name matches ``pattern`` (a
    case-insensitive glob). A cache rate left ``None`` is charged at the input rate."""

    pattern: str
    input_per_mtok: float
    output_per_mtok: float
    cache_read_per_mtok: float | None = None
    cache_write_per_mtok: float | None = None
    provider: str | None = None
    source: str = "override"

    def matches(self, provider: str | None, model: str) -> bool:
        if self.provider is not None and (provider or "").lower() != self.provider.lower():
            return False
        return fnmatch.fnmatchcase(model.lower(), self.pattern.lower())

    def cost(
        self, inp: int, out: int, cache_read: int, cache_write: int
    ) -> tuple[float, float, float]:
        read_rate = (
            self.input_per_mtok if self.cache_read_per_mtok is None else self.cache_read_per_mtok
        )
        write_rate = (
            self.input_per_mtok if self.cache_write_per_mtok is None else self.cache_write_per_mtok
        )
        uncached = max(inp - cache_read - cache_write, 0)
        input_cost = (
            uncached * self.input_per_mtok + cache_read * read_rate + cache_write * write_rate
        ) / 1e6
        output_cost = out * self.output_per_mtok / 1e6
        return input_cost, output_cost, input_cost + output_cost


def _rate(name: str, value: Any, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")
    return float(value)


def _model_price(
    pattern: Any,
    *,
    input_per_mtok: Any,
    output_per_mtok: Any,
    cache_read_per_mtok: Any = None,
    cache_write_per_mtok: Any = None,
    provider: Any = None,
    source: str,
) -> ModelPrice:
    if not isinstance(pattern, str) or not pattern:
        raise TypeError("the model pattern must be a non-empty str (a glob such as 'my-llama*')")
    if provider is not None and not isinstance(provider, str):
        raise TypeError(f"provider must be a str or None, not {type(provider).__name__}")
    return ModelPrice(
        pattern,
        cast(float, _rate("input_per_mtok", input_per_mtok)),
        cast(float, _rate("output_per_mtok", output_per_mtok)),
        _rate("cache_read_per_mtok", cache_read_per_mtok, optional=True),
        _rate("cache_write_per_mtok", cache_write_per_mtok, optional=True),
        provider,
        f"{source}:{pattern}",
    )


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.overrides: list[ModelPrice] = []  # newest first
        self.prices_path: str | None = None  # the prices file in force (use_prices_file)
        self.file: tuple[str | None, list[ModelPrice]] | None = None  # (path, prices)
        self.cache: dict[tuple[str | None, str], Any] = {}
        # id(genai-prices ModelPrice) -> (that object, its flat per-token rates or None)
        self.flat: dict[int, tuple[Any, tuple[decimal.Decimal, ...] | None]] = {}
        self.snapshot: Any = None
        self.genai: Any = None  # the module, False when it is not installed
        self.source = ""
        self.stats = {"priced": 0, "unpriced": 0, "errors": 0}


_state = _State()


def set_model_price(
    model: str,
    *,
    input_per_mtok: float,
    output_per_mtok: float,
    cache_read_per_mtok: float | None = None,
    cache_write_per_mtok: float | None = None,
    provider: str | None = None,
) -> None:
    """Price models whose name matches ``model`` (a glob, case-insensitive) in USD per
    million tokens, before genai-prices is asked. A price of 0 means free.

    For custom, fine-tuned and self-hosted models that no price list knows (their
    calls are otherwise *unpriced*), or to apply your negotiated rates. ``provider``
    restricts the price to spans whose ``mlflow.llm.provider`` is that value. The
    latest call for a pattern wins. Spans already written keep their cost.

    >>> sessiontrace.set_model_price("my-local-llama*", input_per_mtok=0, output_per_mtok=0)
    >>> sessiontrace.set_model_price("ft:gpt-4o-mini:*", input_per_mtok=0.30,
    ...                              output_per_mtok=1.20, cache_read_per_mtok=0.15)
    """
    price = _model_price(
        model,
        input_per_mtok=input_per_mtok,
        output_per_mtok=output_per_mtok,
        cache_read_per_mtok=cache_read_per_mtok,
        cache_write_per_mtok=cache_write_per_mtok,
        provider=provider,
        source="override",
    )
    with _state.lock:
        _state.overrides = [
            price,
            *(p for p in _state.overrides if (p.pattern, p.provider) != (model, provider)),
        ]
        _state.cache = {}


def load_prices_file(path: str | os.PathLike[str]) -> list[ModelPrice]:
    """The prices of a JSON or TOML file: ``{"models": [{"match": "my-llama*",
    "input_per_mtok": 0.1, "output_per_mtok": 0.3, ...}]}`` (TOML: ``[[models]]``
    tables with the same keys; ``cache_read_per_mtok``, ``cache_write_per_mtok`` and
    ``provider`` optional). Raises ``ValueError`` for a missing or malformed file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read the prices file {str(p)!r}: {exc}") from None
    try:
        if p.suffix.lower() == ".toml":
            try:
                tomllib: Any = importlib.import_module("tomllib")
            except ImportError:  # Python 3.10
                raise ValueError(
                    "TOML prices files need Python 3.11 or later; use a .json file"
                ) from None
            data: Any = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"the prices file {str(p)!r} is not valid: {exc}") from None
    models = data.get("models") if isinstance(data, dict) else data
    if not isinstance(models, list):
        raise ValueError(f"the prices file {str(p)!r} needs a 'models' list")
    prices = []
    known = {
        "match",
        "input_per_mtok",
        "output_per_mtok",
        "cache_read_per_mtok",
        "cache_write_per_mtok",
        "provider",
    }
    for i, entry in enumerate(models):
        if not isinstance(entry, dict):
            raise ValueError(f"the prices file {str(p)!r}: models[{i}] must be a table/object")
        unknown = set(entry) - known
        if unknown:
            raise ValueError(
                f"the prices file {str(p)!r}: models[{i}] has unknown keys {sorted(unknown)}"
            )
        try:
            prices.append(
                _model_price(
                    entry.get("match"),
                    input_per_mtok=entry.get("input_per_mtok"),
                    output_per_mtok=entry.get("output_per_mtok"),
                    cache_read_per_mtok=entry.get("cache_read_per_mtok"),
                    cache_write_per_mtok=entry.get("cache_write_per_mtok"),
                    provider=entry.get("provider"),
                    source="prices-file",
                )
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"the prices file {str(p)!r}: models[{i}]: {exc}") from None
    return prices


def _file_prices() -> list[ModelPrice]:
    path = _state.prices_path
    cached = _state.file
    if cached is not None and cached[0] == path:
        return cached[1]
    prices: list[ModelPrice] = []
    if path:
        try:
            prices = load_prices_file(path)
        except ValueError as exc:  # never break the writer: report once a path
            logger.warning("sessiontrace: prices file ignored: %s", exc)
    _state.file = (path, prices)
    _state.cache = {}
    return prices


def _genai() -> Any:
    """The genai_prices module, or ``None`` without the ``cost`` extra."""
    module = _state.genai
    if module is None:
        try:
            from importlib.metadata import version

            import genai_prices

            module = genai_prices
            try:
                _state.source = f"genai-prices {version('genai-prices')}"
            except Exception:
                _state.source = "genai-prices"
            if os.environ.get(UPDATE_ENV, "").strip().lower() in ("1", "true", "yes"):
                # Opt-in only: fetches the latest prices from GitHub in the background.
                genai_prices.UpdatePrices().start()
        except Exception:  # not installed (or broken): everything not overridden is unpriced
            module = False
        _state.genai = module
    return module or None


def _resolve(provider: str | None, model: str) -> Any:
    """What prices this (provider, model): a ``ModelPrice``, genai-prices' (provider,
    model info), or ``None``; cached."""
    key = (provider, model)
    found = _state.cache.get(key, _state)
    if found is not _state:
        return found
    found = None
    for price in (*_state.overrides, *_file_prices()):
        if price.matches(provider, model):
            found = price
            break
    if found is None and (gp := _genai()) is not None:
        try:
            found = gp.data_snapshot.get_snapshot().find_provider_model(model, None, provider, None)
        except LookupError:
            found = None
        except (AttributeError, TypeError):  # another genai-prices: its public call
            found = ("calc_price", None)
    _state.cache[key] = found
    return found


def price_usage(
    usage: Any, model: str, provider: str | None = None, *, timestamp_ns: int | None = None
) -> tuple[dict[str, float], str] | None:
    """The cost of one call and its price source, or ``None`` when unpriced."""
    counts = usage_counts(usage)
    if counts is None or not isinstance(model, str) or not model:
        return None
    inp, out, _total, cache_read, cache_write = counts
    gp = _genai()
    if gp is not None:
        snapshot = gp.data_snapshot.get_snapshot()
        if snapshot is not _state.snapshot:  # prices updated (opt-in): look up again
            _state.snapshot = snapshot
            _state.cache = {}
            _state.flat = {}
    found = _resolve(provider, model)
    if found is None:
        return None
    if isinstance(found, ModelPrice):
        input_cost, output_cost, total_cost = found.cost(
            inp, out, cache_read or 0, cache_write or 0
        )
        source = found.source
    else:
        assert gp is not None
        when = None
        if timestamp_ns is not None:
            when = datetime.datetime.fromtimestamp(timestamp_ns / 1e9, tz=datetime.timezone.utc)
        flat = None if found[0] == "calc_price" else _flat_rates(gp, found[1], when)
        u = None
        if flat is None:
            u = gp.Usage(
                input_tokens=inp,
                output_tokens=out,
                cache_read_tokens=cache_read or None,
                cache_write_tokens=cache_write or None,
            )
        if flat is not None:
            uncached = inp - (cache_read or 0) - (cache_write or 0)
            in_rate, read_rate, write_rate, out_rate = flat
            in_price = (
                uncached * in_rate + (cache_read or 0) * read_rate + (cache_write or 0) * write_rate
            )
            out_price = out * out_rate
            result = _Result(in_price, out_price, in_price + out_price)
        elif found[0] == "calc_price":
            result = gp.calc_price(u, model, provider_id=provider, genai_request_timestamp=when)
        else:
            snapshot = _state.snapshot  # as genai-prices' own calc_price calls it
            result = found[1].calc_price(
                u,
                found[0],
                genai_request_timestamp=when,
                auto_update_timestamp=snapshot.timestamp if snapshot.from_auto_update else None,
            )
        input_cost = float(result.input_price)
        output_cost = float(result.output_price)
        total_cost = float(result.total_price)
        source = _state.source
    return (
        {"input_cost": input_cost, "output_cost": output_cost, "total_cost": total_cost},
        source,
    )


@dataclasses.dataclass(frozen=True)
class _Result:
    input_price: decimal.Decimal
    output_price: decimal.Decimal
    total_price: decimal.Decimal


_PER_TOKEN = decimal.Decimal(1_000_000)


def _flat_rates(gp: Any, info: Any, when: datetime.datetime | None) -> Any:
    """(input, cache read, cache write, output) USD per token when the model's price in
    force at ``when`` is flat per token for those four counts, else ``None``.

    Decided once per price object by asking genai-prices' own calculation: one token
    kind at a time gives each rate, nothing at all must cost nothing (no per-request
    fee), and a mixed, large call (past any tier threshold) must cost exactly the
    rates' sum. Tiered prices are never flat.
    """
    price = info.get_prices(when or datetime.datetime.now(datetime.timezone.utc))
    entry = _state.flat.get(id(price))
    if entry is not None and entry[0] is price:
        return entry[1]
    rates: tuple[decimal.Decimal, ...] | None = None
    try:
        values = [v for v in vars(price).values() if v is not None]
        if all(type(v) is decimal.Decimal for v in values):
            million = 1_000_000

            def probe(inp: int, read: int, write: int, out: int) -> Any:
                usage = gp.Usage(
                    input_tokens=inp,
                    output_tokens=out,
                    cache_read_tokens=read or None,
                    cache_write_tokens=write or None,
                )
                return price.calc_price(usage)

            zero = probe(0, 0, 0, 0)
            in_rate = probe(million, 0, 0, 0)["input_price"] / _PER_TOKEN
            read_rate = probe(million, million, 0, 0)["input_price"] / _PER_TOKEN
            write_rate = probe(million, 0, million, 0)["input_price"] / _PER_TOKEN
            out_rate = probe(0, 0, 0, million)["output_price"] / _PER_TOKEN
            mixed = probe(3_000_000, 700_000, 300_000, 900_000)
            expected_in = 2_000_000 * in_rate + 700_000 * read_rate + 300_000 * write_rate
            if (
                zero["total_price"] == 0
                and mixed["input_price"] == expected_in
                and mixed["output_price"] == 900_000 * out_rate
            ):
                rates = (in_rate, read_rate, write_rate, out_rate)
    except Exception:  # any doubt: genai-prices' own calculation, call by call
        rates = None
    _state.flat[id(price)] = (price, rates)
    return rates


def price_span(span: SpanRecord) -> SpanRecord:
    """The span priced when it is an ended LLM call (usage and a model) without a cost
    yet, else the span itself. A priced span is a new record with new attributes."""
    attrs = span.attributes
    if not attrs or USAGE not in attrs or COST in attrs or span.end_ns is None:
        return span
    model = attrs.get(MODEL)
    if not isinstance(model, str) or not model:
        return span
    provider = attrs.get(PROVIDER)
    try:
        priced = price_usage(
            attrs[USAGE],
            model,
            provider if isinstance(provider, str) else None,
            timestamp_ns=span.start_ns,
        )
    except Exception:  # a price list's bug must not lose the trace: left unpriced
        _state.stats["errors"] += 1
        logger.debug("sessiontrace could not price a span", exc_info=True)
        return span
    new = dict(attrs)
    if priced is None:
        if usage_counts(attrs[USAGE]) is None:
            return span  # malformed usage: nothing to price, nothing to flag
        new[UNPRICED] = True
        _state.stats["unpriced"] += 1
    else:
        new[COST], new[PRICE_SOURCE] = priced
        new.pop(UNPRICED, None)
        _state.stats["priced"] += 1
    return span.with_attributes(new)


def price_items(items: Iterable[Any]) -> list[Any]:
    """A batch of pipeline items (records) with its LLM spans priced: the pipeline's
    prepare step, and the ingest server's. Items without an LLM call to price are
    returned as they are, at the cost of a dict probe a span."""
    out = list(items)
    for i, item in enumerate(out):
        if type(item) is TraceRecord:
            for span in item.spans:
                attrs = span.attributes
                if attrs and USAGE in attrs:
                    out[i] = _price_trace(item)
                    break
        elif type(item) is SpanRecord and item.attributes:
            out[i] = price_span(item)
    return out


def _price_trace(trace: TraceRecord) -> TraceRecord:
    spans = trace.spans
    priced = tuple([price_span(s) for s in spans])
    if all(a is b for a, b in zip(priced, spans, strict=True)):
        return trace
    return trace.with_spans(priced)


def use_prices_file(path: str | None) -> None:
    """Price with this file's prices (after ``set_model_price``'s); ``None``: none.
    The runtime calls it whenever its settings change; the file is read again."""
    _state.prices_path = path
    _state.file = None
    _state.cache = {}


def pricing_stats() -> dict[str, int]:
    """Calls priced, left unpriced and failed (a price list error) in this process."""
    return dict(_state.stats)


def reset_for_tests() -> None:
    global _state
    _state = _State()
