/*
 * Dispatcher live map: keeps one marker per vehicle in step with /ws/dispatch, draws the
 * selected vehicle's route (RouteView) and lists recent route events (EventFeed).
 *
 * Protocol (v1): the server sends a "snapshot" (every vehicle) on connect and after a
 * {"type":"resync"} request, then "delta" frames with the latest state of the vehicles
 * that changed and the route events since the last frame. A large fleet's snapshot comes
 * in parts ("part" 0, 1, ..., the last with "final": true), applied together. A close with code 4401 means
 * the session is not (or no longer) valid. Everything shown to the user is set with
 * textContent: names come from whoever registered the device or planned the route.
 */
(function () {
  "use strict";

  var PROTOCOL_VERSION = 1;
  var BACKOFF_MIN_MS = 500;
  var BACKOFF_MAX_MS = 15000;
  var UNAUTHORIZED_CLOSE = 4401;
  var MAX_GLIDE_MS = 1500;
  // A jump this long is a teleport (new fix after a gap), not something to animate.
  var MAX_GLIDE_METRES = 2000;
  var FEED_SHOWN = 50;
  // More are kept than shown, so hiding the (frequent) ETA changes still leaves a full feed.
  var FEED_KEPT = 200;
  // Names of stops on routes a vehicle has since replaced, for events that arrive late.
  var STOP_NAMES_KEPT = 5000;
  var STOP_STATUSES = ["pending", "arrived", "completed", "failed", "skipped"];
  var NARROW_SCREEN = "(max-width: 700px)";
  var EVENT_TONES = {
    "stop.arrived": "good",
    "stop.completed": "good",
    "route.back_on_route": "good",
    "route.completed": "good",
    "stop.failed": "bad",
    "route.off_route": "bad",
    "stop.skipped": "warn"
  };

  function $(id) {
    return document.getElementById(id);
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function formatSpeed(mps) {
    if (mps === null || mps === undefined) return "speed ?";
    return Math.round(mps * 3.6) + " km/h";
  }

  function formatAge(seconds) {
    if (!isFinite(seconds)) return "?";
    var s = Math.max(0, Math.round(seconds));
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    if (s < 86400) return Math.floor(s / 3600) + " h ago";
    return Math.floor(s / 86400) + " d ago";
  }

  function formatClock(iso) {
    if (!iso) return "?";
    var d = new Date(iso);
    if (isNaN(d.getTime())) return "?";
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function isNumber(x) {
    return typeof x === "number" && isFinite(x);
  }

  // A local clock time, with the day in front when it is not today (plans span midnight).
  function formatWhen(iso, withSeconds) {
    if (!iso) return "?";
    var d = new Date(iso);
    if (isNaN(d.getTime())) return "?";
    var opts = { hour: "2-digit", minute: "2-digit" };
    if (withSeconds) opts.second = "2-digit";
    var clock = d.toLocaleTimeString([], opts);
    if (d.toDateString() === new Date().toDateString()) return clock;
    return d.toLocaleDateString([], { day: "numeric", month: "short" }) + " " + clock;
  }

  function formatDuration(seconds) {
    var s = Math.round(Math.abs(seconds));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.round(s / 60) + " min";
    var m = Math.round(s / 60);
    return Math.floor(m / 60) + " h " + (m % 60) + " min";
  }

  function compass(deg) {
    if (deg === null || deg === undefined) return "?";
    var names = ["N", "NE", "E", "SE", "S", "SW", "W", "NW"];
    return Math.round(deg) + "° " + names[Math.round(deg / 45) % 8];
  }

  // The next stop of a route summary, whether the server names it by id or inlines it.
  function nextStop(route) {
    if (!route) return null;
    var stops = Array.isArray(route.stops) ? route.stops : [];
    var next = route.next_stop;
    if (next && typeof next === "object") return next;
    if (next !== null && next !== undefined) {
      for (var i = 0; i < stops.length; i++) {
        if (stops[i].id === next) return stops[i];
      }
    }
    for (var j = 0; j < stops.length; j++) {
      if (stops[j].status === "pending" || stops[j].status === "arrived") return stops[j];
    }
    return null;
  }

  function nextStopText(route) {
    var stop = nextStop(route);
    if (!stop) return null;
    var name = stop.name || "stop " + (stop.seq !== undefined ? stop.seq : stop.id);
    return "Next: " + name + " · ETA " + formatClock(stop.eta);
  }

  function seqText(stop) {
    return stop.seq !== undefined && stop.seq !== null ? String(stop.seq) : "·";
  }

  function stopLabel(stop) {
    return stop.name || stop.recipient || "stop " + seqText(stop);
  }

  function statusOf(stop) {
    return STOP_STATUSES.indexOf(stop.status) >= 0 ? stop.status : "pending";
  }

  function statusText(stop) {
    var status = statusOf(stop);
    var at = status === "arrived" ? stop.arrived_at : status === "pending" ? null : stop.completed_at;
    return at ? status + " at " + formatWhen(at) : status;
  }

  function windowText(stop) {
    var from = stop.window_start, to = stop.window_end;
    if (from && to) return formatWhen(from) + "–" + formatWhen(to);
    if (from) return "from " + formatWhen(from);
    if (to) return "until " + formatWhen(to);
    return null;
  }

  function etaChangeText(who, stop, data) {
    var text = who + ": ETA for " + stop;
    if (!data.eta) return text + " is unknown";
    if (!data.previous) return text + " is " + formatWhen(data.eta);
    var shift = (Date.parse(data.eta) - Date.parse(data.previous)) / 1000;
    var change = isNumber(shift) && Math.abs(shift) >= 1
      ? " (" + (shift > 0 ? "+" : "−") + formatDuration(shift) + ")" : "";
    return text + " moved to " + formatWhen(data.eta) + change;
  }

  /** A route event in words: who did what where ("Van 1 arrived at Bäckerei Huber"). */
  function describeEvent(ev, who, stop) {
    var d = ev.data && typeof ev.data === "object" ? ev.data : {};
    switch (ev.type) {
      case "stop.arrived":
        return who + " arrived at " + stop;
      case "stop.departed":
        return who + " left " + stop + (isNumber(d.dwell_s) && d.dwell_s >= 1 ? " after " + formatDuration(d.dwell_s) : "");
      case "stop.visited":
        return who + " visited " + stop + " (to be completed by the driver)";
      case "stop.completed":
        return who + " completed " + stop;
      case "stop.failed":
        return who + " failed at " + stop + (d.reason ? ": " + d.reason : "");
      case "stop.skipped":
        return who + " skipped " + stop + (d.reason ? ": " + d.reason : "");
      case "stop.arriving":
        return who + " is arriving at " + stop + (d.eta ? " (ETA " + formatWhen(d.eta) + ")" : "");
      case "stop.eta_changed":
        return etaChangeText(who, stop, d);
      case "route.off_route":
        return who + " is off route" + (isNumber(d.distance_m) ? " (" + Math.round(d.distance_m) + " m from the path)" : "");
      case "route.back_on_route":
        return who + " is back on route";
      case "route.completed":
        return who + " finished the route";
      default:
        return who + ": " + String(ev.type);
    }
  }

  // A numbered square in the status colour; the next stop larger.
  function stopIcon(stop, status, isNext) {
    var size = isNext ? 26 : 20;
    return L.divIcon({
      className: "stop-marker stop-" + status + (isNext ? " stop-next" : ""),
      html: el("div", "sm-body", seqText(stop)),
      iconSize: [size, size],
      iconAnchor: [size / 2, size / 2],
      popupAnchor: [0, -size / 2]
    });
  }

  // ---- the selected vehicle's route -------------------------------------------------

  /**
   * Stops of one route as small numbered markers coloured by status (the next one larger,
   * with its geofence), and the route card above the map. Markers are kept and updated in
   * place per stop, so a delta that changes one ETA touches one marker.
   */
  function RouteView(map, popupOptions) {
    this.map = map;
    this.popupOptions = popupOptions;
    this.layer = L.layerGroup().addTo(map);
    this.stops = new Map(); // stop id -> {stop, next, sig, marker}
    this.routeKey = null;
    this.geofence = null;
  }

  RouteView.prototype.clear = function () {
    this.layer.clearLayers();
    this.stops.clear();
    this.routeKey = null;
    this.geofence = null;
  };

  /** Show `vehicle`'s route (a Vehicle JSON), or nothing when `vehicle` is null. */
  RouteView.prototype.show = function (vehicle) {
    if (!vehicle) {
      this.clear();
      $("route-card").hidden = true;
      this.keepPopupsClear();
      return;
    }
    var route = vehicle.route && typeof vehicle.route === "object" ? vehicle.route : null;
    var key = route ? String(route.id) : null;
    if (key !== this.routeKey) {
      this.clear();
      this.routeKey = key;
    }
    var next = nextStop(route);
    var nextId = next ? next.id : null;
    var seen = new Set();
    (route && Array.isArray(route.stops) ? route.stops : []).forEach(function (stop) {
      if (!stop || stop.id === undefined || !isNumber(stop.lat) || !isNumber(stop.lon)) return;
      seen.add(stop.id);
      this.drawStop(stop, stop.id === nextId);
    }, this);
    var self = this;
    this.stops.forEach(function (entry, id) {
      if (!seen.has(id)) {
        self.layer.removeLayer(entry.marker);
        self.stops.delete(id);
      }
    });
    this.drawGeofence(next && seen.has(next.id) ? next : null);
    this.showCard(vehicle, route, next);
  };

  RouteView.prototype.drawStop = function (stop, isNext) {
    var sig = JSON.stringify(stop) + (isNext ? "|next" : "");
    var entry = this.stops.get(stop.id);
    if (entry && entry.sig === sig) return;
    var status = statusOf(stop);
    var look = status + "|" + isNext + "|" + seqText(stop);
    var title = "Stop " + seqText(stop) + ": " + stopLabel(stop) + " (" + status + ")";
    // Below the vehicles; the next stop above the others.
    var z = isNext ? -500 : -1000;
    if (!entry) {
      var self = this;
      entry = { stop: stop, next: isNext, sig: sig, look: look, marker: null };
      entry.marker = L.marker([stop.lat, stop.lon], {
        icon: stopIcon(stop, status, isNext),
        title: title,
        keyboard: false,
        zIndexOffset: z
      });
      entry.marker.bindPopup(function () {
        return self.popup(entry);
      }, this.popupOptions);
      this.stops.set(stop.id, entry);
      entry.marker.addTo(this.layer);
    } else {
      entry.stop = stop;
      entry.next = isNext;
      entry.sig = sig;
      entry.marker.options.title = title;
      // Most changes are ETAs, which only the popup shows: the icon stays as it is.
      if (entry.look !== look) {
        entry.look = look;
        entry.marker.setIcon(stopIcon(stop, status, isNext));
        entry.marker.setZIndexOffset(z);
      }
      entry.marker.setLatLng([stop.lat, stop.lon]);
    }
    var node = entry.marker.getElement();
    if (node) {
      node.title = title; // Leaflet reuses the element and would keep the old title
      node.dataset.stopId = String(stop.id);
      node.dataset.status = status;
    }
    if (entry.marker.isPopupOpen()) entry.marker.setPopupContent(this.popup(entry));
  };

  RouteView.prototype.drawGeofence = function (next) {
    if (!next || !isNumber(next.radius_m) || next.radius_m <= 0) {
      if (this.geofence) this.layer.removeLayer(this.geofence);
      this.geofence = null;
      return;
    }
    if (!this.geofence) {
      this.geofence = L.circle([next.lat, next.lon], {
        radius: next.radius_m,
        interactive: false,
        className: "stop-geofence",
        color: "#2563eb",
        weight: 1,
        dashArray: "4 4",
        fillOpacity: 0.06
      }).addTo(this.layer);
    } else {
      this.geofence.setLatLng([next.lat, next.lon]);
      this.geofence.setRadius(next.radius_m);
    }
  };

  RouteView.prototype.popup = function (entry) {
    var s = entry.stop;
    var status = statusOf(s);
    var box = el("div", "stop-popup");
    var head = el("div", "sp-head");
    head.appendChild(el("strong", null, "Stop " + seqText(s) + " · " + stopLabel(s)));
    if (entry.next) head.appendChild(el("span", "badge badge-next", "next stop"));
    box.appendChild(head);
    var dl = el("dl");
    function row(term, value, className) {
      dl.appendChild(el("dt", null, term));
      dl.appendChild(el("dd", className, value));
    }
    if (s.recipient) row("Recipient", s.recipient);
    row("Status", statusText(s), "sp-status st-" + status);
    if (status === "pending") row("ETA", s.eta ? formatWhen(s.eta) : "not known yet", "sp-eta");
    var slot = windowText(s);
    if (slot) row("Window", slot, "sp-window");
    if (s.reason) row("Reason", s.reason);
    box.appendChild(dl);
    return box;
  };

  RouteView.prototype.showCard = function (vehicle, route, next) {
    $("route-card").hidden = false;
    $("rc-vehicle").textContent = vehicle.name || vehicle.id;
    $("rc-offroute").hidden = !(route && route.off_route);
    $("rc-fit").hidden = this.stops.size === 0;
    $("rc-legend").hidden = !route;
    var summary = "No route planned";
    var nextText = "";
    if (route) {
      var stops = Array.isArray(route.stops) ? route.stops : [];
      var count = { pending: 0, arrived: 0, completed: 0, failed: 0, skipped: 0 };
      stops.forEach(function (stop) {
        count[statusOf(stop)] += 1;
      });
      var done = count.completed + count.failed + count.skipped;
      summary = done + " of " + stops.length + " stops done";
      if (count.failed) summary += " · " + count.failed + " failed";
      if (count.skipped) summary += " · " + count.skipped + " skipped";
      if (route.status && route.status !== "active") summary += " · route " + route.status;
      if (route.straight_line) summary += " · straight-line ETAs";
      if (next) {
        nextText = next.status === "arrived"
          ? "At stop " + seqText(next) + ": " + stopLabel(next)
          : "Next: " + seqText(next) + " · " + stopLabel(next) + " · ETA " + (next.eta ? formatWhen(next.eta) : "?");
      }
    }
    $("rc-summary").textContent = summary;
    $("rc-next").textContent = nextText;
    $("rc-next").hidden = !nextText;
    this.keepPopupsClear();
  };

  // Popups open panned clear of the card. Leaflet reads autoPanPaddingTopLeft each time a
  // popup opens and takes an L.Point as it is, so every popup shares this one point.
  RouteView.prototype.keepPopupsClear = function () {
    var card = $("route-card");
    var pad = this.popupOptions.autoPanPaddingTopLeft;
    pad.y = card.hidden ? 5 : card.offsetTop + card.offsetHeight + 10;
  };

  /** Where the route's stops are drawn (to frame them with the vehicle). */
  RouteView.prototype.points = function () {
    var points = [];
    this.stops.forEach(function (entry) {
      points.push(entry.marker.getLatLng());
    });
    return points;
  };

  // ---- the event feed ---------------------------------------------------------------

  /**
   * Recent route events, newest first, at most FEED_SHOWN on screen. Each entry's node is
   * built once; rendering only inserts new nodes and drops the oldest, so a screen reader
   * announces each event once and a busy fleet costs a few DOM operations per frame.
   */
  function EventFeed(onPick) {
    this.entries = []; // newest first: {type, device, time, who, text, added, node}
    this.onPick = onPick;
    var self = this;
    $("feed-eta").addEventListener("change", function () {
      self.render();
    });
  }

  /** Note one event; `who` and `stop` are the names it is told with (known now). */
  EventFeed.prototype.add = function (ev, who, stop) {
    this.entries.unshift({
      type: ev.type,
      device: ev.device,
      time: ev.time,
      who: who,
      text: describeEvent(ev, who, stop),
      added: Date.now(),
      node: null // built when first shown: a burst of events mostly scrolls past unseen
    });
    if (this.entries.length > FEED_KEPT) this.entries.length = FEED_KEPT;
  };

  EventFeed.prototype.build = function (entry) {
    var li = el("li", "event tone-" + (EVENT_TONES[entry.type] || "info"));
    // Only what just happened flashes, not old events shown again by the filter.
    if (Date.now() - entry.added < 2000) li.classList.add("ev-new");
    li.dataset.type = entry.type;
    if (entry.device !== undefined && entry.device !== null) li.dataset.device = entry.device;
    li.addEventListener("animationend", function () {
      li.classList.remove("ev-new");
    });
    var button = el("button", "event-item");
    button.type = "button";
    button.title = "Show " + entry.who + " on the map";
    var time = el("time", "ev-time", formatWhen(entry.time, true));
    if (typeof entry.time === "string") time.dateTime = entry.time;
    button.appendChild(time);
    button.appendChild(el("span", "ev-text", entry.text));
    var onPick = this.onPick;
    button.addEventListener("click", function () {
      onPick(entry.device);
    });
    li.appendChild(button);
    return li;
  };

  EventFeed.prototype.clear = function () {
    this.entries = [];
    this.render();
  };

  EventFeed.prototype.render = function () {
    var withEta = $("feed-eta").checked;
    var shown = [];
    for (var i = 0; i < this.entries.length && shown.length < FEED_SHOWN; i++) {
      var entry = this.entries[i];
      if (withEta || entry.type !== "stop.eta_changed") {
        if (!entry.node) entry.node = this.build(entry);
        shown.push(entry.node);
      }
    }
    var list = $("event-list");
    shown.forEach(function (node, k) {
      if (list.children[k] !== node) list.insertBefore(node, list.children[k] || null);
    });
    while (list.children.length > shown.length) list.lastElementChild.remove();
    $("feed-count").textContent = shown.length ? String(shown.length) : "";
    $("feed-empty").hidden = shown.length > 0;
  };

  function LiveMap(map, config) {
    this.map = map;
    this.config = config;
    this.vehicles = new Map(); // id -> {data, marker, item, glide}
    this.socket = null;
    this.attempt = 0;
    this.retryTimer = null;
    this.retryAt = 0;
    this.signedOut = false;
    this.clockOffsetMs = 0; // server clock minus browser clock, from frame times
    this.inSnapshot = false;
    this.userMoved = false;
    this.gliding = new Set();
    this.frameRequested = false;
    this.state = "connecting";
    this.frames = 0;
    this.partial = null; // vehicles of a snapshot arriving in parts
    this.selected = null; // id of the vehicle whose route is drawn
    this.stopNames = new Map(); // stop id -> label, for routes vehicles have replaced

    var self = this;
    this.zooming = false;
    map.on("zoomanim", function () {
      self.zooming = true;
    });
    map.on("zoomend", function () {
      self.zooming = false;
    });
    this.popupOptions = { autoPanPaddingTopLeft: L.point(5, 5) };
    this.route = new RouteView(map, this.popupOptions);
    this.feed = new EventFeed(function (id) {
      self.focus(id);
    });
    this.feed.render();
    $("rc-close").addEventListener("click", function () {
      self.select(null);
    });
    $("rc-fit").addEventListener("click", function () {
      self.fitRoute();
    });
    document.addEventListener("keydown", function (e) {
      var field = e.target && /^(INPUT|TEXTAREA|SELECT)$/.test(e.target.tagName);
      if (e.key === "Escape" && !field) self.select(null);
    });
    // On a phone the feed starts folded, leaving the small panel to the vehicle list.
    if (window.matchMedia && window.matchMedia(NARROW_SCREEN).matches) $("feed").open = false;
    // Any gesture on the map (drag, wheel, zoom buttons, keys) ends automatic framing;
    // map events can't be used for this, as programmatic fits fire them too.
    ["pointerdown", "wheel", "keydown"].forEach(function (type) {
      map.getContainer().addEventListener(type, function () {
        self.userMoved = true;
      }, { passive: true });
    });
    $("signin-form").addEventListener("submit", function (e) {
      e.preventDefault();
      self.signIn($("signin-token").value);
    });
    $("signout").addEventListener("click", function () {
      self.signOut();
    });
    setInterval(function () {
      self.refreshAges();
      if (self.state === "reconnecting") self.showState("reconnecting");
    }, 1000);
  }

  LiveMap.prototype.nowMs = function () {
    return Date.now() + this.clockOffsetMs;
  };

  LiveMap.prototype.showState = function (state) {
    this.state = state;
    var label = state;
    if (state === "reconnecting" && this.retryAt) {
      var wait = Math.max(0, Math.ceil((this.retryAt - Date.now()) / 1000));
      label = "reconnecting in " + wait + " s";
    } else if (state === "signed-out") {
      label = "signed out";
    }
    var conn = $("conn");
    conn.className = "conn conn-" + state;
    conn.dataset.state = state;
    $("conn-label").textContent = label;
  };

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
    var ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * Math.pow(2, this.attempt));
    // Full jitter, so a restarted server is not hit by every map at the same instant.
    var delay = BACKOFF_MIN_MS / 2 + Math.random() * (ceiling - BACKOFF_MIN_MS / 2);
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
      this.applySnapshot(vehicles);
      this.showState("live");
    } else if (msg.type === "delta") {
      (msg.vehicles || []).forEach(this.upsert, this);
      // After the vehicles: names and routes are then those the events refer to.
      this.addEvents(msg.events);
    }
  };

  /** The whole snapshot once its last part is in (a one-frame snapshot has no "part"). */
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
        self.stopNames.clear();
        self.showSignIn("");
      });
  };

  // ---- vehicles -------------------------------------------------------------------

  LiveMap.prototype.applySnapshot = function (list) {
    var seen = new Set();
    this.inSnapshot = true;
    list.forEach(function (v) {
      seen.add(v.id);
      this.upsert(v);
    }, this);
    this.inSnapshot = false;
    var self = this;
    Array.from(this.vehicles.keys()).forEach(function (id) {
      if (!seen.has(id)) self.remove(id);
    });
    this.updateCount();
    this.autoFit();
  };

  LiveMap.prototype.upsert = function (data) {
    if (!data || data.id === undefined || !isFinite(data.lat) || !isFinite(data.lon)) return;
    var v = this.vehicles.get(data.id);
    if (!v) {
      v = this.create(data);
      this.vehicles.set(data.id, v);
      if (!this.inSnapshot) {
        this.updateCount();
        this.autoFit();
      }
    } else {
      var previous = v.data;
      v.data = data;
      // A fix older than the one shown (late delivery) never moves the marker backward.
      if (Date.parse(data.time) >= Date.parse(previous.time)) {
        this.glide(v, previous, data);
      } else {
        v.data = previous;
      }
      this.rememberStops(previous.route, v.data.route);
    }
    this.render(v);
    if (v.id === this.selected) this.route.show(v.data);
  };

  // Keep the stop names of a route being replaced, for its events still to come.
  LiveMap.prototype.rememberStops = function (before, after) {
    if (!before || !Array.isArray(before.stops) || (after && after.id === before.id)) return;
    before.stops.forEach(function (stop) {
      if (!stop || stop.id === undefined) return;
      this.stopNames.delete(stop.id);
      this.stopNames.set(stop.id, stopLabel(stop));
    }, this);
    while (this.stopNames.size > STOP_NAMES_KEPT) {
      this.stopNames.delete(this.stopNames.keys().next().value);
    }
  };

  LiveMap.prototype.create = function (data) {
    var self = this;
    var body = el("div", "vm-body");
    var arrow = el("div", "vm-arrow");
    var label = el("span", "vm-label", data.name || data.id);
    var badge = el("span", "vm-badge", "off route");
    var root = el("div");
    root.appendChild(arrow);
    root.appendChild(body);
    root.appendChild(label);
    root.appendChild(badge);
    var icon = L.divIcon({ className: "vehicle-marker", html: root, iconSize: [22, 22], iconAnchor: [11, 11] });
    var marker = L.marker([data.lat, data.lon], { icon: icon, title: data.name || data.id, keyboard: false });
    var v = { id: data.id, data: data, marker: marker, item: null };
    marker.bindPopup(function () {
      return self.popup(v);
    }, this.popupOptions);
    marker.on("click", function () {
      self.select(v.id);
    });
    marker.addTo(this.map);
    marker.getElement().dataset.id = data.id;

    var li = el("li");
    var button = el("button", "vehicle-item");
    button.type = "button";
    button.dataset.id = data.id;
    button.appendChild(el("span", "v-name"));
    button.appendChild(el("span", "v-meta"));
    button.appendChild(el("span", "v-next"));
    button.addEventListener("click", function () {
      self.focus(v.id);
    });
    li.appendChild(button);
    v.item = button;
    this.insertSorted(li, data.name || data.id);
    return v;
  };

  LiveMap.prototype.insertSorted = function (li, name) {
    var list = $("vehicle-list");
    li.dataset.sortKey = String(name).toLowerCase();
    var before = null;
    for (var i = 0; i < list.children.length; i++) {
      if (list.children[i].dataset.sortKey > li.dataset.sortKey) {
        before = list.children[i];
        break;
      }
    }
    list.insertBefore(li, before);
  };

  LiveMap.prototype.remove = function (id) {
    var v = this.vehicles.get(id);
    if (!v) return;
    if (id === this.selected) this.select(null);
    this.gliding.delete(v);
    v.marker.remove();
    if (v.item && v.item.parentNode) v.item.parentNode.remove();
    this.vehicles.delete(id);
    this.updateCount();
  };

  LiveMap.prototype.updateCount = function () {
    var n = this.vehicles.size;
    $("vehicle-count").textContent = n === 0 ? "no vehicles" : n === 1 ? "1 vehicle" : n + " vehicles";
  };

  LiveMap.prototype.isStale = function (data) {
    var age = (this.nowMs() - Date.parse(data.time)) / 1000;
    return !(age <= this.config.staleAfterS);
  };

  LiveMap.prototype.render = function (v) {
    var d = v.data;
    var stale = this.isStale(d);
    var age = (this.nowMs() - Date.parse(d.time)) / 1000;
    var offRoute = Boolean(d.route && d.route.off_route);
    var markerEl = v.marker.getElement();
    if (markerEl) {
      markerEl.classList.toggle("stale", stale);
      markerEl.classList.toggle("off-route", offRoute);
      markerEl.classList.toggle("selected", v.id === this.selected);
      markerEl.classList.toggle("no-heading", d.course === null || d.course === undefined);
      markerEl.querySelector(".vm-label").textContent = d.name || d.id;
      if (d.course !== null && d.course !== undefined) {
        markerEl.querySelector(".vm-arrow").style.transform = "rotate(" + d.course + "deg)";
      }
    }
    v.item.classList.toggle("stale", stale);
    v.item.querySelector(".v-name").textContent = d.name || d.id;
    v.item.querySelector(".v-meta").textContent =
      formatSpeed(d.speed) + " · " + formatAge(age) + (stale ? " · stale" : "");
    var next = v.item.querySelector(".v-next");
    var text = nextStopText(d.route);
    next.textContent = text || "";
    next.hidden = !text && !offRoute;
    if (offRoute) next.appendChild(el("span", "v-offroute", text ? " · off route" : "off route"));
    if (v.marker.isPopupOpen()) v.marker.setPopupContent(this.popup(v));
  };

  LiveMap.prototype.popup = function (v) {
    var d = v.data;
    var box = el("div", "vehicle-popup");
    box.appendChild(el("strong", null, d.name || d.id));
    var dl = el("dl");
    function row(term, value) {
      dl.appendChild(el("dt", null, term));
      dl.appendChild(el("dd", null, value));
    }
    row("Vehicle", d.id);
    row("Speed", formatSpeed(d.speed));
    row("Heading", compass(d.course));
    row("Fix", formatAge((this.nowMs() - Date.parse(d.time)) / 1000) +
      (this.isStale(d) ? " (stale)" : ""));
    if (d.accuracy !== null && d.accuracy !== undefined) row("Accuracy", "± " + Math.round(d.accuracy) + " m");
    var stop = nextStop(d.route);
    if (stop) {
      row("Next stop", stop.name || String(stop.id));
      row("ETA", formatClock(stop.eta));
    }
    if (d.route && d.route.off_route) row("Route", "off route");
    box.appendChild(dl);
    return box;
  };

  LiveMap.prototype.refreshAges = function () {
    this.vehicles.forEach(this.render, this);
  };

  /** Draw `id`'s route and mark it in the list and on the map; null clears the selection. */
  LiveMap.prototype.select = function (id) {
    var v = id === null || id === undefined ? undefined : this.vehicles.get(id);
    var next = v ? v.id : null;
    if (next === this.selected) return;
    var old = this.selected === null ? undefined : this.vehicles.get(this.selected);
    this.selected = next;
    if (old) this.markSelected(old, false);
    if (v) {
      this.markSelected(v, true);
      v.item.scrollIntoView({ block: "nearest" });
    }
    this.route.show(v ? v.data : null);
  };

  LiveMap.prototype.markSelected = function (v, on) {
    v.item.classList.toggle("selected", on);
    if (on) v.item.setAttribute("aria-current", "true");
    else v.item.removeAttribute("aria-current");
    var markerEl = v.marker.getElement();
    if (markerEl) markerEl.classList.toggle("selected", on);
    v.marker.setZIndexOffset(on ? 1000 : 0);
  };

  /** Frame the selected vehicle and its stops, clear of the route card. */
  LiveMap.prototype.fitRoute = function () {
    var v = this.selected === null ? undefined : this.vehicles.get(this.selected);
    if (!v) return;
    var points = this.route.points();
    points.push(v.marker.getLatLng());
    var card = $("route-card");
    var narrow = window.matchMedia && window.matchMedia(NARROW_SCREEN).matches;
    var options = { maxZoom: 17, paddingTopLeft: [30, 30], paddingBottomRight: [30, 30] };
    if (narrow) options.paddingTopLeft = [30, card.offsetHeight + 20];
    else options.paddingBottomRight = [card.offsetWidth + 30, 30];
    this.userMoved = true;
    var map = this.map;
    map.closePopup(); // a popup left open would sit wherever its marker lands
    this.settled(function () {
      map.fitBounds(L.latLngBounds(points), options);
    });
  };

  // Leaflet ignores a new view while a zoom animation runs: wait for it to end.
  LiveMap.prototype.settled = function (move) {
    if (this.zooming) this.map.once("zoomend", move);
    else move();
  };

  // ---- events ---------------------------------------------------------------------

  LiveMap.prototype.addEvents = function (events) {
    if (!Array.isArray(events) || events.length === 0) return;
    events.forEach(function (ev) {
      if (!ev || typeof ev.type !== "string") return;
      var v = this.vehicles.get(ev.device);
      var who = v ? v.data.name || v.id : ev.device || "A vehicle";
      this.feed.add(ev, who, this.stopName(v, ev.stop_id));
    }, this);
    this.feed.render();
  };

  LiveMap.prototype.stopName = function (v, stopId) {
    if (stopId === null || stopId === undefined) return "a stop";
    var route = v && v.data.route;
    var stops = route && Array.isArray(route.stops) ? route.stops : [];
    for (var i = 0; i < stops.length; i++) {
      if (stops[i] && stops[i].id === stopId) return stopLabel(stops[i]);
    }
    return this.stopNames.get(stopId) || "stop #" + stopId;
  };

  LiveMap.prototype.focus = function (id) {
    var v = this.vehicles.get(id);
    if (!v) return;
    this.select(id);
    this.userMoved = true;
    var map = this.map;
    this.settled(function () {
      map.setView(v.marker.getLatLng(), Math.max(map.getZoom(), 16));
      v.marker.openPopup();
    });
  };

  // Frame the whole fleet whenever a vehicle joins, until the user takes over the map.
  LiveMap.prototype.autoFit = function () {
    if (this.userMoved || this.vehicles.size === 0) return;
    var points = [];
    this.vehicles.forEach(function (v) {
      points.push([v.data.lat, v.data.lon]);
    });
    this.map.fitBounds(points, { padding: [40, 40], maxZoom: 15, animate: false });
  };

  // ---- smooth movement ------------------------------------------------------------

  LiveMap.prototype.glide = function (v, from, to) {
    var start = v.marker.getLatLng();
    var target = L.latLng(to.lat, to.lon);
    var gap = Date.parse(to.time) - Date.parse(from.time);
    if (start.distanceTo(target) > MAX_GLIDE_METRES || !(gap > 0)) {
      this.gliding.delete(v);
      v.marker.setLatLng(target);
      return;
    }
    // Take as long as the vehicle took (capped), so motion looks continuous at ~1 Hz.
    v.glide = { from: start, to: target, t0: performance.now(), ms: Math.min(gap, MAX_GLIDE_MS) };
    this.gliding.add(v);
    this.requestFrame();
  };

  LiveMap.prototype.requestFrame = function () {
    if (this.frameRequested) return;
    this.frameRequested = true;
    var self = this;
    requestAnimationFrame(function (now) {
      self.frameRequested = false;
      self.step(now);
    });
  };

  LiveMap.prototype.step = function (now) {
    var self = this;
    this.gliding.forEach(function (v) {
      var g = v.glide;
      var f = Math.min(1, Math.max(0, (now - g.t0) / g.ms));
      v.marker.setLatLng([
        g.from.lat + (g.to.lat - g.from.lat) * f,
        g.from.lng + (g.to.lng - g.from.lng) * f
      ]);
      if (f >= 1) self.gliding.delete(v);
    });
    if (this.gliding.size > 0) this.requestFrame();
  };

  /** Where a vehicle's marker is drawn right now (for tests and the console). */
  LiveMap.prototype.markerPosition = function (id) {
    var v = this.vehicles.get(id);
    if (!v) return null;
    var p = v.marker.getLatLng();
    return { lat: p.lat, lon: p.lng };
  };

  window.TrackerMap = {
    start: function (map, config) {
      var live = new LiveMap(map, config);
      window.trackerMap = live;
      live.connect();
      return live;
    }
  };
})();
