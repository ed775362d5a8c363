"""What the server and a site's workers share about the broker: the one task's name, a
site's queue, and the Celery settings (late acknowledgement, one message prefetched, no
result backend). Imports nothing of the server's database layer: a worker imports it."""

from __future__ import annotations

from typing import Any

__all__ = ["TASK_NAME", "celery_app", "queue_of"]

#: The name of the one task a site worker runs: ``run_job(job_json)``.
TASK_NAME = "tinymlaas.run_job"


def queue_of(site_id: str) -> str:
    """The broker queue of a site's jobs."""
    return f"tinymlaas.site.{site_id}"


def celery_app(broker_url: str, name: str = "tinymlaas") -> Any:
    """A Celery application on ``broker_url`` with the settings both ends share: late
    acknowledgement, one message prefetched per worker process, no result backend."""
    from celery import Celery

    app = Celery(name, broker=broker_url, backend=None, set_as_current=False)
    app.conf.update(
        task_acks_late=True, worker_prefetch_multiplier=1, task_ignore_result=True,
        task_serializer="json", accept_content=["json"], result_backend=None,
        task_create_missing_queues=True, broker_connection_retry_on_startup=True,
        broker_connection_timeout=5, worker_hijack_root_logger=False,
        worker_send_task_events=False, task_send_sent_event=False,
        # a redelivered message is checked against the job's lease, never trusted
        task_reject_on_worker_lost=False,
        # a step goes on while the broker is away: its lease and result go through the API
        worker_cancel_long_running_tasks_on_connection_loss=False,
        # RabbitMQ closes the channel of a step that outlives its consumer_timeout
        # (PRECONDITION_FAILED, a channel error): the worker connects again instead of
        # shutting down; the message it gets again is dropped by the job's lease
        broker_channel_error_retry=True)
    return app
