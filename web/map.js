/*
 * Dispatcher live map: keeps one marker per vehicle in step with /ws/dispatch.
 *
 * Protocol (v1): the server sends a "snapshot" (every vehicle) on connect and after a
 * {"type":"resync"} request, then "delta" frames with the latest state of the vehicles
 * that changed. A close with code 4401 means the session is not (or no longer) valid.
 * Everything shown to the user is set with textContent: names come from whoever
 * registered the device.
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

    var self = this;
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
      this.attempt = 0;
      this.retryAt = 0;
      this.applySnapshot(msg.vehicles || []);
      this.showState("live");
    } else if (msg.type === "delta") {
      (msg.vehicles || []).forEach(this.upsert, this);
    }
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
    }
    this.render(v);
  };

  LiveMap.prototype.create = function (data) {
    var self = this;
    var body = el("div", "vm-body");
    var arrow = el("div", "vm-arrow");
    var label = el("span", "vm-label", data.name || data.id);
    var root = el("div");
    root.appendChild(arrow);
    root.appendChild(body);
    root.appendChild(label);
    var icon = L.divIcon({ className: "vehicle-marker", html: root, iconSize: [22, 22], iconAnchor: [11, 11] });
    var marker = L.marker([data.lat, data.lon], { icon: icon, title: data.name || data.id, keyboard: false });
    var v = { id: data.id, data: data, marker: marker, item: null };
    marker.bindPopup(function () {
      return self.popup(v);
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
    var markerEl = v.marker.getElement();
    if (markerEl) {
      markerEl.classList.toggle("stale", stale);
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
    var offRoute = Boolean(d.route && d.route.off_route);
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

  LiveMap.prototype.focus = function (id) {
    var v = this.vehicles.get(id);
    if (!v) return;
    this.userMoved = true;
    this.map.setView(v.marker.getLatLng(), Math.max(this.map.getZoom(), 16));
    v.marker.openPopup();
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
