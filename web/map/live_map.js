// The live map: ties the socket, vehicles, route view, feed and motion together.
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
import { AccuracyPanel } from "./accuracy.js";
import { RouteBoard } from "./board.js";
import { EventFeed } from "./feed.js";
import { Replay } from "./replay.js";
import { RouteLine } from "./route_line.js";
import { RouteView } from "./route_view.js";
import { install as installEvents } from "./events.js";
import { install as installMotion } from "./motion.js";
import { install as installSocket } from "./socket.js";
import { install as installVehicles } from "./vehicles.js";

export function LiveMap(map, config) {
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
  this.historyLoaded = false;
  this.line = new RouteLine(map);
  this.board = new RouteBoard(function (id) {
    self.focus(id);
  });
  this.replay = new Replay(map);
  this.accuracy = new AccuracyPanel();
  $("rc-replay").addEventListener("click", function () {
    var v = self.selected === null ? undefined : self.vehicles.get(self.selected);
    if (v) self.replay.open(v.data);
  });
  $("vehicle-search").addEventListener("input", function () {
    self.applySearch();
  });
  setInterval(function () {
    self.refreshBoard();
  }, 1000);
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
  // On a phone the feed and the accuracy panel start folded, leaving the small panel to
  // the vehicle list.
  if (window.matchMedia && window.matchMedia(NARROW_SCREEN).matches) {
    $("feed").open = false;
    $("accuracy").open = false;
  }
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

installSocket(LiveMap);
installVehicles(LiveMap);
installEvents(LiveMap);
installMotion(LiveMap);

// -- workspace: search, board, event history, route line -------------------------------

/** Show only the vehicles whose name, id or next stop holds the search text. */
LiveMap.prototype.applySearch = function () {
  var needle = $("vehicle-search").value.trim().toLowerCase();
  this.vehicles.forEach(function (v) {
    var hay = [v.data.name, v.id, nextStopText(v.data.route) || ""].join(" ").toLowerCase();
    v.item.parentNode.hidden = needle !== "" && hay.indexOf(needle) < 0;
  });
};

LiveMap.prototype.refreshBoard = function () {
  var list = [];
  this.vehicles.forEach(function (v) {
    list.push(v.data);
  });
  this.board.update(list, this.nowMs());
  this.feed.setVans(list.map(function (d) {
    return [d.id, d.name || d.id];
  }).sort(function (a, b) {
    return a[1].localeCompare(b[1]);
  }));
};

/** Stored events from before the page opened, once per sign-in. */
LiveMap.prototype.loadHistory = function () {
  this.accuracy.start(); // signed in: the accuracy panel loads, then once a minute
  if (this.historyLoaded) return;
  this.historyLoaded = true;
  var self = this;
  fetch("/api/v1/events?limit=100", { credentials: "same-origin" })
    .then(function (r) {
      return r.ok ? r.json() : { events: [] };
    })
    .then(function (body) {
      self.feed.addHistory(body.events || [], {
        who: function (device) {
          var v = self.vehicles.get(device);
          return v ? v.data.name || v.id : device || "A vehicle";
        },
        stop: function (device, stopId) {
          return self.stopName(self.vehicles.get(device), stopId);
        }
      });
    })
    .catch(function () {
      self.historyLoaded = false;
    });
};
