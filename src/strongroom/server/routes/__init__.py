"""The HTTP API's routes, one module per route group; :func:`strongroom.server.app.create_app` includes them.

Each module exposes ``build_router(ctx, keys)`` (``keys``: the app's
:class:`~strongroom.server.auth.PrincipalKeys`) that returns its ``APIRouter``
built over the :class:`~strongroom.server.context.ServerContext`:

- :mod:`.keys`: key release, the hot path (``build_router(ctx)`` also returns its direct route)
- :mod:`.system`: seal status, unseal, seal, public keys, whoami
- :mod:`.directory`: people, compartments, officer statements
- :mod:`.weights`: import, manifests, ciphertext blobs, documents
- :mod:`.access`: requests, approvals, denials, Grants, revocations, break-glass
- :mod:`.audit`: the audit log, checkpoints, proofs, alerts

Routes hold no SQL and no policy: they check who signed, call the domain
packages (:mod:`strongroom.access`, :mod:`strongroom.vault`, ...) and shape the answer.
A new route group is one more module here and one ``include_router`` line in ``create_app``.
"""
