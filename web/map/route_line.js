// The selected route's line: the planned path from the server (on real roads when the
// route was sent with a road path), the part driven grey and the part ahead blue. It is
// fetched again when the route changes, and at most every few seconds as the van moves.
const REFRESH_MS = 5000;

export function RouteLine(map) {
  this.map = map;
  this.layer = L.layerGroup().addTo(map);
  this.routeId = null;
  this.fetchedAt = 0;
  this.pending = null;
  this.lengthM = null;
  this.drivenM = null;
}

RouteLine.prototype.clear = function () {
  clearTimeout(this.trailing);
  this.trailing = null;
  this.layer.clearLayers();
  this.routeId = null;
  this.fetchedAt = 0;
  this.lengthM = null;
  this.drivenM = null;
};

/** Show route `routeId`'s line (null clears it); cheap to call on every update. */
RouteLine.prototype.show = function (routeId, onLoaded) {
  if (routeId === null || routeId === undefined) {
    this.clear();
    return;
  }
  var fresh = routeId !== this.routeId;
  var self = this;
  if (!fresh && Date.now() - this.fetchedAt < REFRESH_MS) {
    // Updates came faster than the refresh: fetch once more when it is due, so the line
    // ends where the van's last update left it.
    if (!this.trailing) {
      this.trailing = setTimeout(function () {
        self.trailing = null;
        if (self.routeId === routeId) self.show(routeId, onLoaded);
      }, REFRESH_MS - (Date.now() - this.fetchedAt));
    }
    return;
  }
  if (fresh) this.clear();
  this.routeId = routeId;
  this.fetchedAt = Date.now();
  fetch("/api/v1/routes/" + encodeURIComponent(routeId) + "/path", { credentials: "same-origin" })
    .then(function (r) {
      return r.ok ? r.json() : null;
    })
    .then(function (body) {
      if (!body || self.routeId !== routeId) return;
      self.draw(body);
      if (onLoaded) onLoaded(self);
    })
    .catch(function () {});
};

RouteLine.prototype.draw = function (body) {
  this.layer.clearLayers();
  this.lengthM = body.length_m;
  this.drivenM = body.driven_m;
  var layer = this.layer;
  (body.features || []).forEach(function (f) {
    if (f.properties.part === "planned") return; // drawn as its two parts
    var latlngs = f.geometry.coordinates.map(function (c) {
      return [c[1], c[0]];
    });
    var driven = f.properties.part === "driven";
    L.polyline(latlngs, {
      className: "route-line route-line-" + f.properties.part,
      weight: driven ? 4 : 5,
      opacity: driven ? 0.7 : 0.85,
      dashArray: driven ? null : "8 6",
      interactive: false
    }).addTo(layer);
  });
};
