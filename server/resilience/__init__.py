"""Resilience around any provider's call.

chain.py        retries, fallbacks and the per-model guards for one request
breaker.py      circuit breakers (per model and per endpoint)
concurrency.py  per-model concurrency caps with a bounded queue
"""
