"""Studio web UI: server-rendered pages on the same app, accounts and permissions as the API.

:func:`install_web` adds the pages, their static files and the locally served plotly.js
to a FastAPI app. Pages only parse forms, authenticate (session cookie), call the
workspace services and render Jinja2 templates.
"""

from tinymlaas.web.app import install_web

__all__ = ["install_web"]
