// A day's replay of one van: its stored track as a line, its stops of that day's routes,
// and a marker that moves along the track with a slider (or Play), keyboard-usable.
import { $, formatWhen } from "./format.js";
import { api } from "../lib/api.js";

const STEP_MS = 40;

export function Replay(map) {
  this.map = map;
  this.layer = L.layerGroup();
  // Its own pane above the route line, which keeps being redrawn as the van moves.
  map.createPane("replay").style.zIndex = 450;
  this.renderer = L.svg({ pane: "replay" });
  this.points = [];
  this.device = null;
  this.timer = null;
  var self = this;
  $("replay-close").addEventListener("click", function () {
    self.close();
  });
  $("replay-day").addEventListener("change", function () {
    self.load();
  });
  $("replay-slider").addEventListener("input", function (e) {
    self.seek(Number(e.target.value));
  });
  $("replay-play").addEventListener("click", function () {
    self.togglePlay();
  });
}

Replay.prototype.open = function (vehicle) {
  this.device = vehicle.id;
  $("replay-title").textContent = "Replay · " + (vehicle.name || vehicle.id);
  if (!$("replay-day").value) $("replay-day").value = new Date().toISOString().slice(0, 10);
  $("replay").hidden = false;
  this.map.closePopup();
  this.layer.addTo(this.map);
  this.load();
  $("replay-day").focus();
};

Replay.prototype.close = function () {
  this.stop();
  this.layer.clearLayers();
  this.layer.remove();
  $("replay").hidden = true;
  this.device = null;
};

Replay.prototype.load = function () {
  var self = this;
  var day = $("replay-day").value;
  var from = day + "T00:00:00Z";
  var to = new Date(Date.parse(from) + 86400000).toISOString();
  var id = encodeURIComponent(this.device);
  this.stop();
  this.layer.clearLayers();
  $("replay-status").textContent = "Loading…";
  Promise.all([
    api("GET", "/api/v1/devices/" + id + "/positions?from=" + encodeURIComponent(from) + "&to=" + encodeURIComponent(to)),
    api("GET", "/api/v1/routes?device=" + id + "&day=" + day + "&limit=200")
  ])
    .then(function (results) {
      self.show(results[0].features, results[1].routes);
    })
    .catch(function (err) {
      $("replay-status").textContent = err.message;
    });
};

Replay.prototype.show = function (features, routes) {
  this.points = features.map(function (f) {
    return { lat: f.geometry.coordinates[1], lon: f.geometry.coordinates[0], time: f.properties.time };
  });
  var stops = 0;
  var layer = this.layer;
  var self = this;
  routes.forEach(function (route) {
    route.stops.forEach(function (s) {
      stops += 1;
      L.circleMarker([s.lat, s.lon], {
        radius: 7,
        renderer: self.renderer,
        className: "replay-stop stop-" + s.status,
        color: "#1f2933",
        weight: 1,
        fillOpacity: 0.9
      })
        .bindTooltip(s.seq + ". " + (s.name || "stop") + " · " + s.status)
        .addTo(layer);
    });
  });
  var slider = $("replay-slider");
  slider.max = String(Math.max(0, this.points.length - 1));
  slider.value = "0";
  if (this.points.length === 0) {
    $("replay-status").textContent = "No positions that day · " + stops + " stops";
    $("replay-time").textContent = "";
    return;
  }
  var line = L.polyline(this.points.map(function (p) {
    return [p.lat, p.lon];
  }), { className: "replay-track", color: "#7b2cbf", weight: 5, opacity: 0.9, renderer: this.renderer }).addTo(layer);
  this.marker = L.circleMarker([this.points[0].lat, this.points[0].lon], {
    radius: 8, className: "replay-marker", color: "#7b2cbf", fillOpacity: 1, renderer: this.renderer
  }).addTo(layer);
  // The whole day: its track and its stops.
  this.map.fitBounds(line.getBounds().extend(L.featureGroup(layer.getLayers()).getBounds()), {
    padding: [40, 40],
    maxZoom: 16
  });
  $("replay-status").textContent = this.points.length + " positions · " + stops + " stops";
  this.seek(0);
};

Replay.prototype.seek = function (k) {
  var p = this.points[k];
  if (!p || !this.marker) return;
  this.marker.setLatLng([p.lat, p.lon]);
  $("replay-slider").value = String(k);
  $("replay-time").textContent = formatWhen(p.time, true);
};

Replay.prototype.togglePlay = function () {
  if (this.timer) {
    this.stop();
    return;
  }
  var self = this;
  var slider = $("replay-slider");
  if (Number(slider.value) >= this.points.length - 1) slider.value = "0";
  $("replay-play").textContent = "Pause";
  this.timer = setInterval(function () {
    var k = Number(slider.value) + 1;
    if (k >= self.points.length) {
      self.stop();
      return;
    }
    self.seek(k);
  }, STEP_MS);
};

Replay.prototype.stop = function () {
  clearInterval(this.timer);
  this.timer = null;
  $("replay-play").textContent = "Play";
};
