#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests and the benchmark: a temporary directory, a
# loopback port, run as the unprivileged `postgres` user (PostgreSQL refuses to run as root),
# fsync off (nothing in it must survive a crash). It speaks TLS too, with a certificate for
# localhost and 127.0.0.1 (DIR/server.crt, `SHOW ssl_cert_file`) from a throwaway certificate
# authority (DIR/ca.crt; its key deleted once it signed): the server's default `sslmode=prefer`
# takes it, and a test verifies it (`sslrootcert=DIR/ca.crt`).
#   scripts/pg.sh start DIR PORT   create DIR, initdb, start on 127.0.0.1:PORT; prints the URL
#                                  of the `postgres` database (user postgres)
#   scripts/pg.sh stop DIR         stop the cluster and delete DIR
#   scripts/pg.sh reap PID DIR     wait until process PID has exited, then stop DIR (a watcher,
#                                  so that a cluster never outlives the test run that started it)
#   scripts/pg.sh run CMD...       a cluster for the duration of CMD, which finds its URL in
#                                  TW_TEST_PG_URL; stopped whatever CMD's outcome
# Needs Debian's `postgresql` package (scripts/setup.sh --postgres installs it).
set -euo pipefail

bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$d" ] || [ ! -x "$d/initdb" ]; then
    echo "pg.sh: PostgreSQL is not installed (scripts/setup.sh --postgres, or apt-get install postgresql)" >&2
    exit 1
  fi
  printf '%s' "$d"
}

# Runs a PostgreSQL program as `postgres` when we are root, as ourselves otherwise.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
  local dir=$1 port=$2 bin pw
  bin=$(bindir)
  mkdir -p "$dir"
  pw=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  printf '%s\n' "$pw" >"$dir/pw"
  chmod 600 "$dir/pw"
  if [ "$(id -u)" = 0 ]; then chown -R postgres: "$dir"; fi
  as_pg "$bin/initdb" -D "$dir/data" -U postgres -A scram-sha-256 --auth-local=trust \
    --pwfile="$dir/pw" --no-sync -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; exit 1; }
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
    >"$dir/server.ext"
  { openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
      -subj "/CN=tokenwarden test CA" -keyout "$dir/ca.key" -out "$dir/ca.crt" &&
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
      -keyout "$dir/server.key" -out "$dir/server.csr" &&
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
      -set_serial 1 -days 2 -extfile "$dir/server.ext" -out "$dir/server.crt"; } \
    >"$dir/openssl.log" 2>&1 || { cat "$dir/openssl.log" >&2; exit 1; }
  rm -f "$dir/ca.key" "$dir/server.csr"
  chmod 600 "$dir/server.key"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$dir/server.key" "$dir/server.crt"; fi
  as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 30 -o \
    "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 -c ssl=on -c ssl_cert_file=$dir/server.crt -c ssl_key_file=$dir/server.key" \
    start >/dev/null || { cat "$dir/log" >&2; exit 1; }
  printf 'postgres://postgres:%s@127.0.0.1:%s/postgres\n' "$pw" "$port"
}

stop() {
  local dir=$1 bin
  bin=$(bindir)
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_pg "$bin/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
}

free_port() {
  # A port nothing listens on, from a range the other test servers do not use.
  local p
  for _ in $(seq 1 50); do
    p=$((25432 + RANDOM % 2000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then printf '%s' "$p"; return; fi
  done
  echo "pg.sh: no free port" >&2
  exit 1
}

case "${1:-}" in
  start) [ $# -eq 3 ] || { echo "usage: pg.sh start DIR PORT" >&2; exit 2; }; start "$2" "$3" ;;
  stop) [ $# -eq 2 ] || { echo "usage: pg.sh stop DIR" >&2; exit 2; }; stop "$2" ;;
  reap)
    [ $# -eq 3 ] || { echo "usage: pg.sh reap PID DIR" >&2; exit 2; }
    while kill -0 "$2" 2>/dev/null; do sleep 0.5; done
    stop "$3"
    ;;
  run)
    shift
    [ $# -ge 1 ] || { echo "usage: pg.sh run CMD..." >&2; exit 2; }
    dir=$(mktemp -d "${TMPDIR:-/tmp}/tw-pg.XXXXXX")
    trap 'stop "$dir"' EXIT INT TERM
    url=""
    for _ in 1 2 3; do
      port=$(free_port)
      if url=$(start "$dir" "$port"); then break; fi
      stop "$dir"; mkdir -p "$dir"; url=""
    done
    [ -n "$url" ] || { echo "pg.sh: could not start PostgreSQL" >&2; exit 1; }
    echo "pg.sh: PostgreSQL on 127.0.0.1:$port ($dir)" >&2
    TW_TEST_PG_URL=$url "$@"
    ;;
  *) echo "usage: pg.sh start DIR PORT | stop DIR | reap PID DIR | run CMD..." >&2; exit 2 ;;
esac
