#!/bin/sh
# Container start-up: apply the migrations (retrying while the database comes up), then
# become `tracker serve` (exec, so SIGTERM from `docker stop` reaches the server itself and
# it drains before exiting).
#
# Environment (besides the server's own settings, see the README):
#   DB_WAIT_S  how long to keep retrying `tracker migrate` (default 60)
#   MIGRATE    0 skips the migrations (default 1; they take an advisory lock, so several
#              instances starting together are safe)
#   HOST, PORT, WORKERS   where and how `tracker serve` listens (0.0.0.0, 8000, 2)
# Arguments starting with "-" are added to `tracker serve`; any other command runs instead
# (`docker run IMAGE tracker device add "Van 7"`), without waiting for anything.
set -eu

case ${1:-} in
    '' | -*) ;;
    *) exec "$@" ;;
esac

wait_s=${DB_WAIT_S:-60}
case $wait_s in
    '' | *[!0-9]*)
        echo "entrypoint: DB_WAIT_S=$wait_s: expected whole seconds" >&2
        exit 2
        ;;
esac

if [ "${MIGRATE:-1}" != 0 ]; then
    deadline=$(($(date +%s) + wait_s))
    while :; do
        status=0
        out=$(tracker migrate 2>&1) || status=$?
        [ "$status" = 0 ] && break
        last=$(printf '%s\n' "$out" | sed '/^[[:space:]]*$/d' | tail -n 1)
        # 2 is a configuration error (the line says which): waiting would not fix it.
        if [ "$status" = 2 ]; then
            echo "entrypoint: $last" >&2
            exit 2
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "entrypoint: database not ready after ${wait_s}s (DB_WAIT_S): $last" >&2
            exit 1
        fi
        sleep 1
    done
    printf '%s\n' "$out"
fi

exec tracker serve --host "${HOST:-0.0.0.0}" --port "${PORT:-8000}" \
    --workers "${WORKERS:-2}" "$@"
