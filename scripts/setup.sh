#!/usr/bin/env bash
# Prepare a machine to run or test tracker: virtualenv, Python and JS packages, and the
# services (PostgreSQL with PostGIS, Redis, Chromium for browser tests). Safe to re-run.
# Usage: scripts/setup.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
is_root() { [ "$(id -u)" = 0 ]; }
apt_updated=0
apt_install() {
    if ! is_root; then
        log "missing packages: $* (run as root, or install them yourself)"
        return 1
    fi
    if [ "$apt_updated" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# --- Python -------------------------------------------------------------------------------
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    "$PYTHON" -m venv .venv
fi
extras=""
[ "$want_test" = 1 ] && extras="[dev]"
stamp=".venv/.installed$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    log "installing tracker$extras into .venv"
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e ".$extras"
    touch "$stamp"
fi

# --- Leaflet and other browser assets, from npm -------------------------------------------
if [ -f web/package.json ]; then
    if ! command -v npm >/dev/null; then apt_install nodejs npm; fi
    if [ ! -d web/node_modules ] || [ web/package-lock.json -nt web/node_modules ]; then
        log "installing web assets (npm ci)"
        (cd web && npm ci --silent --no-audit --no-fund)
        touch web/node_modules
    fi
fi

# --- PostgreSQL with PostGIS --------------------------------------------------------------
if [ -z "${DATABASE_URL:-}" ]; then
    if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
        if command -v pg_ctlcluster >/dev/null && is_root; then
            log "starting PostgreSQL"
            pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
        fi
    fi
    pg_major=$(psql -h 127.0.0.1 -U postgres -d postgres -Atc "SHOW server_version_num" 2>/dev/null | cut -c1-2 || true)
    if [ -n "$pg_major" ]; then
        has_postgis=$(psql -h 127.0.0.1 -U postgres -d postgres -Atc \
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'postgis'")
        if [ "$has_postgis" = 0 ]; then
            log "installing PostGIS for PostgreSQL $pg_major"
            apt_install "postgresql-$pg_major-postgis-3"
        fi
        # pgRouting: the planner's road network (travel-time matrices and road paths).
        has_pgrouting=$(psql -h 127.0.0.1 -U postgres -d postgres -Atc \
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'pgrouting'")
        if [ "$has_pgrouting" = 0 ]; then
            log "installing pgRouting for PostgreSQL $pg_major"
            apt_install "postgresql-$pg_major-pgrouting"
        fi
    else
        log "PostgreSQL is not reachable on 127.0.0.1:5432; set DATABASE_URL to a server with PostGIS"
        exit 1
    fi
fi

# --- Redis (live fan-out between instances; the tests use it) ----------------------------
# The outage test starts and kills a private redis-server, so the binary is needed too.
if [ "$want_test" = 1 ] && ! command -v redis-server >/dev/null; then
    log "installing Redis"
    apt_install redis-server
fi
# nginx: tests/deploy runs deploy/nginx.conf (the compose file's proxy) in front of two
# servers, with its own ports and paths; a service the package may start is not used.
if [ "$want_test" = 1 ] && ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
    log "installing nginx"
    apt_install nginx
fi
redis_up() { (exec 3<>/dev/tcp/127.0.0.1/6379 && printf 'PING\r\n' >&3 && head -c 5 <&3 | grep -q PONG) 2>/dev/null; }
if [ "$want_test" = 1 ] && [ -z "${TEST_REDIS_URL:-}" ] && ! redis_up; then
    log "starting Redis"
    mkdir -p /tmp/tracker-redis
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        --dir /tmp/tracker-redis --logfile /tmp/tracker-redis/redis.log
    for _ in $(seq 50); do redis_up && break; sleep 0.1; done
fi

# --- PostgreSQL server binaries for the fault tests ---------------------------------------
# tests/faults crashes a private cluster of its own (initdb, pg_ctl), never the shared one.
if [ "$want_test" = 1 ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    log "installing PostgreSQL server binaries with PostGIS (fault tests)"
    apt_install postgresql postgresql-postgis postgresql-pgrouting
fi

# --- Chromium for the browser tests -------------------------------------------------------
# wrk: the benchmarks' load generator (bench/ingest_bench.py, bench/fleet_bench.py), run
# by tests/deploy/test_fleet_bench.py.
if [ "$want_test" = 1 ] && ! command -v wrk >/dev/null; then
    log "installing wrk"
    apt_install wrk
fi
if [ "$want_test" = 1 ] && [ ! -x /usr/bin/chromium ]; then
    log "installing Chromium"
    apt_install chromium
fi
log "ready"
