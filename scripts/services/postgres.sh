#!/usr/bin/env bash
# A throw-away PostgreSQL server on 127.0.0.1 for the store tests.
#   bash scripts/services/postgres.sh start   # prints `export NEARMETAL_TEST_POSTGRES_URL=...` on stdout
#   bash scripts/services/postgres.sh stop
# NEARMETAL_PG_PORT picks the port (default 55432).
#
# The machine is shared (issue 26, case 6): no local user other than root may use the server.
# - Authentication: the tests log in over 127.0.0.1 as the role nearmetal_test (CREATEDB, not a superuser:
#   no COPY … TO PROGRAM, no server files) with a random password (scram-sha-256) that only the printed URL
#   holds; the superuser postgres logs in only by peer authentication on the Unix socket (the OS account
#   postgres, or root through runuser). Every other connection is rejected: no `trust` anywhere.
# - Paths: everything lives in an instance directory made by mktemp under /run/nearmetal-services (created
#   here: root-owned, 0711, checked to be a real directory not writable by others). The instance directory
#   is root:postgres 0750, so other users cannot enter it; the data directory in it is postgres 0700, the
#   socket directory root:postgres 0770. Its path is kept in a root-only state file; stop removes only that
#   checked path, never a name in /tmp someone else could have made first.
set -euo pipefail
umask 077
port="${NEARMETAL_PG_PORT:-55432}"
[[ "$port" =~ ^[0-9]{2,5}$ ]] || { echo "postgres.sh: NEARMETAL_PG_PORT must be a port number" >&2; exit 2; }
base=/run/nearmetal-services
state="$base/postgres-$port.state"
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [[ -z "$pgbin" ]]; then
  echo "postgres.sh: PostgreSQL is not installed (apt-get install -y postgresql)" >&2
  exit 1
fi
if [[ "$(id -u)" != 0 ]]; then
  echo "postgres.sh: run as root (the server runs as the postgres account, its files in /run)" >&2
  exit 1
fi
as_postgres() { runuser -u postgres -- "$@"; }

# a directory root made and only root can change: a real directory (not a link), owned by root, not
# writable by group or others
check_root_dir() {
  local dir=$1
  if [[ -L "$dir" || ! -d "$dir" ]]; then
    echo "postgres.sh: $dir is not a directory (a symbolic link?); refusing to use it" >&2
    return 1
  fi
  local owner mode
  owner=$(stat -c %u "$dir")
  mode=$(stat -c %a "$dir")
  if [[ "$owner" != 0 || $((8#$mode & 8#022)) != 0 ]]; then
    echo "postgres.sh: $dir is owned by uid $owner with mode $mode; it must be root's and not writable by others" >&2
    return 1
  fi
}

# the instance directory recorded in the state file, when it is one this script made
instance() {
  [[ -f "$state" && ! -L "$state" && "$(stat -c %u "$state")" == 0 ]] || return 1
  local inst
  inst=$(head -n 1 "$state")
  [[ "$inst" =~ ^$base/postgres-$port\.[A-Za-z0-9]+$ && -d "$inst" && ! -L "$inst" ]] || return 1
  [[ "$(stat -c %u "$inst")" == 0 ]] || return 1
  echo "$inst"
}

sql() { as_postgres "$pgbin/psql" -h "$1/sock" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -tAc "$2"; }

case "${1:-}" in
  start)
    if [[ ! -e "$base" ]]; then
      mkdir -m 0711 "$base"
    fi
    check_root_dir "$base"
    if ! inst=$(instance) || [[ ! -s "$inst/data/PG_VERSION" ]]; then
      inst=$(mktemp -d "$base/postgres-$port.XXXXXXXX")
      chown root:postgres "$inst"
      chmod 0750 "$inst"
      install -d -o postgres -g postgres -m 0700 "$inst/data"
      install -d -o root -g postgres -m 0770 "$inst/sock"
      as_postgres "$pgbin/initdb" -D "$inst/data" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
        >/dev/null
      # only these: the superuser by peer on the socket, the test role by password over 127.0.0.1
      cat >"$inst/data/pg_hba.conf" <<EOF
local   all   postgres                        peer
host    all   nearmetal_test   127.0.0.1/32   scram-sha-256
local   all   all                             reject
host    all   all              0.0.0.0/0      reject
host    all   all              ::/0           reject
EOF
      chown postgres:postgres "$inst/data/pg_hba.conf"
      chmod 0600 "$inst/data/pg_hba.conf"
      head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$inst/password"
      echo "$inst" >"$state"
    fi
    if ! as_postgres "$pgbin/pg_ctl" -D "$inst/data" status >/dev/null 2>&1; then
      as_postgres "$pgbin/pg_ctl" -D "$inst/data" -l "$inst/data/server.log" -w -t 60 \
        -o "-p $port -k $inst/sock -c unix_socket_permissions=0770 -c listen_addresses=127.0.0.1 \
-c password_encryption=scram-sha-256 -c fsync=off -c max_connections=200" start >&2
    fi
    password=$(cat "$inst/password")
    if [[ -z "$(sql "$inst" "select 1 from pg_roles where rolname = 'nearmetal_test'")" ]]; then
      sql "$inst" "create role nearmetal_test login createdb nosuperuser password '$password'" >/dev/null
    fi
    if [[ -z "$(sql "$inst" "select 1 from pg_database where datname = 'nearmetal_test'")" ]]; then
      sql "$inst" "create database nearmetal_test owner nearmetal_test" >/dev/null
    fi
    echo "export NEARMETAL_TEST_POSTGRES_URL=postgresql+psycopg://nearmetal_test:${password}@127.0.0.1:${port}/nearmetal_test"
    ;;
  stop)
    if inst=$(instance); then
      if [[ -d "$inst/data" && ! -L "$inst/data" ]]; then
        as_postgres "$pgbin/pg_ctl" -D "$inst/data" -m fast -w stop >&2 || true
      fi
      rm -rf --one-file-system -- "$inst"
      rm -f -- "$state"
    fi
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
