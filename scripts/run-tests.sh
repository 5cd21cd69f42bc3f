#!/usr/bin/env bash
# Start the throw-away services, run lint, type checks and the suite against
# SQLite and PostgreSQL, and stop what was started, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
export SR_SERVICES_DIR=${SR_SERVICES_DIR:-$(mktemp -d /tmp/strongroom-services.XXXXXX)}
trap 'scripts/services.sh stop' EXIT
# An assignment, not eval "$(...)", so that a failed start stops the run (set -e).
service_env=$(scripts/services.sh start)
eval "$service_env"
export STRONGROOM_TEST_REQUIRE_SERVICES=1
export STRONGROOM_TEST_ARTIFACTS=${STRONGROOM_TEST_ARTIFACTS:-$PWD/test-artifacts}
.venv/bin/ruff check src tests bench
.venv/bin/mypy
# The layers of docs/architecture.md, contracts in pyproject.toml [tool.importlinter].
.venv/bin/lint-imports
# Cluster tests (several serve hosts behind HAProxy) run in `make test-cluster`; a later
# -m in "$@" (make test-slow, make test-cluster) replaces this selection.
# Two workers by default (the CI machine's cores): most of the suite waits on processes it
# started, so the wall time falls by about a quarter. A test file runs whole on one worker
# (--dist loadfile: its module fixtures are built once). STRONGROOM_TEST_WORKERS=0: one process.
.venv/bin/pytest -n "${STRONGROOM_TEST_WORKERS:-2}" --dist loadfile -m "not slow and not cluster" -p no:cacheprovider --durations=25 "$@"
