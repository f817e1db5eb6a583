// The "Live ETA accuracy" panel: how close the ETAs shown were to the arrivals, by how far
// ahead they were shown, from GET /api/v1/accuracy (the last 24 h) once a minute. The
// server scores every arrival against the ETAs its stop's events published before it.
import { $, el } from "./format.js";

export const ACCURACY_REFRESH_MS = 60000;
const WINDOW_MS = 24 * 3600 * 1000;

function seconds(v) {
  return typeof v === "number" && isFinite(v) ? Math.round(v) + " s" : "–";
}

function percent(v) {
  return typeof v === "number" && isFinite(v) ? Math.round(v * 100) + " %" : "–";
}

/** The rows the panel shows for an /api/v1/accuracy answer (pure; tested in the browser). */
export function accuracyRows(body) {
  return (body.buckets || []).map(function (b) {
    return {
      horizon: b.horizon,
      count: b.count || 0,
      mae: seconds(b.mae_s),
      inside: percent(b.coverage),
      accurate: percent(b.accurate),
    };
  });
}

export function AccuracyPanel() {
  this.timer = null;
}

/** Load now and every minute (called once signed in). */
AccuracyPanel.prototype.start = function () {
  if (this.timer !== null) return;
  var self = this;
  this.load();
  this.timer = setInterval(function () {
    self.load();
  }, ACCURACY_REFRESH_MS);
};

AccuracyPanel.prototype.load = function () {
  var self = this;
  var since = new Date(Date.now() - WINDOW_MS).toISOString();
  return fetch("/api/v1/accuracy?since=" + encodeURIComponent(since), { credentials: "same-origin" })
    .then(function (r) {
      return r.ok ? r.json() : null;
    })
    .then(function (body) {
      if (body) self.render(body);
    })
    .catch(function () {
      // Down for a moment: the next round tries again, the figures stay.
    });
};

AccuracyPanel.prototype.render = function (body) {
  var rows = $("accuracy-rows");
  rows.textContent = "";
  accuracyRows(body).forEach(function (r) {
    var tr = el("tr", "acc-row");
    tr.dataset.horizon = r.horizon;
    [r.horizon, r.mae, r.inside, r.accurate].forEach(function (text) {
      tr.appendChild(el("td", null, text));
    });
    tr.title = r.count + " ETAs scored";
    rows.appendChild(tr);
  });
  var score = body.score;
  $("accuracy-score").textContent =
    typeof score === "number" ? "score " + Math.round(score * 100) + " %" : "";
  $("accuracy-summary").textContent = body.arrivals
    ? body.arrivals + " arrivals in the last 24 h"
    : "No arrivals in the last 24 h yet.";
};
