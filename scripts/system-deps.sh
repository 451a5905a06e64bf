#!/usr/bin/env bash
# Checks (and, as root on Debian, installs) the system services the tests use:
# redis-server, PostgreSQL 15, Chromium and faketime. Fails with instructions instead of skipping.
set -euo pipefail
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v chromium >/dev/null || missing+=(chromium)
command -v openssl >/dev/null || missing+=(openssl)
command -v faketime >/dev/null || missing+=(faketime)   # tests/test_year_ahead.py, make test-year-ahead
command -v pg_ctlcluster >/dev/null || missing+=(postgresql)
# `make bench` also drives the HTTP server with wrk.
[ "${1:-}" = "--bench" ] && { command -v wrk >/dev/null || missing+=(wrk); }
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "Installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "Missing system packages: ${missing[*]}. Install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v pg_ctlcluster >/dev/null; then
    echo "Starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
fi
# The tests log in as user postgres over TCP without a password (trust auth, as on CI's
# machines). A stock Debian cluster asks for one: as root, trust local TCP connections.
if [ "$(id -u)" = 0 ] && pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null \
   && ! psql -h 127.0.0.1 -U postgres -d postgres -w -tAc 'select 1' >/dev/null 2>&1; then
  hba=$(su postgres -c "psql -tAc 'show hba_file'" 2>/dev/null || true)
  if [ -n "$hba" ] && [ -f "$hba" ]; then
    echo "Allowing trust auth for user postgres on 127.0.0.1 and ::1 in $hba (test machine)"
    sed -i '1i host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust' "$hba"
    su postgres -c "psql -tAc 'select pg_reload_conf()'" >/dev/null
  fi
fi
pg_isready -q -h 127.0.0.1 -p 5432 || {
  echo "PostgreSQL is not accepting connections on 127.0.0.1:5432 (trust auth for user postgres)." >&2
  echo "Start it with: pg_ctlcluster 15 main start" >&2
  exit 1
}
psql -h 127.0.0.1 -U postgres -d postgres -w -tAc 'select 1' >/dev/null 2>&1 || {
  echo "PostgreSQL refuses user postgres on 127.0.0.1 without a password; the tests need trust auth." >&2
  echo "Add 'host all postgres 127.0.0.1/32 trust' at the top of pg_hba.conf and reload PostgreSQL." >&2
  exit 1
}
