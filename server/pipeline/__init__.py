"""The request pipeline: one path that every front door (chat, responses, messages, embeddings,
completions) hands its parsed request to.

request.py      the neutral request (OpenAI chat shapes) and stream chunks
catalog.py      public model name → configured entry, provider and upstream name
system_role.py  ``system_role: fold`` for models whose template has no system role
pipeline.py     admission → persona → resolution → resilience → provider → shaping → finish
"""
