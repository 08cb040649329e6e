"""What operators see: Prometheus metrics, logs and the per-request context they carry.

metrics.py          the app's metric registry
logs.py             log configuration
request_context.py  the request id, a context variable logs and upstream calls read
"""
