"""Webhooks: a task's one delivery once it has ended, signed as Standard Webhooks sign, sent past the egress guard.

The delivery row is written in the transaction that ends the task (``Ledger._announce_end``), with the
message that asks for its first attempt. Every attempt is such a message (a Cloud Tasks HTTP task in a
deployment, the embedded dispatcher's in one process): it claims the row under a lease, so two
messages never send at once and a late duplicate sends nothing, POSTs the task document, and records
the answer. A network error, a 5xx or a 429 is tried again after a wait that quadruples, as a message
held back until then, written in the same transaction as the outcome; any other answer is final. A
message that got lost (a queue emptied, a process gone) is sent again by housekeeping (``overdue``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import timedelta

import certifi
import urllib3
from sqlalchemy import Engine, and_, or_, select, update

from htbase.config import WEBHOOK_MAX_BACKOFF_S
from htbase.messages import WebhookRequest
from htbase.urls import DEFAULT_PORTS, validate_url
from infra.db import new_session, rowcount
from infra.egress.policy import EgressPolicy
from infra.models import WebhookDelivery, utcnow
from infra.outbox import OutboxRow, enqueue, webhook_outgoing

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
EVENT = "task.completed"


@dataclass(frozen=True)
class Attempt:
    delivery_id: str  # the webhook-id, the same on every attempt
    task_id: str
    url: str
    number: int  # 1 for the first


def retried(status: int | None) -> bool:
    """Whether an answer is worth another attempt: none at all (a network error), a 5xx, a 429."""
    return status is None or status >= 500 or status == 429


def signature(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: ``v1,`` and the base64 HMAC-SHA256 of ``id.timestamp.body``."""
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def post(url: str, body: bytes, headers: dict[str, str], policy: EgressPolicy, timeout_s: float) -> int:
    """POST ``body`` to ``url``; the answer's status. The host is resolved once and every address
    vetted by the egress policy, and the connection goes to a vetted address (no second lookup that
    could be rebound); TLS is still checked against the host name. Redirects are not followed.

    Raises ``EgressRefused`` (never allowed), ``ResolutionError``, or urllib3's and the OS's network errors.
    """
    parts = urllib3.util.parse_url(validate_url(url))
    scheme, host_name = parts.scheme or "https", parts.host or ""  # validate_url guarantees both
    port = parts.port or DEFAULT_PORTS[scheme]
    address = policy.resolve(host_name, port)[0]
    timeout = urllib3.Timeout(connect=timeout_s, read=timeout_s)
    if scheme == "https":
        host = host_name.strip("[]")
        pool: urllib3.HTTPConnectionPool = urllib3.HTTPSConnectionPool(
            address,
            port,
            timeout=timeout,
            retries=False,
            server_hostname=host,
            assert_hostname=host,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
        )
    else:
        pool = urllib3.HTTPConnectionPool(address, port, timeout=timeout, retries=False)
    netloc = host_name if parts.port in (None, DEFAULT_PORTS[scheme]) else f"{host_name}:{parts.port}"
    with pool:
        response = pool.urlopen(
            "POST",
            parts.request_uri,
            body=body,
            headers={**headers, "Host": netloc},
            redirect=False,
            assert_same_host=False,
            preload_content=False,
        )
        response.release_conn()  # the receiver's answer is its status; its body is not read
        return response.status


class Webhooks:
    """The deliveries table: claim an attempt, record its outcome, find what was lost."""

    def __init__(self, engine: Engine, *, backoff_s: float, max_attempts: int, lease_s: float) -> None:
        self.engine = engine
        self.backoff_s, self.max_attempts = backoff_s, max_attempts
        self.lease = timedelta(seconds=lease_s)

    def claim(self, delivery_id: str) -> Attempt | str:
        """The attempt that is due now, held under a lease; else why there is none."""
        now = utcnow()
        free = or_(WebhookDelivery.lease_expires_at.is_(None), WebhookDelivery.lease_expires_at < now)
        with new_session(self.engine) as session, session.begin():
            claimed = (
                rowcount(
                    session.execute(
                        update(WebhookDelivery)
                        .where(
                            WebhookDelivery.id == delivery_id,
                            WebhookDelivery.status == PENDING,
                            WebhookDelivery.next_attempt_at <= now,
                            free,
                        )
                        .values(
                            attempts=WebhookDelivery.attempts + 1, lease_expires_at=now + self.lease, updated_at=now
                        )
                        .execution_options(synchronize_session=False)
                    )
                )
                == 1
            )
            delivery = session.get(WebhookDelivery, delivery_id)
        if delivery is None:
            return "missing"  # its task was deleted
        if claimed:
            return Attempt(delivery.id, delivery.task_id, delivery.url, delivery.attempts)
        if delivery.status != PENDING:
            return delivery.status
        return "not due" if delivery.next_attempt_at and delivery.next_attempt_at > now else "busy"

    def record(
        self, attempt: Attempt, status: int | None, error: str | None = None, *, final: bool = False
    ) -> list[OutboxRow]:
        """The outcome of an attempt (``status`` None: no answer, ``error`` says why; ``final``: no
        attempt could do better); the message of the next attempt, if there is one, to publish."""
        now = utcnow()
        again = retried(status) and attempt.number < self.max_attempts and not final
        values: dict = {
            "last_status": status,
            "last_error": error[:2000] if error else None,
            "lease_expires_at": None,
            "updated_at": now,
        }
        if status is not None and 200 <= status < 300:
            values.update(status=DELIVERED, delivered_at=now, next_attempt_at=None)
        elif again:
            due = now + timedelta(seconds=self.wait_s(attempt.number))
            values.update(next_attempt_at=due)
        else:
            values.update(status=FAILED, next_attempt_at=None)
        with new_session(self.engine) as session, session.begin():
            held = (
                rowcount(
                    session.execute(  # unless the attempt lost its lease and another took over
                        update(WebhookDelivery)
                        .where(
                            WebhookDelivery.id == attempt.delivery_id,
                            WebhookDelivery.status == PENDING,
                            WebhookDelivery.attempts == attempt.number,
                        )
                        .values(**values)
                        .execution_options(synchronize_session=False)
                    )
                )
                == 1
            )
            retry = [webhook_outgoing(WebhookRequest(attempt.delivery_id), due)] if held and again else []
            return enqueue(session, retry, now)

    def wait_s(self, attempts: int) -> float:
        """The wait after ``attempts`` attempts: RETRY_BACKOFF_SECONDS, quadrupled each time, up to 6 h."""
        return min(self.backoff_s * 4 ** (attempts - 1), WEBHOOK_MAX_BACKOFF_S)

    def overdue(self, grace_s: float) -> list[OutboxRow]:
        """Ask again for the attempts whose message should have come ``grace_s`` ago: it was lost (a
        queue that restarted empty, a process that died holding it, an attempt that crashed)."""
        now = utcnow()
        late = and_(
            WebhookDelivery.status == PENDING,
            WebhookDelivery.next_attempt_at < now - timedelta(seconds=grace_s),
            or_(WebhookDelivery.lease_expires_at.is_(None), WebhookDelivery.lease_expires_at < now),
        )
        with new_session(self.engine) as session, session.begin():
            deliveries = session.scalars(
                select(WebhookDelivery).where(late).limit(200).with_for_update(skip_locked=True)
            ).all()
            for delivery in deliveries:
                delivery.next_attempt_at, delivery.updated_at = now, now  # not overdue again for a while
            return enqueue(session, [webhook_outgoing(WebhookRequest(d.id)) for d in deliveries], now)
