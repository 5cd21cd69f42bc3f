"""Key orders: the statement a security officer signs to rotate or rewrap the KEK remotely.

A ``key-order`` statement (``order``, ``officer``, ``issued_at``, ``nonce``) is signed
by the officer's own identity; the server (``strongroom.server.routes.keyring``)
checks it with :func:`check_key_order` before acting, and the audit log keeps it::

    env = statements.sign("key-order", key_order("rotate", "olivia", now=time.time()), key)
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from strongroom.errors import InvalidInput

__all__ = ["MAX_AGE_S", "ORDERS", "check_key_order", "key_order"]

#: How old a key order may be when it arrives (clock skew included).
MAX_AGE_S = 300
#: What an order may ask for.
ORDERS = ("rotate", "rewrap")


def key_order(order: str, officer: str, *, now: float) -> dict[str, Any]:
    """The statement a security officer signs to order ``rotate`` or ``rewrap``."""
    if order not in ORDERS:
        raise InvalidInput(f"unknown key order {order!r}", obj="key order",
                           remedy=f"order one of {', '.join(ORDERS)}")
    return {"order": order, "officer": officer, "issued_at": int(now),
            "nonce": secrets.token_hex(16)}


def check_key_order(statement: Mapping[str, Any], order: str, *, now: float) -> None:
    """Refuse a verified statement that is not a fresh order for ``order``."""
    if statement.get("_type") != "strongroom.access.key-order/v1" \
            or statement.get("order") != order:
        raise InvalidInput(f"the signed order is not `keys {order}`", obj=f"keys {order}",
                           remedy=f"sign a key order for {order!r}")
    try:
        age = now - float(statement.get("issued_at", 0))
    except (TypeError, ValueError):
        age = float("inf")
    if not -MAX_AGE_S <= age <= MAX_AGE_S:
        raise InvalidInput("the key order is stale or from the future", obj=f"keys {order}",
                           remedy=f"sign a fresh order (they are valid {MAX_AGE_S} s)")
