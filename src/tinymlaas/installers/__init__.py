"""Installers: package a compressed model with a runtime, in the form its target takes.

Each installer is a transformer (``package-c``, ``package-python``, ``package-docker``,
``sign-image``); the work of building the package lives here, below the transformers, so
that it touches files only. Resource files ship under ``files/`` as ``*.tmpl``.
"""
