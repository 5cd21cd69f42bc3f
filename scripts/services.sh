#!/usr/bin/env bash
# Start or stop the throw-away services the test suite needs, on loopback only:
# a PostgreSQL cluster and a SeaweedFS S3 server, both under $SR_SERVICES_DIR.
#   scripts/services.sh start   -> prints `export ...` lines for the tests
#   scripts/services.sh stop
set -euo pipefail
DIR=${SR_SERVICES_DIR:-/tmp/strongroom-test-services}
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# Free loopback ports unless given, so a second checkout's tests never collide.
PG_PORT=${SR_PG_PORT:-$(free_port)}
S3_PORT=${SR_S3_PORT:-$(free_port)}
VENV=${VENV:-.venv}
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)

start_pg() {
  mkdir -p "$DIR/pg"
  chmod 755 "$DIR"  # the postgres user must reach its directory (mktemp makes 0700)
  chown postgres:postgres "$DIR/pg"
  if [ ! -f "$DIR/pg/data/PG_VERSION" ]; then
    su postgres -c "$PG_BIN/initdb -D $DIR/pg/data -U postgres -A trust --no-sync" >"$DIR/pg-initdb.log" 2>&1
  fi
  if ! su postgres -c "$PG_BIN/pg_ctl -D $DIR/pg/data status" >/dev/null 2>&1; then
    su postgres -c "$PG_BIN/pg_ctl -D $DIR/pg/data -o '-p $PG_PORT -k $DIR/pg -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=on' -l $DIR/pg/server.log -w start" >/dev/null
  fi
}

start_s3() {
  mkdir -p "$DIR/s3/data"
  cat >"$DIR/s3/s3.json" <<JSON
{"identities":[{"name":"admin","credentials":[{"accessKey":"strongroom-test","secretKey":"strongroom-test-secret"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
  if [ -f "$DIR/s3/pid" ] && kill -0 "$(cat "$DIR/s3/pid")" 2>/dev/null; then return; fi
  # exec: the background job *is* weed, so $! is its pid and no shell holds our stdout.
  (cd "$DIR/s3" && exec env GOMEMLIMIT=256MiB TMPDIR="$DIR/s3" "$VENV/bin/weed" mini -dir="$DIR/s3/data" \
      -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.config="$DIR/s3/s3.json" -s3.port=$S3_PORT \
      -s3.port.grpc=$(free_port) -master.port=$(free_port) -master.port.grpc=$(free_port) \
      -volume.port=$(free_port) -volume.port.grpc=$(free_port) -filer.port=$(free_port) \
      -filer.port.grpc=$(free_port) \
      -webdav=false -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false \
      -s3.cacheCapacityMB=0 -s3.readerCacheSizeMB=64) >"$DIR/s3/weed.log" 2>&1 </dev/null &
  echo $! >"$DIR/s3/pid"
  for _ in $(seq 1 100); do
    if curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/"; then return; fi
    sleep 0.2
  done
  echo "SeaweedFS did not start; see $DIR/s3/weed.log" >&2
  exit 1
}

stop_all() {
  if [ -f "$DIR/s3/pid" ]; then
    pid=$(cat "$DIR/s3/pid")
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 1 25); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$DIR/s3/pid"
  fi
  if [ -n "$PG_BIN" ] && [ -f "$DIR/pg/data/PG_VERSION" ]; then
    su postgres -c "$PG_BIN/pg_ctl -D $DIR/pg/data -m fast stop" >/dev/null 2>&1 || true
  fi
  rm -rf "$DIR"
}

case "${1:-}" in
  start)
    VENV=$(cd "$VENV" && pwd)
    start_pg
    start_s3
    echo "export STRONGROOM_TEST_PG_URL=postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/postgres"
    echo "export STRONGROOM_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT"
    echo "export STRONGROOM_TEST_S3_ACCESS_KEY=strongroom-test"
    echo "export STRONGROOM_TEST_S3_SECRET_KEY=strongroom-test-secret"
    ;;
  stop) stop_all ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
