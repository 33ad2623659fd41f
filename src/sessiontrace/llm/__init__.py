"""LLM calls: their span attributes, pricing and trace-level totals."""
