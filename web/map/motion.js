// Smooth movement: markers glide between fixes at the pace the vehicle moved.
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
}
