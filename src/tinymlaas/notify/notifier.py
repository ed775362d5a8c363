"""Tells a project's people and webhooks that one of its runs finished."""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Callable
from typing import Any

import httpx

from tinymlaas.config import Settings
from tinymlaas.domain import Run
from tinymlaas.domain.units import human_bytes, human_mib
from tinymlaas.errors import InvalidInputError
from tinymlaas.notify.email import send_email
from tinymlaas.notify.queue import Attempt, Delivery, DeliveryQueue
from tinymlaas.notify.webhooks import post_webhook, webhook_body
from tinymlaas.store.accounts import AccountStore, Webhook

__all__ = ["Notifier", "email_delivery", "run_event_name", "webhook_delivery"]

log = logging.getLogger("tinymlaas.notify")
#: The metrics a run's e-mail shows, with how each reads.
_SUMMARY: list[tuple[str, str, Callable[[Any], str]]] = [
    ("accuracy", "accuracy", lambda v: f"{v:.2f}%"), ("mae", "MAE", lambda v: f"{v:.4g}"),
    ("auc", "AUC", lambda v: f"{v:.4f}"),
    ("cosine_mean", "mean cosine to the input model", lambda v: f"{v:.4f}"),
    ("snr_db", "output SNR", lambda v: f"{v:.1f} dB"), ("file_bytes", "size", human_bytes),
    ("latency_ms_p50", "latency p50", lambda v: f"{v:.3f} ms"),
    ("peak_memory_mb", "peak memory", human_mib)]


def run_event_name(run: Run) -> str:
    return f"run.{run.status.value}"


def webhook_delivery(name: str, url: str, secret: str, event: str, body: bytes, *,
                     timeout_s: float, allow_private: bool) -> Delivery:
    """A queued webhook POST of ``body``: retried on connection errors, timeouts and 5xx;
    not on other statuses, nor when the address is refused."""

    def send() -> Attempt:
        try:
            status = post_webhook(url, secret, event, body, timeout_s=timeout_s,
                                  allow_private=allow_private)
        except InvalidInputError as exc:  # malformed, or an internal address
            return Attempt(False, exc.message)
        except httpx.TransportError as exc:
            return Attempt(False, f"{type(exc).__name__}: {exc}", retry=True)
        if 200 <= status < 300:
            return Attempt(True, f"HTTP {status}")
        if 300 <= status < 400:
            return Attempt(False, f"HTTP {status}: redirects are not followed")
        return Attempt(False, f"HTTP {status}", retry=status >= 500)

    return Delivery(name, send)


def email_delivery(name: str, settings: Settings, to: list[str], subject: str,
                   body: str) -> Delivery:
    """A queued email: retried when the server cannot be reached or answers 4xx; not
    when it refuses for good (5xx)."""

    def send() -> Attempt:
        try:
            sent = send_email(settings, to, subject, body)
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused) as exc:
            return Attempt(False, f"{type(exc).__name__}: {exc}")
        except smtplib.SMTPResponseException as exc:
            return Attempt(False, f"SMTP {exc.smtp_code}", retry=exc.smtp_code < 500)
        except OSError as exc:
            return Attempt(False, f"{type(exc).__name__}: {exc}", retry=True)
        return Attempt(True, "sent" if sent else "no SMTP host")

    return Delivery(name, send)


class Notifier:
    """Queues the email and webhook notifications of finished runs; never raises and never
    waits for a receiver. Callable with a run (a run queue's ``on_finished``).

    Args:
        settings: SMTP and webhook settings (timeout, attempts, queue size, private
            addresses).
        store: Where project members and webhooks are recorded.
        queue: Where deliveries go; by default one of its own, sized by ``settings``.
    """

    def __init__(self, settings: Settings, store: AccountStore,
                 queue: DeliveryQueue | None = None) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue or DeliveryQueue(max_pending=settings.webhook_queue_size,
                                            attempts=settings.webhook_attempts)

    def __call__(self, run: Run) -> dict[str, Any]:
        return self.run_finished(run)

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop delivering (see :meth:`DeliveryQueue.close`)."""
        self.queue.close(timeout_s)

    def run_finished(self, run: Run) -> dict[str, Any]:
        """Queue the notifications of a finished run; returns what was queued (for logs and
        tests): ``{"event", "email": [recipients], "webhooks": {hook id: queued}}``."""
        event = run_event_name(run)
        queued: dict[str, Any] = {"event": event, "email": [], "webhooks": {}}
        try:
            if run.status.value in {"succeeded", "degraded", "failed"} and \
                    self.settings.smtp_host:
                recipients = self.store.owners_and_members(run.project)
                if recipients and self.queue.submit(email_delivery(
                        f"email about run {run.id}", self.settings, recipients,
                        *self._email(run))):
                    queued["email"] = recipients
            hooks = [h for h in self.store.list_webhooks({run.project}) if event in h.events]
            if hooks:
                body = webhook_body(self._payload(run, event))
                for hook in hooks:
                    queued["webhooks"][hook.id] = self.queue.submit(
                        self._webhook(hook, run, event, body))
        except Exception:  # a notification problem must not affect the run
            log.exception("notifications for run %s could not be queued", run.id)
        return queued

    def _webhook(self, hook: Webhook, run: Run, event: str, body: bytes) -> Delivery:
        return webhook_delivery(f"webhook {hook.id} ({event} of run {run.id})", hook.url,
                                hook.secret, event, body,
                                timeout_s=self.settings.webhook_timeout_s,
                                allow_private=self.settings.webhook_allow_private)

    @staticmethod
    def _payload(run: Run, event: str) -> dict[str, Any]:
        return {"event": event, "run": run.model_dump(mode="json", exclude={"steps"}),
                "steps": [s.model_dump(mode="json", exclude={"log"}) for s in run.steps]}

    @staticmethod
    def _email(run: Run) -> tuple[str, str]:
        subject = f"[tinymlaas] run {run.name} {run.status.value}"
        lines = [f"Run {run.name} ({run.id}) in project {run.project} {run.status.value}.", ""]
        if run.error:
            lines += [f"Error: {run.error}", ""]
        lines.append("Steps:")
        lines += [f"  {s.index + 1}. {s.transformer}: {s.status.value}"
                  + (f" ({s.error})" if s.error else "") for s in run.steps]
        if run.result:
            lines += ["", "Result (input model -> output):"]
            for key, label, show in _SUMMARY:
                if isinstance(run.result.get(key), int | float):
                    before = run.baseline.get(key)
                    lines.append(f"  {label}: "
                                 f"{show(before) if isinstance(before, int | float) else '-'}"
                                 f" -> {show(run.result[key])}")
        return subject, "\n".join(lines) + "\n"
