"""Notifications about finished runs: email (SMTP) and signed webhooks, delivered from a
bounded queue of their own to public addresses only."""

from tinymlaas.notify.email import send_email
from tinymlaas.notify.notifier import Notifier, run_event_name
from tinymlaas.notify.queue import Attempt, Delivery, DeliveryQueue
from tinymlaas.notify.webhooks import (
    SIGNATURE_HEADER,
    check_webhook_url,
    deliver_webhook,
    post_webhook,
    sign_payload,
)

__all__ = [
    "SIGNATURE_HEADER",
    "Attempt",
    "Delivery",
    "DeliveryQueue",
    "Notifier",
    "check_webhook_url",
    "deliver_webhook",
    "post_webhook",
    "run_event_name",
    "send_email",
    "sign_payload",
]
