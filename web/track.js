/*
 * The customer's tracking page: one stop, its phase and ETA, and the vehicle while it is on
 * its way here. The server decides what this page may know (it never receives other stops,
 * the route or the driver's identity); this script only shows it.
 *
 * The first state comes with the page (data-state); GET /ws/track/{token} sends a snapshot
 * on connect, then a delta whenever the state changes. Each message carries the whole
 * state, so showing the latest one is all there is to do. Once the stop is done nothing
 * more will come: the socket is closed and not reopened.
 */
(() => {
  "use strict";

  const STEPS = ["scheduled", "out_for_delivery", "next_stop", "arriving", "arrived", "done"];
  const DONE = new Set(["delivered", "failed", "cancelled"]);
  const LABELS = {
    scheduled: "Scheduled",
    out_for_delivery: "Out for delivery",
    next_stop: "You are the next stop",
    arriving: "Arriving soon",
    arrived: "The driver has arrived",
    delivered: "Delivered",
    failed: "Not delivered",
    cancelled: "Cancelled",
  };
  const MIN_BACKOFF_MS = 1000;
  const MAX_BACKOFF_MS = 30000;
  const PING_MS = 25000;

  const $ = (id) => document.getElementById(id);
  const el = {
    destination: $("destination"),
    live: $("live"),
    phase: $("phase"),
    etaBlock: $("eta-block"),
    etaTime: $("eta-time"),
    etaCountdown: $("eta-countdown"),
    etaRange: $("eta-range"),
    approximate: $("approximate"),
    outcome: $("outcome"),
    vehicleNote: $("vehicle-note"),
    map: $("map"),
    timeline: $("timeline"),
    finalStep: $("final-step"),
  };

  const token = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
  let current = null;
  let socket = null;
  let backoffMs = MIN_BACKOFF_MS;
  let pingTimer = null;

  // --- map ----------------------------------------------------------------------------------

  const map = L.map(el.map, { zoomControl: true, attributionControl: true });
  L.tileLayer(document.body.dataset.tileUrl, {
    attribution: document.body.dataset.tileAttribution,
    maxZoom: 19,
  }).addTo(map);
  let destinationMarker = null;
  let vehicleMarker = null;
  let fitted = false;

  function showDestination(dest) {
    const at = [dest.lat, dest.lon];
    if (!destinationMarker) {
      destinationMarker = L.circleMarker(at, {
        radius: 10,
        weight: 3,
        color: "#ffffff",
        fillColor: "#c53030",
        fillOpacity: 1,
        className: "destination-marker",
      }).addTo(map);
      destinationMarker.bindTooltip("Delivery address");
      map.setView(at, 15);
    } else {
      destinationMarker.setLatLng(at);
    }
  }

  function showVehicle(vehicle, dest) {
    if (!vehicle) {
      if (vehicleMarker) {
        vehicleMarker.remove();
        vehicleMarker = null;
      }
      el.map.dataset.vehicle = "hidden";
      el.vehicleNote.textContent = "";
      return;
    }
    const at = [vehicle.lat, vehicle.lon];
    if (!vehicleMarker) {
      vehicleMarker = L.circleMarker(at, {
        radius: 9,
        weight: 3,
        color: "#ffffff",
        fillColor: "#2563eb",
        fillOpacity: 1,
        className: "vehicle-marker",
      }).addTo(map);
      vehicleMarker.bindTooltip("Your delivery vehicle");
    } else {
      vehicleMarker.setLatLng(at);
    }
    el.map.dataset.vehicle = "shown";
    el.map.dataset.vehicleLat = String(vehicle.lat);
    el.map.dataset.vehicleLon = String(vehicle.lon);
    // Frame both once; afterwards only follow the vehicle when it leaves the view, so a
    // customer who zoomed in is not thrown around.
    if (!fitted) {
      map.fitBounds(L.latLngBounds([at, [dest.lat, dest.lon]]), { padding: [40, 40], maxZoom: 16 });
      fitted = true;
    } else if (!map.getBounds().contains(at)) {
      map.panTo(at);
    }
    el.vehicleNote.dataset.time = vehicle.time;
    updateVehicleAge();
  }

  function updateVehicleAge() {
    const time = el.vehicleNote.dataset.time;
    if (!time || el.map.dataset.vehicle !== "shown") return;
    const seconds = Math.max(0, Math.round((Date.now() - Date.parse(time)) / 1000));
    el.vehicleNote.textContent =
      seconds < 60
        ? "Vehicle position updated just now."
        : `Vehicle position updated ${Math.round(seconds / 60)} min ago.`;
  }

  // --- state --------------------------------------------------------------------------------

  function clock(iso) {
    return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function countdown(iso) {
    const seconds = Math.round((Date.parse(iso) - Date.now()) / 1000);
    if (seconds <= 30) return "any minute now";
    if (seconds < 90) return "about 1 min";
    const minutes = Math.round(seconds / 60);
    if (minutes < 90) return `${minutes} min`;
    const hours = Math.floor(minutes / 60);
    return `${hours} h ${minutes % 60} min`;
  }

  function renderTimeline(phase) {
    const at = DONE.has(phase) ? STEPS.length - 1 : STEPS.indexOf(phase);
    el.finalStep.textContent = DONE.has(phase) ? LABELS[phase] : LABELS.delivered;
    el.finalStep.classList.toggle("bad", phase === "failed" || phase === "cancelled");
    for (const li of el.timeline.children) {
      const k = STEPS.indexOf(li.dataset.step);
      li.classList.toggle("past", k < at);
      li.classList.toggle("now", k === at);
      if (k === at) li.setAttribute("aria-current", "step");
      else li.removeAttribute("aria-current");
    }
  }

  function render(state) {
    current = state;
    const done = DONE.has(state.phase);
    document.body.dataset.phase = state.phase;
    el.destination.textContent = state.destination.name || "Your delivery";
    el.phase.textContent = LABELS[state.phase] || state.phase;
    el.etaBlock.hidden = !state.eta;
    el.approximate.hidden = !(state.eta && state.approximate);
    if (state.eta) {
      el.etaTime.textContent = clock(state.eta);
      el.etaTime.dataset.eta = state.eta;
      el.etaCountdown.textContent = countdown(state.eta);
    }
    // The 80 % interval, when it spans more than the minute the clock shows.
    const range = state.eta && state.eta_earliest && state.eta_latest
      && clock(state.eta_earliest) !== clock(state.eta_latest);
    el.etaRange.hidden = !range;
    if (range) {
      el.etaRange.textContent = `Most likely between ${clock(state.eta_earliest)} and ${clock(state.eta_latest)}.`;
    }
    if (state.phase === "delivered" && state.done_at) {
      el.outcome.textContent = `Delivered at ${clock(state.done_at)}.`;
    } else if (state.phase === "failed") {
      el.outcome.textContent = state.done_at
        ? `The delivery could not be completed (${clock(state.done_at)}).`
        : "The delivery could not be completed.";
    } else if (state.phase === "cancelled") {
      el.outcome.textContent = "This delivery was cancelled.";
    } else if (state.phase === "arrived" && state.arrived_at) {
      el.outcome.textContent = `The driver arrived at ${clock(state.arrived_at)}.`;
    } else {
      el.outcome.textContent = "";
    }
    el.outcome.hidden = !el.outcome.textContent;
    showDestination(state.destination);
    showVehicle(done ? null : state.vehicle, state.destination);
    renderTimeline(state.phase);
    // The doorstep part of the page (track_doorstep.js) follows the phase.
    document.dispatchEvent(new CustomEvent("tracking:state", { detail: state }));
    if (done && socket) {
      // Nothing more will come for a finished delivery.
      const finished = socket;
      socket = null;
      finished.close(1000, "done");
      setLive("off", "finished");
    }
  }

  // --- live feed ----------------------------------------------------------------------------

  function setLive(kind, text) {
    el.live.className = `live live-${kind}`;
    el.live.textContent = text;
  }

  function connect() {
    if (current && DONE.has(current.phase)) {
      setLive("off", "finished");
      return;
    }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/ws/track/${encodeURIComponent(token)}`);
    socket = ws;
    ws.onopen = () => {
      backoffMs = MIN_BACKOFF_MS;
      setLive("on", "live");
      clearInterval(pingTimer);
      pingTimer = setInterval(() => {
        if (ws.readyState === WebSocket.OPEN) ws.send('{"type":"ping"}');
      }, PING_MS);
    };
    ws.onmessage = (msg) => {
      let data;
      try {
        data = JSON.parse(msg.data);
      } catch (_) {
        return;
      }
      if ((data.type === "snapshot" || data.type === "delta") && data.tracking) {
        render(data.tracking);
      }
    };
    ws.onclose = () => {
      clearInterval(pingTimer);
      if (socket !== ws) return; // closed on purpose
      socket = null;
      if (current && DONE.has(current.phase)) return;
      setLive("off", "reconnecting");
      setTimeout(checkThenConnect, backoffMs);
      backoffMs = Math.min(backoffMs * 2, MAX_BACKOFF_MS);
    };
  }

  async function checkThenConnect() {
    // A refused handshake looks like any network error; the page itself tells whether the
    // link is gone (404) or the network is.
    try {
      const r = await fetch(location.href, { method: "HEAD", cache: "no-store" });
      if (r.status === 404) {
        setLive("off", "link expired");
        el.phase.textContent = "This tracking link has expired.";
        return;
      }
    } catch (_) {
      // offline: try the socket anyway, it backs off
    }
    connect();
  }

  setInterval(() => {
    if (current && current.eta) el.etaCountdown.textContent = countdown(current.eta);
    updateVehicleAge();
  }, 1000);

  try {
    render(JSON.parse(document.body.dataset.state));
  } catch (_) {
    // the feed's snapshot fills the page
  }
  connect();
})();
