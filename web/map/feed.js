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
  ["feed-eta", "feed-van", "feed-type"].forEach(function (id) {
    $(id).addEventListener("change", function () {
      self.render();
    });
  });
  this.keys = new Set(); // what is listed already: history and live may overlap
}

function eventKey(ev) {
  return [ev.type, ev.time, ev.device, ev.route_id, ev.stop_id].join("|");
}

/** Stored events from before the page opened (newest first), listed after the live ones. */
EventFeed.prototype.addHistory = function (events, name) {
  events.forEach(function (ev) {
    var key = eventKey(ev);
    if (this.keys.has(key)) return;
    this.keys.add(key);
    var who = name.who(ev.device);
    this.entries.push({
      type: ev.type,
      device: ev.device,
      time: ev.time,
      who: who,
      text: describeEvent(ev, who, name.stop(ev.device, ev.stop_id)),
      added: 0,
      node: null
    });
  }, this);
  // After the live ones, which all arrived since the page opened (history is older).
  if (this.entries.length > FEED_KEPT) this.entries.length = FEED_KEPT;
  this.render();
};

/** The vans the van filter offers (id -> name). */
EventFeed.prototype.setVans = function (vans) {
  var select = $("feed-van");
  var chosen = select.value;
  var options = [["", "all vans"]].concat(vans);
  if (select.options.length === options.length && options.every(function (o, k) {
    return select.options[k].value === o[0] && select.options[k].textContent === o[1];
  })) return;
  select.replaceChildren.apply(select, options.map(function (o) {
    var option = document.createElement("option");
    option.value = o[0];
    option.textContent = o[1];
    return option;
  }));
  select.value = chosen;
};

/** Note one event; `who` and `stop` are the names it is told with (known now). */
EventFeed.prototype.add = function (ev, who, stop) {
  var key = eventKey(ev);
  if (this.keys.has(key)) return; // already listed from the stored history
  this.keys.add(key);
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
  this.keys.clear();
  this.render();
};

EventFeed.prototype.render = function () {
  var withEta = $("feed-eta").checked;
  var van = $("feed-van").value;
  var type = $("feed-type").value;
  var shown = [];
  for (var i = 0; i < this.entries.length && shown.length < FEED_SHOWN; i++) {
    var entry = this.entries[i];
    var wanted = (withEta || entry.type !== "stop.eta_changed") &&
      (!van || entry.device === van) && (!type || entry.type === type);
    if (wanted) {
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
