"""The ``tinymlaas`` command line."""
