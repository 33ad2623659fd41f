"""LLM calls: autolog for the ``openai`` and ``anthropic`` SDKs, pricing and trace-level
totals (private; the public entry points are ``sessiontrace.openai``,
``sessiontrace.anthropic``, ``sessiontrace.autolog`` and ``sessiontrace.set_model_price``).
Importing this package never imports an SDK."""
