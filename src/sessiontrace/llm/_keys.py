"""Attribute and metadata keys of LLM calls (MLflow's names where MLflow has one)."""

from __future__ import annotations

__all__ = [
    "COST",
    "MODEL",
    "PRICE_SOURCE",
    "PROVIDER",
    "TRACE_COST",
    "TRACE_TOKEN_USAGE",
    "UNPRICED",
    "USAGE",
]

# On LLM spans; written by the autologgers or by hand.
USAGE = "mlflow.chat.tokenUsage"
MODEL = "mlflow.llm.model"
PROVIDER = "mlflow.llm.provider"
# On LLM spans; written by the pricer (sessiontrace.llm._pricing).
COST = "mlflow.llm.cost"
PRICE_SOURCE = "sessiontrace.llm.price_source"
UNPRICED = "sessiontrace.llm.unpriced"
# Trace metadata, JSON text, written by the store (sessiontrace.llm._rollup).
TRACE_TOKEN_USAGE = "mlflow.trace.tokenUsage"
TRACE_COST = "mlflow.trace.cost"
