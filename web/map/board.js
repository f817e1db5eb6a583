// The route board: every active route's stops as on time / at risk / late / not visited,
// sortable by risk. Read from the same route summaries the live socket carries, so it
// changes as ETAs do; the rules are in stopRisk (pure, tested in the browser test).
import { $, formatWhen, seqText, stopLabel, statusOf } from "./format.js";

// A stop whose ETA comes within this of its window's end is at risk.
export const AT_RISK_S = 600;
// Without a window, the planned arrival plus these margins.
const PLANNED_AT_RISK_S = 300;
const PLANNED_LATE_S = 900;

export const RISKS = ["late", "at_risk", "not_visited", "on_time"];
const RISK_TEXT = { late: "late", at_risk: "at risk", not_visited: "not visited", on_time: "on time" };

function ms(iso) {
  const t = iso ? Date.parse(iso) : NaN;
  return isFinite(t) ? t : null;
}

/** How a stop stands: "on_time", "at_risk", "late" or "not_visited". */
export function stopRisk(stop, nowMs) {
  const status = statusOf(stop);
  if (status === "failed" || status === "skipped") return "not_visited";
  const end = ms(stop.window_end);
  const planned = ms(stop.planned_arrival);
  const lateAt = end !== null ? end : planned !== null ? planned + PLANNED_LATE_S * 1000 : null;
  const riskAt = end !== null ? end - AT_RISK_S * 1000 : planned !== null ? planned + PLANNED_AT_RISK_S * 1000 : null;
  // A stop the van dwelt at (stop.visited) is served as far as the window goes.
  if (status === "arrived" || status === "completed" || stop.status === "visited") {
    const at = ms(stop.arrived_at) || ms(stop.completed_at);
    return lateAt !== null && at !== null && at > lateAt ? "late" : "on_time";
  }
  if (lateAt === null) return "on_time";
  const eta = ms(stop.eta);
  const expected = eta !== null ? Math.max(eta, nowMs) : nowMs;
  if (expected > lateAt) return "late";
  if (expected > riskAt) return "at_risk";
  return "on_time";
}

export function RouteBoard(onPick) {
  this.onPick = onPick;
  this.vehicles = [];
  this.sort = "risk";
  var self = this;
  $("board-toggle").addEventListener("click", function () {
    self.toggle();
  });
  $("board-close").addEventListener("click", function () {
    self.toggle(false);
  });
  $("board-sort").addEventListener("change", function (e) {
    self.sort = e.target.value;
    self.render();
  });
}

RouteBoard.prototype.toggle = function (open) {
  var board = $("board");
  var show = open === undefined ? board.hidden : open;
  board.hidden = !show;
  $("board-toggle").setAttribute("aria-expanded", String(show));
  if (show) {
    this.render();
    $("board-sort").focus();
  } else {
    $("board-toggle").focus();
  }
};

/** The board's rows: one per stop of every vehicle's active route. */
RouteBoard.prototype.rows = function (nowMs) {
  var rows = [];
  this.vehicles.forEach(function (v) {
    var route = v.route;
    if (!route || !Array.isArray(route.stops) || (route.status && route.status !== "active")) return;
    route.stops.forEach(function (stop) {
      rows.push({ van: v.name || v.id, device: v.id, route: route.id, stop: stop, risk: stopRisk(stop, nowMs) });
    });
  });
  if (this.sort === "risk") {
    rows.sort(function (a, b) {
      var r = RISKS.indexOf(a.risk) - RISKS.indexOf(b.risk);
      if (r) return r;
      return (ms(a.stop.eta) || Infinity) - (ms(b.stop.eta) || Infinity);
    });
  } else {
    rows.sort(function (a, b) {
      return a.van.localeCompare(b.van) || a.stop.seq - b.stop.seq;
    });
  }
  return rows;
};

RouteBoard.prototype.update = function (vehicles, nowMs) {
  this.vehicles = vehicles;
  this.nowMs = nowMs;
  if (!$("board").hidden) this.render();
};

RouteBoard.prototype.render = function () {
  var now = this.nowMs || Date.now();
  var rows = this.rows(now);
  var count = { late: 0, at_risk: 0, not_visited: 0, on_time: 0 };
  var body = $("board-rows");
  var onPick = this.onPick;
  var nodes = rows.map(function (row) {
    count[row.risk] += 1;
    var s = row.stop;
    var tr = document.createElement("tr");
    tr.dataset.risk = row.risk;
    tr.dataset.device = row.device;
    tr.dataset.stopId = String(s.id);
    var done = s.completed_at || s.arrived_at;
    var when = statusOf(s) === "pending" ? (s.eta ? "ETA " + formatWhen(s.eta) : "ETA ?") : statusOf(s) + (done ? " " + formatWhen(done) : "");
    var slot = s.window_start || s.window_end
      ? (s.window_start ? formatWhen(s.window_start) : "") + "–" + (s.window_end ? formatWhen(s.window_end) : "")
      : s.planned_arrival ? "planned " + formatWhen(s.planned_arrival) : "–";
    var van = document.createElement("button");
    van.type = "button";
    van.className = "link-button";
    van.textContent = row.van;
    van.addEventListener("click", function () {
      onPick(row.device);
    });
    [van, seqText(s) + ". " + stopLabel(s), slot, when].forEach(function (value) {
      var td = document.createElement("td");
      if (typeof value === "string") td.textContent = value;
      else td.appendChild(value);
      tr.appendChild(td);
    });
    var risk = document.createElement("td");
    var tag = document.createElement("span");
    tag.className = "risk risk-" + row.risk;
    tag.textContent = RISK_TEXT[row.risk];
    risk.appendChild(tag);
    tr.appendChild(risk);
    return tr;
  });
  body.replaceChildren.apply(body, nodes);
  $("board-summary").textContent = rows.length
    ? count.late + " late · " + count.at_risk + " at risk · " + count.not_visited + " not visited · " + count.on_time + " on time"
    : "No active routes.";
};
