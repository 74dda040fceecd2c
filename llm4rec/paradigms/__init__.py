"""LLM recommendation paradigms, one module each (data -> model -> loss -> ranking)."""
