#!/usr/bin/env bash
# A throw-away PostgreSQL server on 127.0.0.1 for the store tests.
#   bash scripts/services/postgres.sh start   # prints `export NEARMETAL_TEST_POSTGRES_URL=...` on stdout
#   bash scripts/services/postgres.sh stop
# NEARMETAL_PG_PORT picks the port (default 55432); the data directory lives in /tmp and is removed on stop.
set -euo pipefail
port="${NEARMETAL_PG_PORT:-55432}"
data="/tmp/nearmetal-pg-${port}"
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [[ -z "$pgbin" ]]; then
  echo "postgres.sh: PostgreSQL is not installed (apt-get install -y postgresql)" >&2
  exit 1
fi
as_postgres() { if [[ "$(id -u)" == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case "${1:-}" in
  start)
    if [[ ! -s "$data/PG_VERSION" ]]; then
      rm -rf "$data"; mkdir -p "$data"
      [[ "$(id -u)" == 0 ]] && chown postgres:postgres "$data"
      as_postgres "$pgbin/initdb" -D "$data" -A trust -U postgres >/dev/null
    fi
    if ! as_postgres "$pgbin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
      as_postgres "$pgbin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
        -o "-p $port -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >&2
    fi
    as_postgres "$pgbin/psql" -h 127.0.0.1 -p "$port" -U postgres -tAc \
      "select 1 from pg_database where datname='nearmetal_test'" | grep -q 1 \
      || as_postgres "$pgbin/createdb" -h 127.0.0.1 -p "$port" -U postgres nearmetal_test
    echo "export NEARMETAL_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:${port}/nearmetal_test"
    ;;
  stop)
    if [[ -d "$data" ]]; then
      as_postgres "$pgbin/pg_ctl" -D "$data" -m fast -w stop >&2 || true
      rm -rf "$data"
    fi
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
