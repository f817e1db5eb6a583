// Route events from the socket into the feed, and focusing a vehicle.
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

export function install(LiveMap) {
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
}
