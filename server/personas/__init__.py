"""Personas: named experts applied on the server.

config.py    the ``personas:`` entries of the YAML file
persona.py   a persona applied to a request (system prompt, client system policy, caps)
farewell.py  the farewell marker replaced by the exact farewell text, whole or streamed
"""
