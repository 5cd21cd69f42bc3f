"""Audit entries: one decision as canonical JSON, how it is encoded and read back.

An entry is canonical JSON (sorted keys, no spaces, UTF-8, no floats) that
carries its own ``index``, so a swapped or moved entry names itself.
Secret-bearing detail fields are stored as salted HMACs (see
:mod:`strongroom.audit.redaction`). The writer receives an entry as an
:data:`EncodedEntry`, the bytes before and after the index digits, so it can
number entries inside its transaction without re-encoding them::

    encoder = EntryEncoder(Redactor(salt), clock)
    prefix, suffix = encoder.encode("alice", "weights.read", "minilm@1", "allow", "", None,
                                    None, None, None)
    body = prefix + b"7" + suffix          # the entry at index 7
    AuditEvent.from_body(body).index       # 7
"""

from __future__ import annotations

import json
import json.encoder
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from strongroom.audit.redaction import Redactor, _secret_key
from strongroom.crypto.dsse import canonical_json as dsse_canonical_json
from strongroom.errors import IntegrityError, InvalidInput
from strongroom.timefmt import parse_utc

__all__ = [
    "AuditEvent",
    "EncodedEntry",
    "EntryEncoder",
    "canonical_json",
    "entry_index",
    "format_time",
    "utcnow",
]

INDEX_KEY = b'"index":'
#: The canonical encoder's string escaping (``ensure_ascii=False``), applied field by field.
_string: Callable[[str], str] = json.encoder.encode_basestring
_INDEX_PLACEHOLDER = b'"index":0'

#: An entry's canonical JSON split around its index digits: ``(prefix, suffix)``.
EncodedEntry = tuple[bytes, bytes]


def utcnow() -> datetime:
    """The default audit clock: now, in UTC."""
    return datetime.now(UTC)


def _reject(value: Any) -> Any:
    raise InvalidInput(f"{type(value).__name__} cannot go into an audit entry")


#: Canonical JSON of checked values in C: the options of
#: :func:`strongroom.crypto.dsse.canonical_json`'s encoder (sorted keys, no spaces,
#: ``ensure_ascii=False``) called directly, without ``JSONEncoder.encode``'s set-up per
#: call or its circular-reference map (a checked value has no cycles: the check recurses
#: first). None where the interpreter has no C encoder (then the encoder's own path).
def _c_encoder() -> Callable[[Any, int], Any] | None:
    make = getattr(json.encoder, "c_make_encoder", None)
    escape = getattr(json.encoder, "c_encode_basestring", None)
    if make is None or escape is None:
        return None
    # (markers, default, encoder, indent, key separator, item separator, sort_keys,
    # skipkeys, allow_nan), as JSONEncoder.iterencode passes them.
    encoder: Callable[[Any, int], Any] = make(None, _reject, escape, None, ":", ",", True,
                                              False, False)
    return encoder


_C_ENCODE = _c_encoder()
#: Parses an entry's JSON text. ``json.loads`` on bytes first sniffs the encoding (~5 us an
#: entry, as much as the parse); an entry is UTF-8 by construction, so it is decoded as that.
_DECODE = json.JSONDecoder().decode


def _json(value: Any) -> bytes:
    """Canonical JSON of a checked value (the same bytes as ``dsse.canonical_json``)."""
    if _C_ENCODE is None:
        return dsse_canonical_json(value, checked=True)
    return "".join(_C_ENCODE(value, 0)).encode("utf-8")


#: The whole second of the last entry written with the default clock, and its text.
_second: tuple[int, str] = (-1, "")


def _now_text() -> str:
    """``format_time(utcnow())`` without a datetime an entry: the text of the current
    second is made once a second, the microseconds added to it (floored, as ``utcnow``)."""
    global _second
    sec, ns = divmod(time.time_ns(), 1_000_000_000)
    cached = _second
    if cached[0] != sec:
        cached = (sec, datetime.fromtimestamp(sec, UTC).isoformat(timespec="seconds")[:-6])
        _second = cached
    return f"{cached[1]}.{ns // 1000:06d}Z"


def format_time(t: datetime) -> str:
    """An entry's ``time``: UTC, microseconds, ``Z`` suffix (aware datetimes only)."""
    if t.tzinfo is UTC:  # the default clock's: "+00:00" becomes "Z"
        return t.isoformat(timespec="microseconds")[:-6] + "Z"
    if t.tzinfo is None:
        raise InvalidInput("the audit clock must return timezone-aware datetimes")
    if t.utcoffset():
        t = t.astimezone(UTC)
    return t.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _check_json(value: Any, where: str) -> None:
    # Fast path for the shapes every entry has (a dict of str keys and plain scalars):
    # exact-type tests, and the path for a message built only for a child that needs one.
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return
    if kind is dict:
        for k, v in value.items():
            if type(k) is not str and not isinstance(k, str):
                raise InvalidInput(f"{where}: keys must be strings")
            vk = type(v)
            if not (vk is str or vk is int or vk is bool or v is None):
                _check_json(v, f"{where}.{k}")
        return
    if isinstance(value, float):
        raise InvalidInput(f"{where}: floats are not allowed in audit entries (use int or str)")
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidInput(f"{where}: keys must be strings")
            _check_json(v, f"{where}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_json(v, f"{where}[{i}]")
    elif not (value is None or isinstance(value, str | int | bool)):
        raise InvalidInput(f"{where}: {type(value).__name__} cannot go into an audit entry")


def canonical_json(value: Any, *, checked: bool = False) -> bytes:
    """An entry's bytes: :func:`strongroom.crypto.dsse.canonical_json` after the entry's type check."""
    if not checked:
        _check_json(value, "entry")
    return dsse_canonical_json(value, checked=True)


def entry_index(body: bytes) -> int | None:
    """The top-level ``index`` an entry's bytes record, or None when it has none."""
    # Keys after "index" hold only strings or null, so the last '"index":' is the top-level one.
    at = body.rfind(INDEX_KEY)
    if at < 0:
        return None
    start = at + len(INDEX_KEY)
    end = start
    while end < len(body) and 48 <= body[end] <= 57:
        end += 1
    return int(body[start:end]) if end > start else None


@dataclass(frozen=True)
class AuditEvent:
    """One decision as recorded: its index and fields, and the exact bytes hashed."""

    index: int
    time: str
    actor: str
    action: str
    object: str
    decision: str
    reason: str
    request_id: str | None
    details: dict[str, Any]
    shard: str | None
    nbytes: int | None
    body: bytes = field(repr=False)

    @cached_property
    def at(self) -> float:
        """When the entry was written, in seconds since the epoch (parsed once: events are shared)."""
        return parse_utc(self.time, obj=f"audit entry {self.index}")

    @classmethod
    def from_body(cls, body: bytes) -> AuditEvent:
        """Parse an entry's canonical JSON."""
        try:
            d = _DECODE(body.decode("utf-8"))
            return cls(
                index=int(d["index"]),
                time=str(d["time"]),
                actor=str(d["actor"]),
                action=str(d["action"]),
                object=str(d["object"]),
                decision=str(d["decision"]),
                reason=str(d.get("reason", "")),
                request_id=d.get("request_id"),
                details=dict(d.get("details") or {}),
                shard=d.get("shard"),
                nbytes=d.get("bytes"),
                body=body,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError("audit entry is not a valid event record") from exc

    def to_dict(self) -> dict[str, Any]:
        """The entry as a JSON-able mapping."""
        out: dict[str, Any] = json.loads(self.body)
        return out


def _plain_items(values: list[Any]) -> bool:
    """Whether every item of ``values`` is an exact ``str``, ``int``, ``bool`` or None."""
    for v in values:
        kind = type(v)
        if not (kind is str or kind is int or kind is bool or v is None):
            return False
    return True


class EntryEncoder:
    """Turns a decision's fields into an :data:`EncodedEntry` (redacted, timestamped)."""

    def __init__(self, redactor: Redactor, clock: Callable[[], datetime]) -> None:
        self.redactor = redactor
        self.clock = clock
        # The default clock's text without a datetime an entry (_now_text).
        self._now: Callable[[], str] | None = _now_text if clock is utcnow else None

    def encode(
        self,
        actor: str,
        action: str,
        obj: str,
        decision: str,
        reason: str = "",
        request_id: str | None = None,
        details: Mapping[str, Any] | None = None,
        shard: str | None = None,
        nbytes: int | None = None,
    ) -> EncodedEntry:
        """Check and encode one decision; raises :class:`InvalidInput` for bad fields.

        The parameters are an event's keywords (:meth:`AuditLog.append`'s), so an
        event mapping encodes as ``encode(**event)``.
        """
        if (type(actor) is str and type(action) is str and type(obj) is str
                and type(decision) is str and type(reason) is str
                and actor and action and obj and decision
                and (shard is None or type(shard) is str)
                and (request_id is None or type(request_id) is str)):
            # Every field a plain, valid str (the checks below pass): the fields in canonical
            # (sorted) order, each string through the encoder's own escaping, the same bytes
            # as the record below without building and sorting it.
            details_json = self._details(details) if details else b"{}"
            now = self._now
            when = now() if now is not None else format_time(self.clock())
            front = ('{"action":' + _string(action) + ',"actor":' + _string(actor)
                    + ("" if nbytes is None else ',"bytes":' + int.__repr__(int(nbytes)))
                    + ',"decision":' + _string(decision) + ',"details":').encode("utf-8")
            back = (',"object":' + _string(obj) + ',"reason":' + _string(reason)
                    + ',"request_id":' + ("null" if request_id is None else _string(request_id))
                    + ("" if shard is None else ',"shard":' + _string(shard))
                    + ',"time":' + _string(when) + "}")
            return front + details_json + b',"index":', back.encode("utf-8")
        for name, value in (("actor", actor), ("action", action), ("object", obj),
                            ("decision", decision)):
            if not isinstance(value, str) or not value:
                raise InvalidInput(f"audit event needs a non-empty {name}")
        if not isinstance(reason, str) or not (request_id is None or isinstance(request_id, str)):
            raise InvalidInput("audit reason and request id must be strings")
        redacted = self.redactor.redact(details) if details else {}
        if redacted:
            _check_json(redacted, "details")
        record: dict[str, Any] = {
            "index": 0,
            "time": format_time(self.clock()),
            "actor": actor,
            "action": action,
            "object": obj,
            "decision": decision,
            "reason": reason,
            "request_id": request_id,
            "details": redacted,
        }
        if shard is not None:
            record["shard"] = shard
        if nbytes is not None:
            record["bytes"] = int(nbytes)
        body = canonical_json(record, checked=True)
        head, _, tail = body.rpartition(_INDEX_PLACEHOLDER)
        return head + INDEX_KEY, tail

    def _details(self, details: Mapping[str, Any]) -> bytes:
        """The canonical JSON of non-empty ``details``, redacted and checked.

        Details that are a flat dict of plain scalars (exact ``str``, ``int``, ``bool``
        or None) and lists of them under string keys, with no string under a secret
        key, have nothing to redact or refuse: they are encoded as they are, without the redacted copy
        and the type check's second pass. Anything else takes the redactor and the check.
        """
        if type(details) is dict:
            for k, v in details.items():
                kind = type(v)
                if type(k) is not str:
                    break
                if kind is str:
                    if _secret_key(k):
                        break
                elif kind is list:  # a Grant's approvers: plain strings, none a secret
                    if _secret_key(k) or not _plain_items(v):
                        break
                elif not (kind is int or kind is bool or v is None):
                    break
            else:
                return _json(details)
        redacted = self.redactor.redact(details)
        if not redacted:
            return b"{}"
        _check_json(redacted, "details")
        return _json(redacted)

    def refusal(self, item: EncodedEntry, error: BaseException) -> EncodedEntry:
        """A failed batch's entry as the refusal it became (its fields already redacted)."""
        record = json.loads(item[0] + b"0" + item[1])
        details = dict(record.get("details") or {})
        details["unrecorded"] = {"decision": record["decision"], "attempted_at": record["time"],
                                 "error": type(error).__name__}
        message = getattr(error, "message", None) or type(error).__name__
        record.update(decision="deny", time=format_time(self.clock()), details=details,
                      reason=f"refused: the audit log could not record it ({message})"[:500])
        head, _, tail = canonical_json(record, checked=True).rpartition(_INDEX_PLACEHOLDER)
        return head + INDEX_KEY, tail
