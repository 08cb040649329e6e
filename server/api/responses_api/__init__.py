"""The OpenAI Responses API front door (``POST /v1/responses``), translated onto the chat path:
``request`` (Responses → chat body), ``answer`` (chat.completion → Response), ``stream``
(chunks → typed events), ``store`` (stored responses), ``route`` (the endpoints)."""
