// The event feed: recent route events in words, newest first.
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

// ---- the event feed ---------------------------------------------------------------

/**
 * Recent route events, newest first, at most FEED_SHOWN on screen. Each entry's node is
 * built once; rendering only inserts new nodes and drops the oldest, so a screen reader
 * announces each event once and a busy fleet costs a few DOM operations per frame.
 */
export function EventFeed(onPick) {
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
