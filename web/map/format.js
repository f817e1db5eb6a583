// The live map's shared pieces: constants, formatting, a route event told in words, and
// the two DOM helpers every module of the map uses. Pure functions of their arguments.
export const PROTOCOL_VERSION = 1;
export const BACKOFF_MIN_MS = 500;
export const BACKOFF_MAX_MS = 15000;
export const UNAUTHORIZED_CLOSE = 4401;
export const MAX_GLIDE_MS = 1500;
// A jump this long is a teleport (new fix after a gap), not something to animate.
export const MAX_GLIDE_METRES = 2000;
export const FEED_SHOWN = 50;
// More are kept than shown, so hiding the (frequent) ETA changes still leaves a full feed.
export const FEED_KEPT = 200;
// Names of stops on routes a vehicle has since replaced, for events that arrive late.
export const STOP_NAMES_KEPT = 5000;
export const STOP_STATUSES = ["pending", "arrived", "completed", "failed", "skipped"];
export const NARROW_SCREEN = "(max-width: 700px)";
export const EVENT_TONES = {
  "stop.arrived": "good",
  "stop.completed": "good",
  "route.back_on_route": "good",
  "route.completed": "good",
  "stop.failed": "bad",
  "route.off_route": "bad",
  "stop.skipped": "warn",
  "route.cancelled": "warn",
  "route.reassigned": "info"
};

export function $(id) {
  return document.getElementById(id);
}

export function el(tag, className, text) {
  var node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

export function formatSpeed(mps) {
  if (mps === null || mps === undefined) return "speed ?";
  return Math.round(mps * 3.6) + " km/h";
}

export function formatAge(seconds) {
  if (!isFinite(seconds)) return "?";
  var s = Math.max(0, Math.round(seconds));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.floor(s / 60) + " min ago";
  if (s < 86400) return Math.floor(s / 3600) + " h ago";
  return Math.floor(s / 86400) + " d ago";
}

export function formatClock(iso) {
  if (!iso) return "?";
  var d = new Date(iso);
  if (isNaN(d.getTime())) return "?";
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

export function isNumber(x) {
  return typeof x === "number" && isFinite(x);
}

// A local clock time, with the day in front when it is not today (plans span midnight).
export function formatWhen(iso, withSeconds) {
  if (!iso) return "?";
  var d = new Date(iso);
  if (isNaN(d.getTime())) return "?";
  var opts = { hour: "2-digit", minute: "2-digit" };
  if (withSeconds) opts.second = "2-digit";
  var clock = d.toLocaleTimeString([], opts);
  if (d.toDateString() === new Date().toDateString()) return clock;
  return d.toLocaleDateString([], { day: "numeric", month: "short" }) + " " + clock;
}

export function formatDuration(seconds) {
  var s = Math.round(Math.abs(seconds));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.round(s / 60) + " min";
  var m = Math.round(s / 60);
  return Math.floor(m / 60) + " h " + (m % 60) + " min";
}

export function compass(deg) {
  if (deg === null || deg === undefined) return "?";
  var names = ["N", "NE", "E", "SE", "S", "SW", "W", "NW"];
  return Math.round(deg) + "° " + names[Math.round(deg / 45) % 8];
}

// The next stop of a route summary, whether the server names it by id or inlines it.
export function nextStop(route) {
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

export function nextStopText(route) {
  var stop = nextStop(route);
  if (!stop) return null;
  var name = stop.name || "stop " + (stop.seq !== undefined ? stop.seq : stop.id);
  return "Next: " + name + " · ETA " + formatClock(stop.eta);
}

export function seqText(stop) {
  return stop.seq !== undefined && stop.seq !== null ? String(stop.seq) : "·";
}

export function stopLabel(stop) {
  return stop.name || stop.recipient || "stop " + seqText(stop);
}

export function statusOf(stop) {
  return STOP_STATUSES.indexOf(stop.status) >= 0 ? stop.status : "pending";
}

export function statusText(stop) {
  var status = statusOf(stop);
  var at = status === "arrived" ? stop.arrived_at : status === "pending" ? null : stop.completed_at;
  return at ? status + " at " + formatWhen(at) : status;
}

export function windowText(stop) {
  var from = stop.window_start, to = stop.window_end;
  if (from && to) return formatWhen(from) + "–" + formatWhen(to);
  if (from) return "from " + formatWhen(from);
  if (to) return "until " + formatWhen(to);
  return null;
}

export function etaChangeText(who, stop, data) {
  var text = who + ": ETA for " + stop;
  if (!data.eta) return text + " is unknown";
  if (!data.previous) return text + " is " + formatWhen(data.eta);
  var shift = (Date.parse(data.eta) - Date.parse(data.previous)) / 1000;
  var change = isNumber(shift) && Math.abs(shift) >= 1
    ? " (" + (shift > 0 ? "+" : "−") + formatDuration(shift) + ")" : "";
  return text + " moved to " + formatWhen(data.eta) + change;
}

/** A route event in words: who did what where ("Van 1 arrived at Bäckerei Huber"). */
export function describeEvent(ev, who, stop) {
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
    case "route.cancelled":
      return d.reason === "replaced"
        ? who + "'s route #" + ev.route_id + " ended: a new route started"
        : who + "'s route #" + ev.route_id + " was cancelled" + (d.note ? ": " + d.note : "");
    case "route.reassigned":
      return "Route #" + ev.route_id + " moved from " + (d.from || "?") + " to " + (d.to || who);
    default:
      return who + ": " + String(ev.type);
  }
}
