"""The senders of the alert routes: webhook (generic JSON, Slack/Mattermost) and syslog (TCP, TLS).

A sender takes a batch of alert payloads (as the outbox stored them, each
carrying its ``idempotency_key``) in order and returns one :class:`Outcome`
per payload it tried, stopping at the first the receiver did not take::

    sender = sender_for(config.route("siem"), config.delivery)
    outcomes = sender.send([payload, ...])       # [Outcome("delivered"), Outcome("retry", "...")]

* ``delivered``: the receiver accepted it (HTTP 2xx; for syslog: the
  receiver read the frames up to the end of the stream and closed it).
* ``retry``: the receiver is down, slow or answered 408/429/5xx; the outbox
  backs the route off and tries again later.
* ``failed``: the receiver refused this payload for good (another 4xx); the
  outbox keeps it, listed by ``strongroom alerts outbox``, and goes on.

Webhooks POST one alert per request with an ``Idempotency-Key`` header and the
same key in the body; redirects are not followed (a redirected POST would be
replayed as an empty GET and the alert lost) and no proxy from the
environment is used. Syslog messages are RFC 5424 with the alert in
structured data (``[strongroom@32473 id=... key=... rule=...]``) and as JSON
in MSG, framed by octet counting (RFC 6587, section 3.4.1), in TLS (RFC 5425)
when the route pins a CA. Errors name the route and never its URL's path,
query or headers (where tokens live).
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from strongroom.errors import InvalidInput
from strongroom.monitor.alert_config import FACILITIES, Delivery, SyslogRoute, WebhookRoute
from strongroom.timefmt import parse_utc, utc_stamp

__all__ = ["Outcome", "Sender", "SyslogSender", "WebhookSender", "idempotency_key",
           "rfc5424", "sender_for"]

#: RFC 5424 severities for strongroom's (critical -> 2 crit, high -> 3 err, ...).
SYSLOG_SEVERITY = {"critical": 2, "high": 3, "warning": 4, "info": 6}
_BOM = "\ufeff"


def idempotency_key(payload: Mapping[str, Any]) -> str:
    """The key a receiver de-duplicates on: set at enqueue, else derived from the alert id."""
    return str(payload.get("idempotency_key") or f"strongroom-alert-{payload.get('id')}")


@dataclass(frozen=True)
class Outcome:
    """What became of one payload: delivered, retry later (route backs off), or failed for good."""

    state: Literal["delivered", "retry", "failed"]
    error: str | None = None


class Sender(Protocol):
    """Delivers payloads in order; one outcome per payload tried, stopping at a ``retry``."""

    def send(self, payloads: Sequence[Mapping[str, Any]]) -> list[Outcome]:
        """Deliver ``payloads``; see the module's docstring for the outcomes."""
        ...


def _body(payload: Mapping[str, Any]) -> dict[str, Any]:
    return {**payload, "idempotency_key": idempotency_key(payload), "source": "strongroom"}


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A Slack / Mattermost incoming-webhook body: one line of text, and the key."""
    key = idempotency_key(payload)
    text = (f"*{str(payload.get('severity', '')).upper()}* {payload.get('rule')} "
            f"{payload.get('subject')} on {payload.get('object')}: {payload.get('message')} "
            f"(alert {payload.get('id')}, {key})")
    return {"text": _slack_escape(text), "username": "strongroom", "idempotency_key": key}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError with the 3xx status


class WebhookSender:
    """POSTs each alert as JSON (``webhook``) or as a Slack/Mattermost message (``slack``)."""

    def __init__(self, route: WebhookRoute, delivery: Delivery) -> None:
        self.route = route
        self.timeout_s = delivery.timeout_s
        handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({}),
                                                      _NoRedirect()]
        if route.ca_file is not None:
            context = ssl.create_default_context(cafile=str(route.ca_file))
            handlers.append(urllib.request.HTTPSHandler(context=context))
        self._opener = urllib.request.build_opener(*handlers)

    def _post(self, payload: Mapping[str, Any]) -> Outcome:
        body = slack_body(payload) if self.route.type == "slack" else _body(payload)
        headers = {"Content-Type": "application/json", "User-Agent": "strongroom-alerts",
                   "Idempotency-Key": idempotency_key(payload),
                   **{k: v.get_secret_value() for k, v in self.route.headers.items()}}
        request = urllib.request.Request(  # noqa: S310 (scheme checked by the config)
            self.route.url.get_secret_value(), data=json.dumps(body, default=str).encode(),
            headers=headers, method="POST")
        where = f"route {self.route.name} ({self.route.target()})"
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                response.read(65536)
                return Outcome("delivered")
        except urllib.error.HTTPError as exc:
            code = exc.code
            lasting = 400 <= code < 500 and code not in (408, 425, 429)
            return Outcome("failed" if lasting else "retry",
                           f"{where} answered HTTP {code}")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            return Outcome("retry", f"{where}: {type(reason).__name__}: {_first_line(reason)}")

    def send(self, payloads: Sequence[Mapping[str, Any]]) -> list[Outcome]:
        """POST each in order; stop at the first the receiver did not take for now."""
        outcomes: list[Outcome] = []
        for payload in payloads:
            outcome = self._post(payload)
            outcomes.append(outcome)
            if outcome.state == "retry":
                break
        return outcomes


def _first_line(reason: object) -> str:
    return str(reason).splitlines()[0][:300] if str(reason) else "no detail"


def _sd_escape(value: object) -> str:
    """An RFC 5424 PARAM-VALUE: '"', '\\' and ']' escaped with a backslash."""
    text = str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _header_field(value: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, at most ``limit`` characters, or '-'."""
    clean = "".join(ch for ch in value if "!" <= ch <= "~")[:limit]
    return clean or "-"


def rfc5424(payload: Mapping[str, Any], route: SyslogRoute, *, hostname: str | None = None,
            procid: int | None = None) -> bytes:
    """One RFC 5424 message for an alert: PRI from the route's facility and the severity."""
    severity = SYSLOG_SEVERITY.get(str(payload.get("severity")), 5)
    pri = FACILITIES[route.facility] * 8 + severity
    try:  # RFC 5424 wants an offset; a time read back from SQLite has none (it is UTC)
        timestamp = utc_stamp(parse_utc(str(payload.get("time"))))
    except InvalidInput:
        timestamp = "-"
    host = _header_field(hostname or socket.gethostname(), 255)
    msgid = _header_field(str(payload.get("rule") or "-"), 32)
    params = {"id": payload.get("id"), "key": idempotency_key(payload),
              "rule": payload.get("rule"), "severity": payload.get("severity"),
              "subject": payload.get("subject"), "object": payload.get("object")}
    sd = f"[{route.sd_id} " + " ".join(f'{k}="{_sd_escape(v)}"' for k, v in params.items()) + "]"
    msg = json.dumps(_body(payload), sort_keys=True, default=str, ensure_ascii=False)
    line = (f"<{pri}>1 {timestamp} {host} {route.app_name} {procid or os.getpid()} {msgid} {sd} "
            f"{_BOM}{msg}")
    return line.encode("utf-8")


def octet_counted(message: bytes) -> bytes:
    """RFC 6587 octet-counting frame: ``MSG-LEN SP SYSLOG-MSG``."""
    return str(len(message)).encode() + b" " + message


class SyslogSender:
    """Sends a batch over one TCP (or TLS) connection; delivered once the receiver closes it.

    RFC 6587 has no acknowledgement: after the last frame the sender ends its
    half of the stream and waits for the receiver to close its own, which
    rsyslog does once it has read everything. A reset or a timeout is a retry
    of the whole batch (receivers de-duplicate on the key).
    """

    def __init__(self, route: SyslogRoute, delivery: Delivery) -> None:
        self.route = route
        self.timeout_s = delivery.timeout_s
        self._context: ssl.SSLContext | None = None
        if route.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies and checks the name
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_verify_locations(cafile=str(route.tls.ca_file))  # pinned: no system CAs
            if route.tls.cert_file is not None:
                context.load_cert_chain(str(route.tls.cert_file),
                                        str(route.tls.key_file) if route.tls.key_file else None)
            self._context = context

    def _exchange(self, data: bytes) -> None:
        sock = socket.create_connection((self.route.host, self.route.port), self.timeout_s)
        try:
            if self._context is not None:
                name = (self.route.tls.server_name if self.route.tls else None) or self.route.host
                sock = self._context.wrap_socket(sock, server_hostname=name)
            sock.sendall(data)
            if isinstance(sock, ssl.SSLSocket):
                try:
                    sock = sock.unwrap()  # close_notify, then the receiver's
                except ssl.SSLEOFError:
                    return  # the receiver read to the end and closed without close_notify
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):
                pass
        finally:
            sock.close()

    def send(self, payloads: Sequence[Mapping[str, Any]]) -> list[Outcome]:
        """All frames in one connection: every payload delivered, or every one a retry."""
        if not payloads:
            return []
        data = b"".join(octet_counted(rfc5424(p, self.route)) for p in payloads)
        try:
            self._exchange(data)
        except ssl.SSLCertVerificationError as exc:
            error = (f"route {self.route.name} ({self.route.target()}): the receiver's "
                     f"certificate does not chain to the pinned CA ({exc.verify_message})")
            return [Outcome("retry", error)]
        except (OSError, ssl.SSLError) as exc:
            error = f"route {self.route.name} ({self.route.target()}): {type(exc).__name__}: " \
                    f"{_first_line(exc)}"
            return [Outcome("retry", error)]
        return [Outcome("delivered") for _ in payloads]


def sender_for(route: WebhookRoute | SyslogRoute, delivery: Delivery) -> Sender:
    """The sender of ``route``."""
    if isinstance(route, SyslogRoute):
        return SyslogSender(route, delivery)
    return WebhookSender(route, delivery)
