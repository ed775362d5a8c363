"""Plain-text email over SMTP (optionally STARTTLS and log-in)."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

from tinymlaas.config import Settings

__all__ = ["send_email"]


def send_email(settings: Settings, to: list[str], subject: str, body: str) -> bool:
    """Send one message to ``to``; False (nothing sent) when no SMTP host is configured.

    Raises:
        OSError: the server could not be reached (``smtplib.SMTPException`` included).
    """
    if not settings.smtp_host or not to:
        return False
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message.set_content(body)
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=10) as smtp:
        if settings.smtp_starttls:
            smtp.starttls()
        if settings.smtp_username:
            smtp.login(settings.smtp_username, settings.smtp_password or "")
        smtp.send_message(message)
    return True
