"""LLM calls: autolog for the ``openai`` and ``anthropic`` SDKs (private; the public
entry points are ``sessiontrace.openai``, ``sessiontrace.anthropic`` and
``sessiontrace.autolog``). Importing this package never imports an SDK."""
