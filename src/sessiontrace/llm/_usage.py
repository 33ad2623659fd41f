"""One token-usage shape for every provider: MLflow's ``mlflow.chat.tokenUsage`` keys.

``input_tokens`` always INCLUDES cached tokens (read and write) and ``output_tokens``
includes reasoning, so a price per input and output token is right without knowing
the provider. OpenAI reports it that way already; Anthropic's ``input_tokens``
excludes the cache, which is added back here. Readers accept SDK objects and plain
dicts (a raw JSON body) alike.
"""

from __future__ import annotations

from typing import Any

__all__ = ["anthropic_usage", "merge_anthropic_usage", "openai_usage"]

INPUT = "input_tokens"
OUTPUT = "output_tokens"
TOTAL = "total_tokens"
CACHE_READ = "cache_read_input_tokens"
CACHE_WRITE = "cache_creation_input_tokens"
REASONING = "reasoning_tokens"


def _get(obj: Any, key: str) -> Any:
    if obj is None:
        return None
    if type(obj) is dict:
        return obj.get(key)
    value = getattr(obj, key, None)
    if value is None:
        extra = getattr(obj, "__pydantic_extra__", None)  # fields the SDK does not declare
        if extra:
            return extra.get(key)
    return value


def _int(value: Any) -> int | None:
    if type(value) is int:
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def openai_usage(usage: Any) -> dict[str, int] | None:
    """Chat, legacy completions and embeddings (``prompt_tokens``...) or the Responses
    API (``input_tokens``...). ``None`` when there is nothing usable."""
    if usage is None:
        return None
    prompt = _int(_get(usage, "prompt_tokens"))
    if prompt is not None:
        output = _int(_get(usage, "completion_tokens")) or 0
        total = _int(_get(usage, "total_tokens"))
        result = {INPUT: prompt, OUTPUT: output, TOTAL: prompt + output if total is None else total}
        cached = _int(_get(_get(usage, "prompt_tokens_details"), "cached_tokens"))
        if cached is None:  # some OpenAI-compatible servers use Anthropic's name
            cached = _int(_get(usage, CACHE_READ))
        if cached is not None:
            result[CACHE_READ] = cached
        written = _int(_get(usage, CACHE_WRITE))
        if written is not None:
            result[CACHE_WRITE] = written
        reasoning = _int(_get(_get(usage, "completion_tokens_details"), REASONING))
        if reasoning is not None:
            result[REASONING] = reasoning
        return result
    inp = _int(_get(usage, INPUT))
    if inp is None:
        return None
    output = _int(_get(usage, OUTPUT)) or 0
    total = _int(_get(usage, TOTAL))
    result = {INPUT: inp, OUTPUT: output, TOTAL: inp + output if total is None else total}
    cached = _int(_get(_get(usage, "input_tokens_details"), "cached_tokens"))
    if cached is not None:
        result[CACHE_READ] = cached
    reasoning = _int(_get(_get(usage, "output_tokens_details"), REASONING))
    if reasoning is not None:
        result[REASONING] = reasoning
    return result


def anthropic_usage(usage: Any) -> dict[str, int] | None:
    """Anthropic ``Message.usage``: input excludes the cache, so read + write go back in."""
    if usage is None:
        return None
    inp = _int(_get(usage, INPUT))
    output = _int(_get(usage, OUTPUT))
    if inp is None and output is None:
        return None
    read = _int(_get(usage, CACHE_READ))
    written = _int(_get(usage, CACHE_WRITE))
    total_in = (inp or 0) + (read or 0) + (written or 0)
    result = {INPUT: total_in, OUTPUT: output or 0, TOTAL: total_in + (output or 0)}
    if read is not None:
        result[CACHE_READ] = read
    if written is not None:
        result[CACHE_WRITE] = written
    return result


def merge_anthropic_usage(start: Any, delta: Any) -> dict[str, Any]:
    """A stream's usage: ``message_start`` carries input and cache counts, the last
    ``message_delta`` the cumulative output (and, from newer servers, final input)."""
    merged: dict[str, Any] = {}
    for source in (start, delta):
        if source is None:
            continue
        for key in (INPUT, OUTPUT, CACHE_READ, CACHE_WRITE):
            value = _get(source, key)
            if value is not None:
                merged[key] = value
    return merged
