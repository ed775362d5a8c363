"""The site worker: runs a site's steps next to its data (``tinymlaas worker``)."""

from tinymlaas.worker.site import SiteWorker

__all__ = ["SiteWorker"]
