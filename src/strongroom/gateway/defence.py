"""Extraction defence: output limits, rate limits, query budgets and pattern detectors.

The gateway applies these to every request, in this order::

    limits.admit(principal, n_texts, now)          # Throttled: rate or budget exceeded
    alerts = detector.observe(principal, host, texts, now)
    vectors = policy.shape(model.embed(texts), dimensions)   # truncate, renormalise, round

Each piece takes the clock as an argument and keeps bounded state, so tests
drive them with a fixed clock. The detectors are heuristics: they catch the
bulk query patterns extraction attacks need (random inputs to span the output
space, one-word-at-a-time probing, repeated near-identical inputs, many
principals behind one host) and raise alerts for a person to review; they do
not prove intent, and a patient attacker under the budgets may stay below them.
The budgets are the hard bound.
"""

from __future__ import annotations

import math
import re
import threading
import unicodedata
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from strongroom.errors import InvalidInput, Throttled
from strongroom.gateway.alerts import GatewayAlert

__all__ = [
    "BudgetLedger",
    "BudgetWindow",
    "DetectorConfig",
    "ExtractionDetector",
    "Limits",
    "LimitsConfig",
    "OutputPolicy",
    "PendingCharge",
    "QueryBudgetReached",
    "Throttled",
    "looks_random",
]


# -- output ------------------------------------------------------------------


@dataclass(frozen=True)
class OutputPolicy:
    """What a response may carry: precision, dimensions, batch and size caps."""

    #: Decimal places kept in each returned component.
    precision: int = 4
    #: Most components returned per vector (None: the model's dimension).
    max_dimensions: int | None = None
    #: Most texts per request.
    max_inputs: int = 64
    #: Most characters per text.
    max_input_chars: int = 8192
    #: Largest request body accepted.
    max_body_bytes: int = 1 << 20
    #: Largest response body returned.
    max_response_bytes: int = 2 << 20

    def dimensions(self, model_dimension: int, requested: int | None) -> int:
        """The number of components to return, checking a caller's request."""
        cap = min(model_dimension, self.max_dimensions or model_dimension)
        if requested is None:
            return cap
        if requested < 1 or requested > cap:
            raise InvalidInput(f"dimensions must be between 1 and {cap}", obj="dimensions")
        return requested

    def shape(self, vectors: np.ndarray[Any, Any], dimensions: int) -> np.ndarray[Any, Any]:
        """Truncate to ``dimensions``, renormalise to unit length, round to ``precision``."""
        cut = np.asarray(vectors[:, :dimensions], dtype=np.float64)
        norms = np.linalg.norm(cut, axis=1, keepdims=True)
        cut = cut / np.maximum(norms, 1e-12)
        rounded: np.ndarray[Any, Any] = np.round(cut, self.precision)
        return rounded


# -- rate limits and budgets ---------------------------------------------------


@dataclass(frozen=True)
class LimitsConfig:
    """Rates (requests/s with a burst) and budgets (texts per window), per principal and overall."""

    principal_rate: float = 5.0
    principal_burst: int = 20
    global_rate: float = 100.0
    global_burst: int = 200
    principal_budget: int = 20_000
    global_budget: int = 1_000_000
    budget_window_s: float = 86_400.0


class QueryBudgetReached(Throttled):
    """A query budget (texts per window, of one caller or of all callers) is spent.

    The gateway alerts on it (``query-budget``): staying under the rate limits and the
    extraction detectors while asking as much as the budget allows is how a model is
    distilled from its outputs.
    """

    def __init__(self, message: str, *, obj: str, retry_after: float, budget: int,
                 window_s: float, everyone: bool) -> None:
        super().__init__(message, obj=obj, retry_after=retry_after,
                         remedy="wait for the window to move, or ask for a larger budget")
        self.budget, self.window_s, self.everyone = budget, window_s, everyone


class _Bucket:
    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst, self.tokens, self.at = rate, burst, float(burst), now

    def take(self, now: float) -> float:
        """0 if a token was taken, else seconds until one is available."""
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class BudgetWindow:
    """Charges ``(time, texts)`` in time order within a sliding window, and their total."""

    def __init__(self) -> None:
        self.events: deque[tuple[float, int]] = deque()
        self.total = 0

    def used(self, now: float, window: float) -> int:
        while self.events and self.events[0][0] <= now - window:
            self.total -= self.events.popleft()[1]
        return self.total

    def add(self, now: float, n: int) -> None:
        self.events.append((now, n))
        self.total += n


class BudgetLedger(Protocol):
    """Budgets kept outside this process (:class:`strongroom.gateway.usage.UsageLedger`)."""

    def check(self, principal: str, texts: int, now: float) -> None:
        """Raise :class:`QueryBudgetReached` when ``texts`` more would pass a budget."""
        ...


@dataclass(frozen=True)
class PendingCharge:
    """A charge :meth:`Limits.admit` allowed, to be made durable with the answer's audit entry."""

    principal: str
    texts: int
    now: float


class Limits:
    """Token-bucket rate limits and sliding-window query budgets.

    With a ``ledger`` the budgets are the ledger's (durable, shared by every gateway on the
    database): :meth:`admit` pre-checks them and returns the :class:`PendingCharge` the
    gateway appends with its ``allow`` entry.
    """

    def __init__(self, config: LimitsConfig | None = None, *,
                 ledger: BudgetLedger | None = None) -> None:
        self.config = config or LimitsConfig()
        self.ledger = ledger
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}
        self._windows: dict[str, BudgetWindow] = {}

    def admit(self, principal: str, n_texts: int, now: float) -> PendingCharge | None:
        """Charge one request of ``n_texts`` texts, or raise Throttled (charging nothing).

        Without a ledger the budgets are charged here, in memory (None is returned); with
        one they are pre-checked against it and the charge is returned for the gateway to
        append with its ``allow`` entry (:meth:`strongroom.gateway.usage.UsageLedger.charge`),
        where it survives a restart and is shared by every gateway on the database.
        """
        c = self.config
        with self._lock:
            for key, rate, burst in ((f"p:{principal}", c.principal_rate, c.principal_burst),
                                     ("global", c.global_rate, c.global_burst)):
                bucket = self._buckets.get(key)
                if bucket is None:
                    bucket = self._buckets[key] = _Bucket(rate, burst, now)
                wait = bucket.take(now)
                if wait > 0:
                    who = principal if key != "global" else "all callers"
                    raise Throttled(f"request rate limit reached for {who}", obj=principal,
                                    retry_after=wait)
            if self.ledger is None:
                self._charge(principal, n_texts, now)
                return None
        # outside the lock: the ledger may be waiting on the audit log (another batch)
        self.ledger.check(principal, n_texts, now)
        return PendingCharge(principal, n_texts, now)

    def _charge(self, principal: str, n_texts: int, now: float) -> None:
        """Charge the in-memory budget windows (under the lock), or raise QueryBudgetReached."""
        c = self.config
        pw = self._windows.setdefault(f"p:{principal}", BudgetWindow())
        gw = self._windows.setdefault("global", BudgetWindow())
        for window, cap, who in ((pw, c.principal_budget, principal),
                                 (gw, c.global_budget, "all callers")):
            used = window.used(now, c.budget_window_s)
            if used + n_texts > cap:
                retry = (window.events[0][0] + c.budget_window_s - now) if window.events else 1
                raise QueryBudgetReached(
                    f"query budget of {cap} texts per {c.budget_window_s:.0f} s reached for {who}",
                    obj=principal, retry_after=retry, budget=cap,
                    window_s=c.budget_window_s, everyone=window is gw)
        pw.add(now, n_texts)
        gw.add(now, n_texts)

    def used(self, principal: str, now: float) -> int:
        """Texts charged to ``principal`` in the current budget window."""
        with self._lock:
            w = self._windows.get(f"p:{principal}")
            return 0 if w is None else w.used(now, self.config.budget_window_s)


# -- detection ------------------------------------------------------------------

_STOPWORDS_TEXT = (
    "a an the of to in on at for and or but is are was were be been it this that with as by "
    "from not no do does did have has had i you he she we they my your his her our their "
    "what which who how why when where there here can will would should could if so than then"
)
_STOPWORDS = frozenset(_STOPWORDS_TEXT.split(" "))
_VOWELS = frozenset("aeiouy")
_WORD = re.compile(r"\S+")
_CONSONANT_RUN = re.compile(r"[bcdfghjklmnpqrstvwxz]{5,}")
_PUNCT = "".join(chr(c) for c in range(33, 127) if not chr(c).isalnum())


def _wordlike(token: str) -> bool:
    word = token.strip(_PUNCT)
    if not word:
        return True
    if not word.isascii():
        return all(unicodedata.category(ch)[0] in "LMP" for ch in word)
    if not word.isalpha():
        return word.isdigit() and len(word) <= 6
    if len(word) > 20 or not (_VOWELS & set(word.lower())):
        return False
    if any(ch.isupper() for ch in word[1:]) and not word.isupper():
        return False
    return _CONSONANT_RUN.search(word.lower()) is None


def looks_random(text: str) -> bool:
    """True for text that reads like random characters or a random bag of words."""
    words = _WORD.findall(text)
    if not words:
        return False
    odd = sum(1 for w in words if not _wordlike(w))
    if odd / len(words) >= 0.4:
        return True
    if len(words) >= 8 and text.isascii():
        lower = [w.strip(_PUNCT).lower() for w in words]
        if sum(1 for w in lower if w in _STOPWORDS) / len(words) < 0.05:
            return True
    return False


def _normalise(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


@dataclass(frozen=True)
class DetectorConfig:
    """Thresholds of the extraction-pattern detectors, per principal within ``window_s``."""

    window_s: float = 600.0
    #: Random-looking texts (and at least half of all texts) that raise an alert.
    random_texts: int = 32
    #: Repeats of one normalised text that raise an alert.
    duplicates: int = 20
    #: Distinct texts differing in one word from a common template that raise an alert.
    probes: int = 24
    #: Distinct principals seen from one host that raise an alert.
    principals_per_host: int = 4
    #: How long a high-severity alert suspends the principal (or host).
    suspend_s: float = 900.0
    #: Most recent texts remembered per principal.
    memory: int = 4096


class _History:
    def __init__(self, memory: int) -> None:
        self.items: deque[tuple[float, bool, str, tuple[str, ...]]] = deque(maxlen=memory)
        self.randoms = 0
        self.dupes: Counter[str] = Counter()
        self.probes: dict[str, set[str]] = {}

    def expire(self, now: float, window: float) -> None:
        while self.items and self.items[0][0] <= now - window:
            self._forget(self.items.popleft())

    def _forget(self, item: tuple[float, bool, str, tuple[str, ...]]) -> None:
        _, rnd, norm, keys = item
        self.randoms -= rnd
        self.dupes[norm] -= 1
        if self.dupes[norm] <= 0:
            del self.dupes[norm]
        for key in keys:
            members = self.probes.get(key)
            if members is not None:
                members.discard(norm)
                if not members:
                    del self.probes[key]

    def add(self, now: float, rnd: bool, norm: str, keys: tuple[str, ...]) -> None:
        if len(self.items) == self.items.maxlen:
            self._forget(self.items[0])
        self.items.append((now, rnd, norm, keys))
        self.randoms += rnd
        self.dupes[norm] += 1
        for key in keys:
            self.probes.setdefault(key, set()).add(norm)


def _templates(norm: str) -> tuple[str, ...]:
    words = norm.split()
    if len(words) == 1:
        return ("<one word>",)
    if not 2 <= len(words) <= 32:
        return ()
    return tuple(" ".join([*words[:i], "\0", *words[i + 1:]]) for i in range(len(words)))


class ExtractionDetector:
    """Watches each principal's and host's recent texts; returns alerts when patterns appear."""

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config or DetectorConfig()
        self._lock = threading.Lock()
        self._history: dict[str, _History] = {}
        self._hosts: dict[str, dict[str, float]] = {}
        self._raised: dict[tuple[str, str], float] = {}
        self._suspended: dict[str, float] = {}

    def suspended(self, principal: str, host: str, now: float) -> float:
        """Seconds left of a suspension of this principal or host (0 if none)."""
        with self._lock:
            until = max(self._suspended.get(f"p:{principal}", 0.0),
                        self._suspended.get(f"h:{host}", 0.0))
        return max(0.0, until - now)

    def observe(self, principal: str, host: str, texts: Sequence[str],
                now: float) -> list[GatewayAlert]:
        """Record a request's texts; return the alerts it newly triggers."""
        c = self.config
        # The expensive part runs outside the lock.
        seen = [(looks_random(t), n, _templates(n)) for t in texts for n in (_normalise(t),)]
        with self._lock:
            hist = self._history.get(principal)
            if hist is None:
                hist = self._history[principal] = _History(c.memory)
            hist.expire(now, c.window_s)
            for rnd, norm, keys in seen:
                hist.add(now, rnd, norm, keys)
            found: list[tuple[str, str, str, dict[str, Any]]] = []
            total = len(hist.items)
            if hist.randoms >= c.random_texts and hist.randoms * 2 >= total:
                found.append(("near-random-inputs", "high",
                              f"{hist.randoms} of {total} recent texts look random "
                              "(the query pattern of output-space extraction)",
                              {"random_texts": hist.randoms, "texts": total}))
            if hist.dupes:
                norm, count = hist.dupes.most_common(1)[0]
                if count >= c.duplicates:
                    found.append(("near-duplicates", "medium",
                                  f"one normalised text sent {count} times recently",
                                  {"repeats": count}))
            widest = max((len(v) for k, v in hist.probes.items() if k != "<one word>"), default=0)
            single = len(hist.probes.get("<one word>", ()))
            if widest >= c.probes or single >= c.probes * 8:
                found.append(("systematic-probing", "high",
                              f"{max(widest, single)} texts vary one word of a common template",
                              {"variants": widest, "single_words": single}))
            principals = self._hosts.setdefault(host, {})
            principals[principal] = now
            for p in [p for p, t in principals.items() if t <= now - c.window_s]:
                del principals[p]
            if len(principals) >= c.principals_per_host:
                found.append(("many-principals-one-host", "high",
                              f"{len(principals)} principals called from one host recently",
                              {"principals": len(principals)}))
            alerts = []
            for kind, severity, message, details in found:
                subject = host if kind == "many-principals-one-host" else principal
                if self._raised.get((kind, subject), -math.inf) > now - c.window_s:
                    continue
                self._raised[(kind, subject)] = now
                if severity == "high":
                    key = f"h:{host}" if kind == "many-principals-one-host" else f"p:{principal}"
                    self._suspended[key] = now + c.suspend_s
                    details = {**details, "suspended_s": int(c.suspend_s)}
                alerts.append(GatewayAlert(kind, severity, principal, host, message, now, details))
            return alerts
