// The selected vehicle's route on the map: numbered stops, geofence, route card.
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
export function RouteView(map, popupOptions) {
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
