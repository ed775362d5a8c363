"""Notifications about finished runs: email (SMTP) and signed webhooks."""

from tinymlaas.notify.email import send_email
from tinymlaas.notify.notifier import Notifier, run_event_name
from tinymlaas.notify.webhooks import SIGNATURE_HEADER, deliver_webhook, sign_payload

__all__ = [
    "SIGNATURE_HEADER",
    "Notifier",
    "deliver_webhook",
    "run_event_name",
    "send_email",
    "sign_payload",
]
