"""Installer transformers: each packages a model in the form its target installs."""
