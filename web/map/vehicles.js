// Vehicles: one marker and one list entry each, their popups, selection and framing.
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
  // ---- vehicles -------------------------------------------------------------------

  LiveMap.prototype.applySnapshot = function (list) {
    var seen = new Set();
    this.inSnapshot = true;
    list.forEach(function (v) {
      seen.add(v.id);
      this.upsert(v);
    }, this);
    this.inSnapshot = false;
    var self = this;
    Array.from(this.vehicles.keys()).forEach(function (id) {
      if (!seen.has(id)) self.remove(id);
    });
    this.updateCount();
    this.autoFit();
  };

  LiveMap.prototype.upsert = function (data) {
    if (!data || data.id === undefined || !isFinite(data.lat) || !isFinite(data.lon)) return;
    var v = this.vehicles.get(data.id);
    if (!v) {
      v = this.create(data);
      this.vehicles.set(data.id, v);
      if (!this.inSnapshot) {
        this.updateCount();
        this.autoFit();
      }
    } else {
      var previous = v.data;
      v.data = data;
      // A fix older than the one shown (late delivery) never moves the marker backward.
      if (Date.parse(data.time) >= Date.parse(previous.time)) {
        this.glide(v, previous, data);
      } else {
        v.data = previous;
      }
      this.rememberStops(previous.route, v.data.route);
    }
    this.render(v);
    if (v.id === this.selected) this.showSelected(v.data);
  };

  // Keep the stop names of a route being replaced, for its events still to come.
  LiveMap.prototype.rememberStops = function (before, after) {
    if (!before || !Array.isArray(before.stops) || (after && after.id === before.id)) return;
    before.stops.forEach(function (stop) {
      if (!stop || stop.id === undefined) return;
      this.stopNames.delete(stop.id);
      this.stopNames.set(stop.id, stopLabel(stop));
    }, this);
    while (this.stopNames.size > STOP_NAMES_KEPT) {
      this.stopNames.delete(this.stopNames.keys().next().value);
    }
  };

  LiveMap.prototype.create = function (data) {
    var self = this;
    var body = el("div", "vm-body");
    var arrow = el("div", "vm-arrow");
    var label = el("span", "vm-label", data.name || data.id);
    var badge = el("span", "vm-badge", "off route");
    var root = el("div");
    root.appendChild(arrow);
    root.appendChild(body);
    root.appendChild(label);
    root.appendChild(badge);
    var icon = L.divIcon({ className: "vehicle-marker", html: root, iconSize: [22, 22], iconAnchor: [11, 11] });
    var marker = L.marker([data.lat, data.lon], { icon: icon, title: data.name || data.id, keyboard: false });
    var v = { id: data.id, data: data, marker: marker, item: null };
    marker.bindPopup(function () {
      return self.popup(v);
    }, this.popupOptions);
    marker.on("click", function () {
      self.select(v.id);
    });
    marker.addTo(this.map);
    marker.getElement().dataset.id = data.id;

    var li = el("li");
    var button = el("button", "vehicle-item");
    button.type = "button";
    button.dataset.id = data.id;
    button.appendChild(el("span", "v-name"));
    button.appendChild(el("span", "v-meta"));
    button.appendChild(el("span", "v-next"));
    button.addEventListener("click", function () {
      self.focus(v.id);
    });
    li.appendChild(button);
    v.item = button;
    this.insertSorted(li, data.name || data.id);
    return v;
  };

  LiveMap.prototype.insertSorted = function (li, name) {
    var list = $("vehicle-list");
    li.dataset.sortKey = String(name).toLowerCase();
    var before = null;
    for (var i = 0; i < list.children.length; i++) {
      if (list.children[i].dataset.sortKey > li.dataset.sortKey) {
        before = list.children[i];
        break;
      }
    }
    list.insertBefore(li, before);
  };

  LiveMap.prototype.remove = function (id) {
    var v = this.vehicles.get(id);
    if (!v) return;
    if (id === this.selected) this.select(null);
    this.gliding.delete(v);
    v.marker.remove();
    if (v.item && v.item.parentNode) v.item.parentNode.remove();
    this.vehicles.delete(id);
    this.updateCount();
  };

  LiveMap.prototype.updateCount = function () {
    var n = this.vehicles.size;
    $("vehicle-count").textContent = n === 0 ? "no vehicles" : n === 1 ? "1 vehicle" : n + " vehicles";
  };

  LiveMap.prototype.isStale = function (data) {
    var age = (this.nowMs() - Date.parse(data.time)) / 1000;
    return !(age <= this.config.staleAfterS);
  };

  LiveMap.prototype.render = function (v) {
    var d = v.data;
    var stale = this.isStale(d);
    var age = (this.nowMs() - Date.parse(d.time)) / 1000;
    var offRoute = Boolean(d.route && d.route.off_route);
    var markerEl = v.marker.getElement();
    if (markerEl) {
      markerEl.classList.toggle("stale", stale);
      markerEl.classList.toggle("off-route", offRoute);
      markerEl.classList.toggle("selected", v.id === this.selected);
      markerEl.classList.toggle("no-heading", d.course === null || d.course === undefined);
      markerEl.querySelector(".vm-label").textContent = d.name || d.id;
      if (d.course !== null && d.course !== undefined) {
        markerEl.querySelector(".vm-arrow").style.transform = "rotate(" + d.course + "deg)";
      }
    }
    v.item.classList.toggle("stale", stale);
    v.item.querySelector(".v-name").textContent = d.name || d.id;
    v.item.querySelector(".v-meta").textContent =
      formatSpeed(d.speed) + " · " + formatAge(age) + (stale ? " · stale" : "");
    var next = v.item.querySelector(".v-next");
    var text = nextStopText(d.route);
    next.textContent = text || "";
    next.hidden = !text && !offRoute;
    if (offRoute) next.appendChild(el("span", "v-offroute", text ? " · off route" : "off route"));
    if (v.marker.isPopupOpen()) v.marker.setPopupContent(this.popup(v));
  };

  LiveMap.prototype.popup = function (v) {
    var d = v.data;
    var box = el("div", "vehicle-popup");
    box.appendChild(el("strong", null, d.name || d.id));
    var dl = el("dl");
    function row(term, value) {
      dl.appendChild(el("dt", null, term));
      dl.appendChild(el("dd", null, value));
    }
    row("Vehicle", d.id);
    row("Speed", formatSpeed(d.speed));
    row("Heading", compass(d.course));
    row("Fix", formatAge((this.nowMs() - Date.parse(d.time)) / 1000) +
      (this.isStale(d) ? " (stale)" : ""));
    if (d.accuracy !== null && d.accuracy !== undefined) row("Accuracy", "± " + Math.round(d.accuracy) + " m");
    var stop = nextStop(d.route);
    if (stop) {
      row("Next stop", stop.name || String(stop.id));
      row("ETA", formatClock(stop.eta));
    }
    if (d.route && d.route.off_route) row("Route", "off route");
    box.appendChild(dl);
    return box;
  };

  LiveMap.prototype.refreshAges = function () {
    this.vehicles.forEach(this.render, this);
  };

  /** Draw `id`'s route and mark it in the list and on the map; null clears the selection. */
  LiveMap.prototype.select = function (id) {
    var v = id === null || id === undefined ? undefined : this.vehicles.get(id);
    var next = v ? v.id : null;
    if (next === this.selected) return;
    var old = this.selected === null ? undefined : this.vehicles.get(this.selected);
    this.selected = next;
    if (old) this.markSelected(old, false);
    if (v) {
      this.markSelected(v, true);
      v.item.scrollIntoView({ block: "nearest" });
    }
    this.showSelected(v ? v.data : null);
    if (!v) this.replay.close();
  };

  // The selected vehicle's stops, card and route line.
  LiveMap.prototype.showSelected = function (data) {
    this.route.show(data);
    var route = data && data.route && typeof data.route === "object" ? data.route : null;
    this.line.show(route ? route.id : null, function (line) {
      var text = line.lengthM
        ? Math.round(line.drivenM / 100) / 10 + " of " + Math.round(line.lengthM / 100) / 10 + " km driven"
        : "";
      $("rc-line").textContent = text;
      $("rc-line").hidden = !text;
    });
    if (!route) $("rc-line").hidden = true;
  };

  LiveMap.prototype.markSelected = function (v, on) {
    v.item.classList.toggle("selected", on);
    if (on) v.item.setAttribute("aria-current", "true");
    else v.item.removeAttribute("aria-current");
    var markerEl = v.marker.getElement();
    if (markerEl) markerEl.classList.toggle("selected", on);
    v.marker.setZIndexOffset(on ? 1000 : 0);
  };

  /** Frame the selected vehicle and its stops, clear of the route card. */
  LiveMap.prototype.fitRoute = function () {
    var v = this.selected === null ? undefined : this.vehicles.get(this.selected);
    if (!v) return;
    var points = this.route.points();
    points.push(v.marker.getLatLng());
    var card = $("route-card");
    var narrow = window.matchMedia && window.matchMedia(NARROW_SCREEN).matches;
    var options = { maxZoom: 17, paddingTopLeft: [30, 30], paddingBottomRight: [30, 30] };
    if (narrow) options.paddingTopLeft = [30, card.offsetHeight + 20];
    else options.paddingBottomRight = [card.offsetWidth + 30, 30];
    this.userMoved = true;
    var map = this.map;
    map.closePopup(); // a popup left open would sit wherever its marker lands
    this.settled(function () {
      map.fitBounds(L.latLngBounds(points), options);
    });
  };

  // Leaflet ignores a new view while a zoom animation runs: wait for it to end.
  LiveMap.prototype.settled = function (move) {
    if (this.zooming) this.map.once("zoomend", move);
    else move();
  };
}
