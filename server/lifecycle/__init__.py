"""What lives as long as the app: its typed state, reloads, generations and graceful drain.

runtime.py      the app's state, built in the lifespan
generations.py  requests in flight per configuration generation
reloader.py     SIGHUP / ``POST /admin/reload``
drain.py        SIGTERM: drain, then cut off cleanly
http_guard.py   limits at the HTTP layer (header size, count and time; idle and excess connections)
one_write.py    a response's head and body in one socket write
"""
