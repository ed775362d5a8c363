"""The HTTP API of the Studio service (FastAPI): routes under ``api/routes``, request and
response bodies in :mod:`tinymlaas.api.schemas`. :mod:`tinymlaas.server` serves it, with the web
pages, as one application.
"""
