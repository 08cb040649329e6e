"""Anthropic's Messages API as a front door (``POST /v1/messages``) onto the shared pipeline.

request.py  Messages request → OpenAI chat body (what is translated, what is dropped)
answer.py   chat.completion → Message (content blocks, stop_reason, usage)
stream.py   chat.completion.chunk stream → Anthropic's stream events, in order
errors.py   Puente's errors → Anthropic's envelope, statuses and ``event: error``
tokens.py   the count_tokens estimate
models.py   ``GET /v1/models`` in Anthropic's shape
route.py    the front door and its routes
"""
