/*
 * The driver's page: share the phone's location, never lose a ping, work the stop list.
 *
 * Pings go into an IndexedDB queue first and leave it only when a 202 from
 * POST /api/v1/positions covers them (the server answers 202 only after the commit).
 * Sending is a loop over the oldest queued pings, in batches:
 *   - 202: the batch is done; pings the server rejected inside it are reported in a note.
 *   - 400/413/415/422: the pings themselves are refused and would be forever; they are
 *     dropped with a visible note.
 *   - 401/403: the token is refused (revoked, device disabled); pings stay queued and the
 *     driver is asked to sign in again.
 *   - network errors, 429, 5xx and anything else: pings stay; retry with exponential
 *     backoff (honouring Retry-After), and at once when the browser comes back online.
 * A retried batch whose first answer was lost is harmless: the server stores a ping once.
 *
 * Stop actions (arrived, delivered with proof, failed with a reason) go the same way through
 * their own queue (driver_outbox.js); completions and failures wait TRACKER_UNDO_S there
 * first, so a mistaken tap can be taken back before anything is sent.
 */
(() => {
  "use strict";

  const TOKEN_KEY = "tracker.driver.token";
  const SHARING_KEY = "tracker.driver.sharing";
  const DB_NAME = "tracker-driver";
  const STORE = "pings";
  const BATCH = 100;
  const MIN_BACKOFF_MS = 1000;
  const MAX_BACKOFF_MS = 60000;
  const SWEEP_MS = 15000;
  const ROUTE_REFRESH_MS = 30000;
  const MAX_NOTES = 6;
  const SETTINGS_KEY = "tracker.driver.settings";
  const DEFAULT_SETTINGS = {
    far_from_stop_m: 200,
    undo_s: 10,
    reason_codes: ["not_home", "refused", "damaged", "no_access", "other"],
    next_steps: ["retry_today", "pickup_point", "return_to_depot"],
  };
  const DROP_STATUSES = new Set([400, 413, 415, 422]);
  const AUTH_STATUSES = new Set([401, 403]);

  const $ = (id) => document.getElementById(id);
  const el = {
    net: $("net"),
    signin: $("signin"),
    signinForm: $("signin-form"),
    signinToken: $("signin-token"),
    signinSubmit: $("signin-submit"),
    signinError: $("signin-error"),
    app: $("app"),
    share: $("share"),
    sharingState: $("sharing-state"),
    lastFix: $("last-fix"),
    queueCount: $("queue-count"),
    actionCount: $("action-count"),
    lastSent: $("last-sent"),
    sendState: $("send-state"),
    notes: $("notes"),
    refresh: $("refresh"),
    routeState: $("route-state"),
    stops: $("stops"),
    stopTemplate: $("stop-template"),
    deviceLabel: $("device-label"),
    signout: $("signout"),
  };

  const state = {
    token: null,
    authRefused: false,
    watchId: null,
    lastFixTime: 0,
    sending: false,
    flushAgain: false,
    backoffMs: 0,
    retryTimer: null,
    route: null,
    wakeLock: null,
    lastFix: null,
    settings: { ...DEFAULT_SETTINGS, ...JSON.parse(localStorage.getItem(SETTINGS_KEY) || "{}") },
    outbox: null,
    pending: new Map(),
  };

  // --- the queue (IndexedDB) --------------------------------------------------------------

  function request(req) {
    return new Promise((resolve, reject) => {
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
  }

  const queue = {
    db: null,

    async open() {
      // Version 2 adds the stop actions' queue beside the pings'.
      const req = indexedDB.open(DB_NAME, 2);
      req.onupgradeneeded = () => {
        const db = req.result;
        if (!db.objectStoreNames.contains(STORE)) {
          db.createObjectStore(STORE, { keyPath: "seq", autoIncrement: true });
        }
        const actions = window.trackerDriver.OUTBOX_STORE;
        if (!db.objectStoreNames.contains(actions)) {
          db.createObjectStore(actions, { keyPath: "seq", autoIncrement: true });
        }
      };
      this.db = await request(req);
    },

    // Resolves once the transaction is committed, with what `work` returned.
    run(mode, work) {
      return new Promise((resolve, reject) => {
        const tx = this.db.transaction(STORE, mode, { durability: "strict" });
        let result;
        Promise.resolve(work(tx.objectStore(STORE))).then((value) => { result = value; });
        tx.oncomplete = () => resolve(result);
        tx.onabort = () => reject(tx.error || new Error("transaction aborted"));
        tx.onerror = () => reject(tx.error);
      });
    },

    add(ping) {
      return this.run("readwrite", (store) => { store.add({ ping }); });
    },

    oldest(limit) {
      return this.run("readonly", (store) => request(store.getAll(null, limit)));
    },

    remove(keys) {
      return this.run("readwrite", (store) => { keys.forEach((key) => store.delete(key)); });
    },

    count() {
      return this.run("readonly", (store) => request(store.count()));
    },

    clear() {
      return this.run("readwrite", (store) => { store.clear(); });
    },
  };

  // --- small UI helpers ---------------------------------------------------------------------

  function clock(date) {
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  function shortTime(iso) {
    return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function note(text, kind) {
    const li = document.createElement("li");
    li.className = `note note-${kind || "info"}`;
    li.textContent = `${clock(new Date())} ${text}`;
    el.notes.prepend(li);
    while (el.notes.children.length > MAX_NOTES) el.notes.lastElementChild.remove();
  }

  async function showQueueCount() {
    try {
      el.queueCount.textContent = String(await queue.count());
    } catch (err) {
      el.queueCount.textContent = "?";
    }
  }

  function showNet() {
    const online = navigator.onLine;
    el.net.textContent = online ? "online" : "offline";
    el.net.className = `net ${online ? "net-online" : "net-offline"}`;
  }

  function authHeaders(extra) {
    return { Authorization: `Bearer ${state.token}`, ...(extra || {}) };
  }

  async function errorMessage(res) {
    try {
      const body = await res.json();
      return body.message || body.error || `HTTP ${res.status}`;
    } catch (err) {
      return `HTTP ${res.status}`;
    }
  }

  // --- sending ------------------------------------------------------------------------------

  function scheduleRetry(retryAfter) {
    const seconds = Number.parseFloat(retryAfter || "");
    if (Number.isFinite(seconds) && seconds >= 0) {
      state.backoffMs = Math.min(MAX_BACKOFF_MS, Math.max(MIN_BACKOFF_MS, seconds * 1000));
    } else {
      state.backoffMs = Math.min(MAX_BACKOFF_MS, Math.max(MIN_BACKOFF_MS, state.backoffMs * 2));
    }
    // Jitter, so phones that lost the same network don't all come back at once.
    const delay = Math.round(state.backoffMs * (0.8 + Math.random() * 0.4));
    clearTimeout(state.retryTimer);
    state.retryTimer = setTimeout(() => {
      state.retryTimer = null;
      flush();
    }, delay);
    el.sendState.textContent = `Not sent yet; retrying in ${Math.ceil(delay / 1000)} s.`;
  }

  function retryNow() {
    clearTimeout(state.retryTimer);
    state.retryTimer = null;
    state.backoffMs = 0;
    flush();
  }

  async function sendBatch(batch) {
    try {
      return await fetch("/api/v1/positions", {
        method: "POST",
        headers: authHeaders({ "Content-Type": "application/json" }),
        body: JSON.stringify({ positions: batch.map((item) => item.ping) }),
        cache: "no-store",
        credentials: "omit",
      });
    } catch (err) {
      return null; // offline, DNS, connection reset: the pings stay queued
    }
  }

  async function flush() {
    if (state.sending) {
      // A ping queued while a batch is in flight: look again when this round ends.
      state.flushAgain = true;
      return;
    }
    if (state.retryTimer || !state.token || state.authRefused) return;
    state.sending = true;
    state.flushAgain = false;
    try {
      for (;;) {
        const batch = await queue.oldest(BATCH);
        if (batch.length === 0) {
          el.sendState.textContent = "";
          break;
        }
        const keys = batch.map((item) => item.seq);
        const res = await sendBatch(batch);
        if (res === null) {
          scheduleRetry(null);
          break;
        }
        if (res.status === 202) {
          const body = await res.json().catch(() => ({}));
          await queue.remove(keys);
          state.backoffMs = 0;
          el.lastSent.textContent = clock(new Date());
          if (body.rejected > 0) {
            const reason = (body.rejects && body.rejects[0] && body.rejects[0].reason) || "";
            note(`${body.rejected} ping(s) refused by the server: ${reason}`, "warn");
          }
          await showQueueCount();
          continue;
        }
        if (AUTH_STATUSES.has(res.status)) {
          // Keep the pings (and keep recording): they go out once the device signs in again.
          state.authRefused = true;
          const message = await errorMessage(res);
          el.sendState.textContent = "Sending paused: sign in again.";
          showSignin(`The server refused this device (${message}). Locations are kept; sign in again.`);
          break;
        }
        if (DROP_STATUSES.has(res.status)) {
          const message = await errorMessage(res);
          await queue.remove(keys);
          note(`${batch.length} ping(s) dropped, refused by the server (HTTP ${res.status}: ${message}).`, "error");
          await showQueueCount();
          continue;
        }
        scheduleRetry(res.headers.get("Retry-After"));
        break;
      }
    } catch (err) {
      note(`Could not read the local queue: ${err}`, "error");
      scheduleRetry(null);
    } finally {
      state.sending = false;
      if (state.flushAgain) setTimeout(flush, 0);
    }
  }

  // --- location -----------------------------------------------------------------------------

  function finite(value) {
    return typeof value === "number" && Number.isFinite(value);
  }

  async function onPosition(position) {
    // The same fix can be delivered twice (cached position on restart); keep one.
    if (position.timestamp <= state.lastFixTime) return;
    state.lastFixTime = position.timestamp;
    const c = position.coords;
    state.lastFix = { lat: c.latitude, lon: c.longitude, accuracy: c.accuracy };
    const ping = {
      time: new Date(position.timestamp).toISOString(),
      lat: c.latitude,
      lon: c.longitude,
    };
    if (finite(c.accuracy)) ping.accuracy = c.accuracy;
    if (finite(c.altitude)) ping.altitude = c.altitude;
    if (finite(c.speed) && c.speed >= 0) ping.speed = c.speed;
    if (finite(c.heading) && c.heading >= 0) ping.course = c.heading;
    try {
      await queue.add(ping);
    } catch (err) {
      note(`Could not keep a location on this phone: ${err}`, "error");
      return;
    }
    el.sharingState.textContent = "on";
    el.lastFix.textContent = `${clock(new Date(position.timestamp))} (±${Math.round(c.accuracy || 0)} m)`;
    await showQueueCount();
    flush();
  }

  function onPositionError(err) {
    if (err.code === 1) {
      // Chromium reports any loss of its location service as PERMISSION_DENIED, including
      // the tab being closed mid-watch; so this ends the watch but never the driver's
      // choice to share, which resumes once the permission is back (see resumeSharing).
      unwatch("paused: location permission denied");
      if (document.visibilityState === "visible") {
        note("Location permission denied: allow it in the browser settings.", "error");
      }
      return;
    }
    // No fix for a while (tunnel, indoors): say so where the sharing state is, not as a
    // note per attempt; the next position clears it.
    el.sharingState.textContent = "on, waiting for a fix";
  }

  async function keepScreenOn() {
    // Browsers pause location updates of a page in the background; keep it in front.
    if (!("wakeLock" in navigator) || state.wakeLock) return;
    try {
      state.wakeLock = await navigator.wakeLock.request("screen");
      state.wakeLock.addEventListener("release", () => { state.wakeLock = null; });
    } catch (err) {
      state.wakeLock = null;
    }
  }

  // The driver's choice to share is kept in localStorage and changed only by the driver
  // (the share button, signing out); a watch that ends on its own leaves it as it is.
  function wantsSharing() {
    return localStorage.getItem(SHARING_KEY) === "on";
  }

  function watch() {
    if (!("geolocation" in navigator)) {
      note("This browser cannot share its location.", "error");
      return false;
    }
    if (state.watchId !== null) return true;
    state.watchId = navigator.geolocation.watchPosition(onPosition, onPositionError, {
      enableHighAccuracy: true,
      maximumAge: 0,
      timeout: 60000,
    });
    el.share.textContent = "Stop sharing location";
    el.share.setAttribute("aria-pressed", "true");
    el.sharingState.textContent = "on";
    keepScreenOn();
    return true;
  }

  function unwatch(label) {
    if (state.watchId !== null) navigator.geolocation.clearWatch(state.watchId);
    state.watchId = null;
    el.share.textContent = "Start sharing location";
    el.share.setAttribute("aria-pressed", "false");
    el.sharingState.textContent = label;
    if (state.wakeLock) state.wakeLock.release().catch(() => {});
  }

  function startSharing() {
    if (watch()) localStorage.setItem(SHARING_KEY, "on");
  }

  function stopSharing() {
    localStorage.removeItem(SHARING_KEY);
    unwatch("off");
  }

  // Watches again if the driver chose to share and the watch ended on its own (permission
  // withdrawn, then given back); a permission still refused just pauses it again.
  function resumeSharing() {
    if (state.token && !el.app.hidden && state.watchId === null && wantsSharing()) watch();
  }

  async function followPermission() {
    if (!navigator.permissions) return;
    try {
      const status = await navigator.permissions.query({ name: "geolocation" });
      status.addEventListener("change", () => {
        if (status.state === "granted") resumeSharing();
      });
    } catch (err) {
      // Not queryable here: resuming on the next visit or return to the page still works.
    }
  }

  // --- the route ------------------------------------------------------------------------------

  const DONE = window.trackerDriver.stop.DONE;
  const SERVING = new Set(["arrived", "visited"]);

  // The status a stop shows: its queued action's, else the server's.
  function shownStatus(stop) {
    const pending = state.pending.get(stop.id);
    return pending ? pending.body.status : stop.status;
  }

  function nextStopId(route) {
    const stops = [...route.stops].sort((a, b) => a.seq - b.seq);
    const serving = stops.find((s) => SERVING.has(shownStatus(s)));
    const pending = stops.find((s) => shownStatus(s) === "pending");
    return (serving || pending || {}).id;
  }

  function formOpen() {
    return [...el.stops.querySelectorAll("form")].some((form) => !form.hidden);
  }

  async function loadPending() {
    state.pending = new Map();
    if (!state.outbox) return;
    try {
      for (const action of await state.outbox.all()) {
        // The latest action of each stop decides what it shows.
        const known = state.pending.get(action.stopId);
        if (!known || known.seq < action.seq) state.pending.set(action.stopId, action);
      }
    } catch (err) {
      note(`Could not read the local queue: ${err}`, "error");
    }
    el.actionCount.textContent = String(state.pending.size);
  }

  function renderRoute(route, force) {
    state.route = route;
    // Never throw away a form the driver is filling in (a signature, a photo).
    if (formOpen() && !force) return;
    el.stops.replaceChildren();
    if (!route) {
      el.routeState.textContent = "No active route.";
      return;
    }
    const stops = [...route.stops].sort((a, b) => a.seq - b.seq);
    const done = stops.filter((s) => DONE.has(shownStatus(s))).length;
    let summary = `Route ${route.id}: ${done} of ${stops.length} stops done`;
    if (route.status !== "active") summary += ` (${route.status})`;
    if (route.off_route) summary += " · off the planned route";
    el.routeState.textContent = summary;
    const nextId = nextStopId(route);
    for (const stop of stops) {
      el.stops.append(window.trackerDriver.stop.render({
        route,
        stop,
        nextId,
        pending: state.pending.get(stop.id) || null,
        settings: state.settings,
        lastFix: () => state.lastFix,
        on: { arrived: markArrived, report: queueReport, undo: undoAction },
      }));
    }
  }

  async function rerender() {
    await loadPending();
    renderRoute(state.route, true);
  }

  // The route on screen once it is no longer active (just completed, or cancelled), so the
  // driver sees how it ended instead of an empty list.
  async function finishedRoute() {
    if (!state.route) return null;
    try {
      const res = await fetch(`/api/v1/routes/${state.route.id}`, {
        headers: authHeaders(),
        cache: "no-store",
        credentials: "omit",
      });
      if (!res.ok) return null;
      const route = await res.json();
      return route.status === "active" ? null : route;
    } catch (err) {
      return state.route;
    }
  }

  async function loadRoute() {
    if (!state.token) return;
    let res;
    try {
      res = await fetch("/api/v1/routes/current", {
        headers: authHeaders(),
        cache: "no-store",
        credentials: "omit",
      });
    } catch (err) {
      if (!state.route) el.routeState.textContent = "Offline: the route will load when back online.";
      return;
    }
    await loadPending();
    if (res.ok) {
      renderRoute(await res.json());
    } else if (res.status === 404) {
      renderRoute(await finishedRoute());
    } else if (AUTH_STATUSES.has(res.status)) {
      el.routeState.textContent = `Route unavailable: ${await errorMessage(res)}`;
    } else {
      el.routeState.textContent = `Route unavailable right now (${await errorMessage(res)}).`;
    }
  }

  async function loadSettings() {
    try {
      const res = await fetch("/api/v1/driver/settings", {
        headers: authHeaders(),
        cache: "no-store",
        credentials: "omit",
      });
      if (!res.ok) return;
      state.settings = { ...DEFAULT_SETTINGS, ...(await res.json()) };
      localStorage.setItem(SETTINGS_KEY, JSON.stringify(state.settings));
    } catch (err) {
      // Offline: the last known settings (or the defaults) serve.
    }
  }

  function newId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  async function markArrived(route, stop) {
    await state.outbox.add({
      kind: "status", routeId: route.id, stopId: stop.id, body: { status: "arrived" }, due: 0,
    });
    await rerender();
  }

  // A completion or failure: queued with the tap's time and place, held for the undo window.
  async function queueReport(route, stop, body, replacing) {
    const fix = state.lastFix;
    const action = {
      kind: "report",
      routeId: route.id,
      stopId: stop.id,
      due: Date.now() + state.settings.undo_s * 1000,
      body: {
        client_id: newId(),
        time: new Date().toISOString(),
        location: fix ? { lat: fix.lat, lon: fix.lon, accuracy: fix.accuracy || undefined } : null,
        ...body,
      },
    };
    if (replacing && replacing.attention) {
      // The server asked for more: send the corrected report at once.
      action.due = 0;
      await state.outbox.replace(replacing.seq, action);
    } else {
      await state.outbox.add(action);
    }
    await rerender();
  }

  async function undoAction(action) {
    await state.outbox.remove(action.seq);
    note(action.attention ? "Discarded the stop update." : "Undone: nothing was sent.", "info");
    await rerender();
  }

  // The countdowns of held-back actions, without re-rendering (a form may be open).
  function tickCountdowns() {
    for (const [stopId, action] of state.pending) {
      if (action.attention || !action.due) continue;
      const item = el.stops.querySelector(`li[data-stop-id="${stopId}"] .stop-sync`);
      if (!item) continue;
      const left = Math.ceil((action.due - Date.now()) / 1000);
      const text = item.querySelector(".sync-text");
      const undo = item.querySelector(".undo");
      if (left > 0) {
        text.textContent = `Sending in ${left} s`;
      } else {
        text.textContent = "Waiting to send (kept on this phone)";
        undo.hidden = true;
      }
    }
  }

  function makeOutbox(db) {
    return window.trackerDriver.outbox(db, {
      ready: () => Boolean(state.token) && !state.authRefused,
      headers: authHeaders,
      onChange: () => {},
      onDone: async (action, route) => {
        await loadPending();
        if (route) renderRoute(route);
      },
      onRefused: async (action, message) => {
        note(`Stop not updated: ${message}`, "warn");
        await loadPending();
        await loadRoute();
      },
      onAttention: async (action, body) => {
        note(`Stop ${action.stopId}: ${body.message}`, "warn");
        await rerender();
      },
      onAuth: (message) => {
        state.authRefused = true;
        showSignin(`The server refused this device (${message}). Stop updates are kept; sign in again.`);
      },
      onError: (err) => note(`Could not read the local queue: ${err}`, "error"),
    });
  }

  // --- signing in and out ---------------------------------------------------------------------

  // What the server says about a token: "ok", "refused" (with a message) or "unreachable".
  async function checkToken(token) {
    try {
      const res = await fetch("/api/v1/routes/current", {
        headers: { Authorization: `Bearer ${token}` },
        cache: "no-store",
        credentials: "omit",
      });
      if (res.ok || res.status === 404) return { verdict: "ok", route: res.ok ? await res.json() : null };
      if (AUTH_STATUSES.has(res.status)) return { verdict: "refused", message: await errorMessage(res) };
      return { verdict: "unreachable", message: await errorMessage(res) };
    } catch (err) {
      return { verdict: "unreachable", message: "no connection" };
    }
  }

  function showSignin(message) {
    el.app.hidden = true;
    el.signin.hidden = false;
    el.signinError.textContent = message || "";
    el.signinToken.focus();
  }

  function showApp(route) {
    el.signin.hidden = true;
    el.app.hidden = false;
    el.deviceLabel.textContent = route ? `Device ${route.device}` : "";
    if (route !== undefined) renderRoute(route);
    else loadRoute();
    resumeSharing();
    showQueueCount();
    retryNow();
    loadSettings();
    state.outbox.resume();
  }

  async function signIn(token) {
    el.signinSubmit.disabled = true;
    try {
      const check = await checkToken(token);
      if (check.verdict === "refused") {
        showSignin(`Sign-in refused: ${check.message}`);
        return;
      }
      if (check.verdict === "unreachable") {
        showSignin(`Cannot reach the server (${check.message}); try again.`);
        return;
      }
      // Locations recorded under another device's sign-in must not be sent as this one.
      const previous = localStorage.getItem(TOKEN_KEY);
      const waiting = await queue.count().catch(() => 0);
      if (previous && previous !== token && waiting > 0) {
        if (!window.confirm(`${waiting} location(s) recorded under the previous sign-in were never sent and will be discarded. Continue?`)) {
          showSignin("Sign-in cancelled: the unsent locations are kept.");
          return;
        }
        await queue.clear();
        await state.outbox.clear();
        state.pending = new Map();
      }
      state.token = token;
      state.authRefused = false;
      localStorage.setItem(TOKEN_KEY, token);
      el.signinToken.value = "";
      showApp(check.route);
    } finally {
      el.signinSubmit.disabled = false;
    }
  }

  async function signOut() {
    const waiting = await queue.count().catch(() => 0);
    if (waiting > 0 && !window.confirm(`${waiting} location(s) are not sent yet and will be discarded. Sign out anyway?`)) {
      return;
    }
    if (state.pending.size > 0 && !window.confirm(`${state.pending.size} stop update(s) are not sent yet and will be discarded. Sign out anyway?`)) {
      return;
    }
    stopSharing();
    await queue.clear();
    await state.outbox.clear();
    state.pending = new Map();
    localStorage.removeItem(TOKEN_KEY);
    state.token = null;
    state.route = null;
    el.stops.replaceChildren();
    await showQueueCount();
    showSignin("");
  }

  // --- start ---------------------------------------------------------------------------------

  function tokenFromLink() {
    // A dispatcher can send /driver#token=...: the fragment never reaches a server log.
    const match = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
    if (!match) return null;
    history.replaceState(null, "", window.location.pathname + window.location.search);
    return decodeURIComponent(match[1]);
  }

  async function start() {
    showNet();
    try {
      await queue.open();
    } catch (err) {
      note(`This browser cannot keep locations while offline: ${err}`, "error");
      return;
    }
    state.outbox = makeOutbox(queue.db);
    await loadPending();
    window.addEventListener("online", () => {
      showNet();
      retryNow();
      state.outbox.resume();
      loadRoute();
    });
    window.addEventListener("offline", showNet);
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") {
        if (state.watchId !== null) keepScreenOn();
        resumeSharing();
        retryNow();
        state.outbox.resume();
        loadRoute();
      }
    });
    el.signinForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const token = el.signinToken.value.trim();
      if (token) signIn(token);
    });
    followPermission();
    el.share.addEventListener("click", () => (state.watchId === null ? startSharing() : stopSharing()));
    el.refresh.addEventListener("click", loadRoute);
    el.signout.addEventListener("click", signOut);
    window.addEventListener("hashchange", () => {
      const token = tokenFromLink();
      if (token) signIn(token);
    });
    setInterval(flush, SWEEP_MS);
    setInterval(() => state.outbox.flush(), SWEEP_MS);
    setInterval(tickCountdowns, 500);
    setInterval(() => { if (!formOpen()) loadRoute(); }, ROUTE_REFRESH_MS);

    const linked = tokenFromLink();
    if (linked) {
      await signIn(linked);
      return;
    }
    const saved = localStorage.getItem(TOKEN_KEY);
    if (!saved) {
      showSignin("");
      await showQueueCount();
      return;
    }
    const check = await checkToken(saved);
    if (check.verdict === "refused") {
      // Queued pings stay: they are sent once this device signs in again.
      showSignin(`Sign in again: ${check.message}`);
      return;
    }
    state.token = saved;
    showApp(check.verdict === "ok" ? check.route : undefined);
  }

  start();
})();
