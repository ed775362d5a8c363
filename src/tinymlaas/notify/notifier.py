"""Tells a project's people and webhooks that one of its runs finished."""

from __future__ import annotations

import logging
from typing import Any

from tinymlaas.config import Settings
from tinymlaas.domain import Run
from tinymlaas.notify.email import send_email
from tinymlaas.notify.webhooks import deliver_webhook
from tinymlaas.store.accounts import AccountStore

__all__ = ["Notifier", "run_event_name"]

log = logging.getLogger("tinymlaas.notify")
_SUMMARY = [("accuracy", "accuracy"), ("file_bytes", "size (bytes)"),
            ("latency_ms_p50", "latency p50 (ms)"), ("peak_memory_mb", "peak memory (MB)")]


def run_event_name(run: Run) -> str:
    return f"run.{run.status.value}"


class Notifier:
    """Sends the email and webhook notifications of finished runs; never raises.

    Args:
        settings: SMTP and webhook settings.
        store: Where project members and webhooks are recorded.
    """

    def __init__(self, settings: Settings, store: AccountStore) -> None:
        self.settings = settings
        self.store = store

    def run_finished(self, run: Run) -> dict[str, Any]:
        """Notify about a finished run; returns what was sent (for logs and tests)."""
        event = run_event_name(run)
        sent: dict[str, Any] = {"event": event, "email": [], "webhooks": {}}
        if run.status.value in {"succeeded", "failed"}:
            recipients = self.store.owners_and_members(run.project)
            try:
                if send_email(self.settings, recipients, *self._email(run)):
                    sent["email"] = recipients
            except OSError as exc:
                log.warning("could not email about run %s: %s", run.id, exc)
        payload = {"event": event, "run": run.model_dump(mode="json", exclude={"steps"}),
                   "steps": [s.model_dump(mode="json", exclude={"log"}) for s in run.steps]}
        for hook in self.store.list_webhooks({run.project}):
            if event not in hook.events:
                continue
            try:
                sent["webhooks"][hook.id] = deliver_webhook(
                    hook.url, hook.secret, event, payload,
                    timeout_s=self.settings.webhook_timeout_s,
                    allow_private=self.settings.webhook_allow_private)
            except Exception as exc:  # a receiver's problem must not affect the run
                log.warning("webhook %s for run %s failed: %s", hook.id, run.id, exc)
                sent["webhooks"][hook.id] = None
        return sent

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
            for key, label in _SUMMARY:
                if key in run.result:
                    lines.append(f"  {label}: {run.baseline.get(key, '-')} -> {run.result[key]}")
        return subject, "\n".join(lines) + "\n"
