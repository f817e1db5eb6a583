// The dispatch socket: connect, reconnect with the shared backoff, sign in and out.
import {
  $,
  PROTOCOL_VERSION,
  BACKOFF_MIN_MS,
  BACKOFF_MAX_MS,
  UNAUTHORIZED_CLOSE,
  MAX_GLIDE_MS,
  MAX_GLIDE_METRES,
  FEED_SHOWN,
  FEED_KEPT,
  STOP_NAMES_KEPT,
  STOP_STATUSES,
  NARROW_SCREEN,
  EVENT_TONES,
  el,
  formatSpeed,
  formatAge,
  formatClock,
  isNumber,
  formatWhen,
  formatDuration,
  compass,
  nextStop,
  nextStopText,
  seqText,
  stopLabel,
  statusOf,
  statusText,
  windowText,
  etaChangeText,
  describeEvent,
} from "./format.js";
import { Backoff } from "../lib/backoff.js";

export function install(LiveMap) {
  // ---- connection ---------------------------------------------------------------

  LiveMap.prototype.connect = function () {
    var self = this;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.signedOut = false;
    var scheme = location.protocol === "https:" ? "wss:" : "ws:";
    var socket = new WebSocket(scheme + "//" + location.host + this.config.wsPath);
    var opened = false;
    this.socket = socket;
    this.partial = null;
    this.showState(this.attempt === 0 ? "connecting" : "reconnecting");

    socket.onopen = function () {
      opened = true;
    };
    socket.onmessage = function (e) {
      if (self.socket === socket) self.receive(e.data);
    };
    socket.onclose = function (e) {
      if (self.socket !== socket) return; // replaced or deliberately closed
      self.socket = null;
      if (e.code === UNAUTHORIZED_CLOSE) {
        self.showSignIn("");
      } else if (!opened) {
        // A refused handshake looks like any network failure to a browser: ask the API.
        self.probeSession();
      } else {
        self.scheduleReconnect();
      }
    };
  };

  LiveMap.prototype.probeSession = function () {
    var self = this;
    fetch(this.config.sessionPath, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (r.status === 401 || r.status === 403) self.showSignIn("");
        else self.scheduleReconnect();
      })
      .catch(function () {
        self.scheduleReconnect();
      });
  };

  LiveMap.prototype.scheduleReconnect = function () {
    if (this.signedOut) return;
    var self = this;
    if (!this.backoff) this.backoff = new Backoff(BACKOFF_MIN_MS, BACKOFF_MAX_MS);
    // The shared policy: doubling waits with jitter, so a restarted server is not hit by
    // every map at the same instant.
    var delay = this.backoff.next();
    this.attempt += 1;
    this.retryAt = Date.now() + delay;
    this.showState("reconnecting");
    this.retryTimer = setTimeout(function () {
      self.connect();
    }, delay);
  };

  /** Close the socket as if the network dropped it (used by tests and the console). */
  LiveMap.prototype.dropConnection = function () {
    if (this.socket) this.socket.close(4000, "dropped by client");
  };

  LiveMap.prototype.resync = function () {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify({ type: "resync" }));
    }
  };

  LiveMap.prototype.receive = function (raw) {
    var msg;
    try {
      msg = JSON.parse(raw);
    } catch (err) {
      return;
    }
    if (!msg || msg.v !== PROTOCOL_VERSION) return;
    var serverMs = Date.parse(msg.time);
    if (isFinite(serverMs)) this.clockOffsetMs = serverMs - Date.now();
    this.frames += 1;
    if (msg.type === "snapshot") {
      var vehicles = this.snapshotPart(msg);
      if (!vehicles) return; // more parts to come
      this.attempt = 0;
      this.retryAt = 0;
      if (this.backoff) this.backoff.reset();
      this.applySnapshot(vehicles);
      this.showState("live");
      this.loadHistory();
      this.refreshBoard();
    } else if (msg.type === "delta") {
      (msg.vehicles || []).forEach(this.upsert, this);
      // After the vehicles: names and routes are then those the events refer to.
      this.addEvents(msg.events);
    }
  };

  /** The whole snapshot once its last part is in (a one-frame snapshot has no "part").
   * A large fleet's snapshot comes in parts ("part" 0, 1, ..., the last with "final": true). */
  LiveMap.prototype.snapshotPart = function (msg) {
    var vehicles = msg.vehicles || [];
    if (msg.part === undefined) return vehicles;
    // Part 0 starts a snapshot afresh (an unfinished older one is dropped).
    if (msg.part === 0) this.partial = [];
    if (!this.partial) return null; // a part whose start this socket never saw
    for (var i = 0; i < vehicles.length; i++) this.partial.push(vehicles[i]);
    if (msg.final !== true) return null;
    var whole = this.partial;
    this.partial = null;
    return whole;
  };

  // ---- sign-in --------------------------------------------------------------------

  LiveMap.prototype.showSignIn = function (message) {
    this.signedOut = true;
    clearTimeout(this.retryTimer);
    this.showState("signed-out");
    $("signin-error").textContent = message || "";
    $("signin").hidden = false;
    $("signin-token").focus();
  };

  LiveMap.prototype.signIn = function (token) {
    var self = this;
    $("signin-error").textContent = "";
    fetch(this.config.sessionPath, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: token })
    })
      .then(function (r) {
        if (r.ok) {
          $("signin").hidden = true;
          $("signin-token").value = "";
          self.attempt = 0;
          if (self.backoff) self.backoff.reset();
          self.connect();
        } else if (r.status === 401 || r.status === 403) {
          self.showSignIn("That key was not accepted.");
        } else {
          self.showSignIn("Sign-in failed (HTTP " + r.status + "). Try again.");
        }
      })
      .catch(function () {
        self.showSignIn("The server cannot be reached. Try again.");
      });
  };

  LiveMap.prototype.signOut = function () {
    var self = this;
    var socket = this.socket;
    this.socket = null;
    if (socket) socket.close(1000, "signed out");
    fetch(this.config.sessionPath, { method: "DELETE", credentials: "same-origin" })
      .catch(function () {})
      .then(function () {
        self.applySnapshot([]);
        // What happened while signed in is not for whoever signs in next.
        self.feed.clear();
        self.historyLoaded = false;
        self.stopNames.clear();
        self.showSignIn("");
      });
  };
}
