"""breakerd's public API and service: the circuit-breaker facade, monitor, LLM client, HTTP."""
