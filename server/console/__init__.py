"""The web console at ``/ui``: a playground and a control room, plain static files.

The browser does all the work against Puente's own JSON APIs (``/v1/*``, ``/admin/*``,
``/ready``) with the key in an ``Authorization`` header; this package only serves the files,
with headers that keep model output from ever running as script (``routes.py``).
"""

from server.console.routes import router

__all__ = ["router"]
