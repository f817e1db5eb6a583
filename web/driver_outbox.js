/*
 * The driver's stop actions, kept like the pings: in IndexedDB first, removed only once the
 * server's answer covers them, so an action taken offline (or in a tunnel, or while the
 * server restarts) is sent later and never lost.
 *
 * An action is {kind: "status"|"report", routeId, stopId, body, due, attention?}:
 *   - "status" is PATCH /api/v1/routes/{route}/stops/{stop} (arrived);
 *   - "report" is POST .../report (completed or failed, with proof and reasons; the body's
 *     client_id lets the server store a re-sent report once).
 * `due` (ms since the epoch) holds a completion or failure back for the undo window: until
 * then the driver can take it back and nothing has left the phone.
 * Answers: 200 done; 401/403 pause (sign in again); 422 (far from the stop without a
 * reason, missing proof, wrong PIN) keeps the action and asks the driver ("attention");
 * other 4xx drop it with a note (the stop changed meanwhile: 409); anything else, and no
 * answer at all, retries with backoff.
 */
(() => {
  "use strict";

  const STORE = "actions";
  const MIN_BACKOFF_MS = 1000;
  const MAX_BACKOFF_MS = 60000;
  const ATTENTION = new Set([422]);
  const DROP = new Set([400, 404, 409, 413, 415]);
  const AUTH = new Set([401, 403]);

  function request(req) {
    return new Promise((resolve, reject) => {
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
  }

  function outbox(db, hooks) {
    const state = { sending: false, again: false, timer: null, backoffMs: 0, paused: false };

    function run(mode, work) {
      return new Promise((resolve, reject) => {
        const tx = db.transaction(STORE, mode, { durability: "strict" });
        let result;
        Promise.resolve(work(tx.objectStore(STORE))).then((value) => { result = value; });
        tx.oncomplete = () => resolve(result);
        tx.onabort = () => reject(tx.error || new Error("transaction aborted"));
        tx.onerror = () => reject(tx.error);
      });
    }

    const api = {
      all() {
        return run("readonly", (store) => request(store.getAll()));
      },
      async add(action) {
        const key = await run("readwrite", (store) => request(store.add(action)));
        hooks.onChange();
        schedule(0);
        return key;
      },
      async remove(key) {
        await run("readwrite", (store) => { store.delete(key); });
        hooks.onChange();
      },
      async replace(key, action) {
        await run("readwrite", (store) => { store.put({ ...action, seq: key }); });
        hooks.onChange();
        schedule(0);
      },
      clear() {
        return run("readwrite", (store) => { store.clear(); });
      },
      resume() {
        state.paused = false;
        state.backoffMs = 0;
        schedule(0);
      },
      flush,
    };

    function schedule(delay) {
      clearTimeout(state.timer);
      state.timer = setTimeout(() => { state.timer = null; flush(); }, Math.max(0, delay));
    }

    function backoff(retryAfter) {
      const seconds = Number.parseFloat(retryAfter || "");
      if (Number.isFinite(seconds) && seconds >= 0) {
        state.backoffMs = Math.min(MAX_BACKOFF_MS, Math.max(MIN_BACKOFF_MS, seconds * 1000));
      } else {
        state.backoffMs = Math.min(MAX_BACKOFF_MS, Math.max(MIN_BACKOFF_MS, state.backoffMs * 2));
      }
      schedule(Math.round(state.backoffMs * (0.8 + Math.random() * 0.4)));
    }

    async function send(action) {
      const base = `/api/v1/routes/${action.routeId}/stops/${action.stopId}`;
      try {
        return await fetch(action.kind === "report" ? `${base}/report` : base, {
          method: action.kind === "report" ? "POST" : "PATCH",
          headers: hooks.headers({ "Content-Type": "application/json" }),
          body: JSON.stringify(action.body),
          cache: "no-store",
          credentials: "omit",
        });
      } catch (err) {
        return null;
      }
    }

    async function answer(res) {
      try {
        return await res.json();
      } catch (err) {
        return { message: `HTTP ${res.status}` };
      }
    }

    async function flush() {
      if (state.sending) {
        state.again = true;
        return;
      }
      if (state.paused || !hooks.ready()) return;
      state.sending = true;
      state.again = false;
      try {
        const now = Date.now();
        const actions = (await api.all()).sort((a, b) => a.seq - b.seq);
        let nextDue = null;
        // One stop's actions go in order; an action waiting for the driver holds back the
        // later ones of its stop (not those of other stops).
        const held = new Set();
        for (const action of actions) {
          if (action.attention || held.has(action.stopId)) {
            held.add(action.stopId);
            continue;
          }
          if (action.due > now) {
            held.add(action.stopId);
            nextDue = nextDue === null ? action.due : Math.min(nextDue, action.due);
            continue;
          }
          const res = await send(action);
          if (res === null || !(res.ok || ATTENTION.has(res.status) || DROP.has(res.status) || AUTH.has(res.status))) {
            backoff(res ? res.headers.get("Retry-After") : null);
            return;
          }
          state.backoffMs = 0;
          if (res.ok) {
            const route = await res.json().catch(() => null);
            await api.remove(action.seq);
            hooks.onDone(action, route);
          } else if (AUTH.has(res.status)) {
            state.paused = true;
            hooks.onAuth((await answer(res)).message || `HTTP ${res.status}`);
            return;
          } else if (ATTENTION.has(res.status)) {
            const body = await answer(res);
            await api.replace(action.seq, { ...action, attention: { error: body.error, message: body.message } });
            held.add(action.stopId);
            hooks.onAttention(action, body);
          } else {
            const body = await answer(res);
            await api.remove(action.seq);
            hooks.onRefused(action, body.message || `HTTP ${res.status}`, res.status);
          }
        }
        if (nextDue !== null) schedule(nextDue - Date.now() + 20);
      } catch (err) {
        hooks.onError(err);
        backoff(null);
      } finally {
        state.sending = false;
        if (state.again) schedule(0);
      }
    }

    return api;
  }

  window.trackerDriver = window.trackerDriver || {};
  window.trackerDriver.outbox = outbox;
  window.trackerDriver.OUTBOX_STORE = STORE;
})();
