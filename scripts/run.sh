#!/usr/bin/env bash
# Run the server on http://127.0.0.1:8000 with a live demo fleet replaying a real drive.
# Set DEMO_DRIVERS=0 for no demo fleet; TRACKER_ADMIN_TOKEN to choose the admin token.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# tracker's own tokens never start with '-' (which `--admin-token` below would take for an option).
export TRACKER_ADMIN_TOKEN=${TRACKER_ADMIN_TOKEN:-$(.venv/bin/python -c 'from tracker.core.tokens import new_token; print(new_token())')}
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
.venv/bin/tracker migrate
.venv/bin/tracker serve --host "$HOST" --port "$PORT" --workers "${WORKERS:-1}" &
server=$!
trap 'kill $server ${demo:-} 2>/dev/null; wait' EXIT INT TERM
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
echo
echo "  tracker is running:   http://127.0.0.1:$PORT/"
echo "  admin token:          $TRACKER_ADMIN_TOKEN   (paste it into the map's sign-in)"
echo "  plan a day:           http://127.0.0.1:$PORT/plan"
echo "  devices, keys, routes: http://127.0.0.1:$PORT/manage"
echo "  API reference:        http://127.0.0.1:$PORT/docs"
echo
if [ "${DEMO_DRIVERS:-5}" != 0 ] && .venv/bin/tracker simulate --help >/dev/null 2>&1; then
    .venv/bin/tracker simulate --url "http://127.0.0.1:$PORT" --admin-token="$TRACKER_ADMIN_TOKEN" \
        --drivers "${DEMO_DRIVERS:-5}" --speed "${DEMO_SPEED:-2}" --routes &
    demo=$!
fi
wait $server
