// Planning page: a day's orders (CSV drag-and-drop import, add, edit, filter), depots and
// vans; Optimise proposes routes (drawn one colour per van with distance, duration, load,
// lateness, and the unassigned orders with reasons); Dispatch sends them to the drivers.
// Before dispatch the proposal can be edited: a stop dragged within its card is reordered
// (where it is dropped matters), onto another van's card moved there, onto the unassigned
// list taken off the routes; its up/down buttons and "to van" menu do the same from the
// keyboard. The server re-evaluates the changed routes (arrivals, distance, load, and what
// a forced order breaks) and the cards and map lines are drawn again from its answer.
// Once dispatched, a stop dragged to another van (or moved with its "to van" menu) is moved
// by the server, which puts it where it adds least time and re-evaluates both routes.
import { decode } from "/static/vendor/polyline/index.esm.js";
import { api, currentRole, signIn } from "./lib/api.js";
import { clock, el, km } from "./lib/format.js";
import { createEditor, planVans, stopName } from "./plan_edit.js";

const $ = (id) => document.getElementById(id);
const COLOURS = ["#2563eb", "#d97706", "#1f9d55", "#c53030", "#7b2cbf", "#0891b2", "#be185d", "#4d7c0f"];
const state = { orders: [], plan: null, dispatched: null, devices: [], depots: [], vans: [] };
let map = null;
let layer = null;

function notify(text) {
  $("error").textContent = "";
  $("notice").textContent = text;
}

async function attempt(action) {
  try {
    await action();
  } catch (err) {
    $("notice").textContent = "";
    $("error").textContent = err.message;
    if (err.status === 401) showSignIn();
  }
}

function showSignIn() {
  $("signin").hidden = false;
  $("app").hidden = true;
  $("signin-token").focus();
}

async function showApp(role) {
  $("signin").hidden = true;
  $("app").hidden = false;
  $("who").textContent = "signed in as " + role;
  if (!map) {
    map = L.map("plan-map", { zoomControl: true }).setView([43.73, 7.42], 13);
    layer = L.layerGroup().addTo(map);
  }
  await Promise.all([loadOrders(), loadFleet()]);
}

const day = () => $("plan-day").value;

// -- orders ----------------------------------------------------------------------------

async function loadOrders() {
  const page = await api("GET", `/api/v1/orders?date=${day()}&limit=1000`);
  state.orders = page.orders;
  renderOrders();
}

function windowText(order) {
  return order.windows.length ? order.windows.map((w) => clock(w[0]) + "–" + clock(w[1])).join(", ") : "any time";
}

function renderOrders() {
  const needle = $("order-filter").value.trim().toLowerCase();
  const shown = state.orders.filter((o) =>
    !needle || [o.external_id, o.recipient, o.address, o.status].join(" ").toLowerCase().includes(needle));
  $("order-total").textContent = `${shown.length} of ${state.orders.length} orders on ${day()}`;
  $("order-table").tBodies[0].replaceChildren(...shown.map((o) =>
    el("tr", { dataset: { order: String(o.id) } },
      el("td", {}, o.external_id || "#" + o.id),
      el("td", {}, o.recipient),
      el("td", {}, o.address || (o.lat !== null ? `${o.lat.toFixed(4)}, ${o.lon.toFixed(4)}` : "–")),
      el("td", {}, windowText(o)),
      el("td", {}, String(o.size.parcels ?? "–")),
      el("td", {}, o.status),
      el("td", {}, ["unplanned", "planned"].includes(o.status)
        ? el("button", { type: "button", class: "btn", onclick: () => editOrder(o) }, "Edit")
        : ""),
    )));
}

function editOrder(order) {
  $("order-id").value = String(order.id);
  $("o-recipient").value = order.recipient;
  $("o-address").value = order.address;
  $("o-lat").value = order.lat ?? "";
  $("o-lon").value = order.lon ?? "";
  const w = order.windows[0];
  $("o-from").value = w ? w[0].slice(11, 16) : "";
  $("o-to").value = w ? w[1].slice(11, 16) : "";
  $("o-parcels").value = order.size.parcels ?? "";
  $("order-save").textContent = "Save order";
  $("order-cancel-edit").hidden = false;
  $("o-recipient").focus();
}

function stopEditing() {
  $("order-form").reset();
  $("order-id").value = "";
  $("order-save").textContent = "Add order";
  $("order-cancel-edit").hidden = true;
}

function orderBody() {
  const body = { recipient: $("o-recipient").value.trim(), address: $("o-address").value.trim() };
  if ($("o-lat").value !== "") body.lat = Number($("o-lat").value);
  if ($("o-lon").value !== "") body.lon = Number($("o-lon").value);
  if ($("o-from").value && $("o-to").value) {
    body.windows = [[`${day()}T${$("o-from").value}:00Z`, `${day()}T${$("o-to").value}:00Z`]];
  }
  if ($("o-parcels").value !== "") body.size = { parcels: Number($("o-parcels").value) };
  return body;
}

async function importCsv(file) {
  const text = await file.text();
  const response = await fetch(`/api/v1/orders/import?on_error=skip`, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "text/csv" },
    body: text,
  });
  const report = await response.json();
  if (!response.ok && !report.errors) throw new Error(report.message || "import refused");
  const problems = report.errors || [];
  $("import-report").replaceChildren(...problems.map((e) => el("li", {}, `line ${e.line}, ${e.field}: ${e.message}`)));
  const imported = report.imported ?? report.created ?? (report.orders ? report.orders.length : 0);
  notify(`${file.name}: ${imported} orders imported` + (problems.length ? `, ${problems.length} problems listed` : ""));
  await loadOrders();
}

// -- depots and vans -------------------------------------------------------------------

async function loadFleet() {
  const [depots, vans, devices] = await Promise.all([
    api("GET", "/api/v1/depots"), api("GET", "/api/v1/vehicles"), api("GET", "/api/v1/devices"),
  ]);
  state.depots = depots.depots;
  state.vans = vans.vehicles;
  state.devices = devices.devices;
  $("depot-list").replaceChildren(...state.depots.map((d) => el("li", {}, `${d.name} (${d.lat.toFixed(4)}, ${d.lon.toFixed(4)})`)));
  $("van-list").replaceChildren(...state.vans.map((v) =>
    el("li", { dataset: { van: String(v.id) } }, `${v.name}` + (v.device ? ` · phone ${v.device}` : " · no phone") +
      ` · ${v.capacity.parcels ?? "?"} parcels · ${v.shift_start}–${v.shift_end}`)));
  $("v-depot").replaceChildren(el("option", { value: "" }, "none"), ...state.depots.map((d) => el("option", { value: String(d.id) }, d.name)));
  $("v-device").replaceChildren(el("option", { value: "" }, "none"), ...state.devices.map((d) => el("option", { value: d.id }, d.name)));
}

// -- the proposal ----------------------------------------------------------------------

function colour(k) {
  return COLOURS[k % COLOURS.length];
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function duration(s) {
  const m = Math.round(s / 60);
  return m < 60 ? `${m} min` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

const editable = () => Boolean(state.plan && state.plan.status === "proposed" && !state.dispatched);

const editor = createEditor({
  edit: (orderId, vehicle, position) => attempt(() => editPlan(orderId, vehicle, position)),
  colour, duration, stats,
});

function drawProposal(plan, fit = true) {
  layer.clearLayers();
  const bounds = [];
  const { indexOf } = planVans(plan);
  plan.routes.forEach((route, k) => {
    const c = colour(indexOf[k] >= 0 ? indexOf[k] : k);
    if (route.path) {
      const line = decode(route.path.polyline, route.path.precision);
      L.polyline(line, { color: c, weight: 4, opacity: 0.85, className: "plan-line" }).addTo(layer);
      bounds.push(...line);
    }
    route.stops.forEach((s) => {
      L.circleMarker([s.lat, s.lon], { radius: 7, color: c, fillOpacity: 0.9, className: "plan-stop" })
        .bindTooltip(`${route.vehicle} · ${s.seq}. ${stopName(s)}`)
        .addTo(layer);
      bounds.push([s.lat, s.lon]);
    });
  });
  if (fit && bounds.length) map.fitBounds(bounds, { padding: [20, 20] });
  const sum = plan.summary;
  $("plan-summary").textContent =
    `${sum.assigned} of ${sum.orders} orders on ${sum.vehicles_used} of ${sum.vehicles} vans · ${km(sum.distance_m)} · ` +
    `${duration(sum.duration_s)}` + (sum.lateness_s ? ` · ${duration(sum.lateness_s)} late` : "") +
    (sum.violations ? ` · ${plural(sum.violations, "violation")}` : "") +
    (plan.straight_line ? " · straight-line distances (no road network imported)" : " · on roads");
  if (editable()) {
    const { vans, routes } = planVans(plan);
    $("plan-routes").replaceChildren(...vans.map((van, k) => editor.card(van, routes[k], k, vans)));
  } else {
    $("plan-routes").replaceChildren(...plan.routes.map((route, k) => routeCard(route, indexOf[k] >= 0 ? indexOf[k] : k, k)));
  }
  $("plan-unassigned").replaceChildren(...(plan.unassigned.length
    ? plan.unassigned.map((u) => editable() ? editor.unassigned(u, planVans(plan).vans) : unassignedItem(u))
    : [el("li", { class: "muted" }, "none")]));
}

function stats(route) {
  if (!route) return [el("p", { class: "stats" }, "no stops: drop one here")];
  const parcels = route.load && route.load.parcels !== undefined ? `${route.load.parcels} parcels` : "";
  const out = [el("p", { class: "stats" },
    `${route.stops.length} stops · ${km(route.distance_m)} · ${duration(route.duration_s)} · ${parcels}` +
    (route.lateness_s ? " · " : ""), route.lateness_s ? el("span", { class: "late" }, `${duration(route.lateness_s)} late`) : "")];
  if (route.violations && route.violations.length) {
    out.push(el("ul", { class: "violations", "aria-label": `What ${route.vehicle}'s route breaks` },
      ...route.violations.map((v) => el("li", { dataset: { cause: v.cause } }, "⚠ " + v.message))));
  }
  return out;
}

function unassignedItem(u) {
  return el("li", { dataset: { order: String(u.order_id) } }, `${u.external_id || "#" + u.order_id}: ${u.reason}`);
}

async function editPlan(orderId, vehicle, position) {
  const body = { order_id: orderId, vehicle };
  if (position !== null && position !== undefined) body.position = position;
  state.plan = await api("POST", `/api/v1/plans/${state.plan.id}/move`, body);
  drawProposal(state.plan, false);
  $("dispatch").disabled = state.plan.routes.length === 0;
  const sum = state.plan.summary;
  notify(`Proposal #${state.plan.id} re-evaluated: ${sum.assigned} orders on ${sum.vehicles_used} vans, ` +
    (sum.violations ? plural(sum.violations, "violation") : "no violations") + ".");
}

// A card of the plan's route k (`hue`: its van's colour); once dispatched, of its live route.
function routeCard(route, hue, k) {
  const live = state.dispatched ? state.dispatched[k] : null;
  const card = el("section", { class: "plan-route", style: `--van-colour: ${colour(hue)}`, dataset: { vehicle: route.vehicle } },
    el("h3", {}, route.vehicle + (route.device ? ` (${route.device})` : "")),
    ...stats(route),
    el("ol", {}, ...route.stops.map((s, j) => stopItem(route, s, live ? live.stops[j] : null))),
  );
  if (live) {
    card.dataset.routeId = String(live.id);
    card.addEventListener("dragover", (e) => { e.preventDefault(); card.classList.add("drop-target"); });
    card.addEventListener("dragleave", () => card.classList.remove("drop-target"));
    card.addEventListener("drop", (e) => {
      e.preventDefault();
      card.classList.remove("drop-target");
      const stopId = Number(e.dataTransfer.getData("text/plain"));
      attempt(() => moveStop(stopId, live.id));
    });
  }
  return card;
}

function stopItem(route, s, liveStop) {
  const when = liveStop && liveStop.eta ? "ETA " + clock(liveStop.eta) : clock(s.arrival);
  const li = el("li", { dataset: { order: String(s.order_id) } },
    `${s.recipient || s.external_id || "order " + s.order_id} · ${when}`,
    s.lateness_s ? el("span", { class: "late" }, ` (${duration(s.lateness_s)} late)`) : "");
  if (liveStop) {
    li.draggable = true;
    li.dataset.stopId = String(liveStop.id);
    li.addEventListener("dragstart", (e) => { e.dataTransfer.setData("text/plain", String(liveStop.id)); li.classList.add("dragging"); });
    li.addEventListener("dragend", () => li.classList.remove("dragging"));
    // The keyboard's way to do the same: a menu of the other vans.
    const others = state.dispatched.filter((r) => r.device !== route.device);
    if (others.length) {
      const menu = el("select", { "aria-label": `Move ${s.recipient || s.order_id} to another van` },
        el("option", { value: "" }, "to van…"), ...others.map((r) => el("option", { value: String(r.id) }, r.device)));
      menu.addEventListener("change", () => menu.value && attempt(() => moveStop(liveStop.id, Number(menu.value))));
      li.append(menu);
    }
  }
  return li;
}

async function optimise() {
  const plan = await api("POST", "/api/v1/plans", { date: day() });
  state.plan = plan;
  state.dispatched = null;
  drawProposal(plan);
  $("dispatch").disabled = plan.routes.length === 0;
  notify(`Proposal #${plan.id}: ${plan.summary.assigned} orders on ${plan.summary.vehicles_used} vans.`);
}

async function dispatch() {
  const done = await api("POST", `/api/v1/plans/${state.plan.id}/dispatch`);
  state.dispatched = done.routes;
  state.plan = done.plan;
  drawProposal(state.plan);
  $("dispatch").disabled = true;
  notify(`Dispatched ${done.routes.length} routes to the drivers: drag a stop to another van to move it.`);
  await loadOrders();
}

async function moveStop(stopId, routeId) {
  const moved = await api("POST", "/api/v1/replan/move", { stops: [stopId], route_id: routeId });
  // The server put the stop where it adds least time and re-timed both routes.
  for (const route of moved.routes) {
    const k = state.dispatched.findIndex((r) => r.id === route.id);
    if (k >= 0) state.dispatched[k] = route;
  }
  renderDispatched();
  notify(`Stop moved to ${moved.routes.find((r) => r.id === routeId).device}; routes re-evaluated.`);
}

// After a move the dispatched routes are the truth: show them as the cards.
function renderDispatched() {
  const cards = state.dispatched.map((route, k) => {
    const plannedRoute = {
      vehicle: state.plan.routes[k] ? state.plan.routes[k].vehicle : route.device,
      device: route.device,
      distance_m: null,
      duration_s: 0,
      lateness_s: 0,
      load: {},
      stops: route.stops.map((s) => ({ seq: s.seq, order_id: s.id, recipient: s.recipient || s.name, arrival: s.eta, lateness_s: 0 })),
    };
    const hue = planVans(state.plan).indexOf[k];
    const card = routeCard(plannedRoute, hue >= 0 ? hue : k, k);
    card.querySelector(".stats").textContent = `${route.stops.length} stops · live route #${route.id}`;
    return card;
  });
  $("plan-routes").replaceChildren(...cards);
}

// -- wiring ----------------------------------------------------------------------------

$("signin-form").addEventListener("submit", (e) => {
  e.preventDefault();
  attempt(async () => showApp(await signIn($("signin-token").value)));
});
$("plan-day").addEventListener("change", () => attempt(loadOrders));
$("optimise").addEventListener("click", () => attempt(optimise));
$("dispatch").addEventListener("click", () => attempt(dispatch));
$("order-filter").addEventListener("input", renderOrders);
// The unassigned list takes a stop dragged off a van's card (before dispatch).
const pool = $("plan-unassigned");
pool.addEventListener("dragover", (e) => { if (editable()) { e.preventDefault(); pool.classList.add("drop-target"); } });
pool.addEventListener("dragleave", () => pool.classList.remove("drop-target"));
pool.addEventListener("drop", (e) => {
  e.preventDefault();
  pool.classList.remove("drop-target");
  const orderId = editor.dragged(e);
  if (editable() && orderId) attempt(() => editPlan(orderId, null, null));
});
$("order-cancel-edit").addEventListener("click", stopEditing);
$("order-form").addEventListener("submit", (e) => {
  e.preventDefault();
  attempt(async () => {
    const id = $("order-id").value;
    if (id) {
      await api("PATCH", `/api/v1/orders/${id}`, orderBody());
      notify("Order saved.");
    } else {
      await api("POST", "/api/v1/orders", { ...orderBody(), date: day() });
      notify("Order added.");
    }
    stopEditing();
    await loadOrders();
  });
});
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  const file = e.dataTransfer.files[0];
  if (file) attempt(() => importCsv(file));
});
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("csv-file").click(); } });
$("csv-file").addEventListener("change", (e) => { const file = e.target.files[0]; if (file) attempt(() => importCsv(file)); e.target.value = ""; });
$("depot-form").addEventListener("submit", (e) => {
  e.preventDefault();
  attempt(async () => {
    await api("POST", "/api/v1/depots", { name: $("d-name").value.trim(), lat: Number($("d-lat").value), lon: Number($("d-lon").value) });
    $("depot-form").reset();
    notify("Depot added.");
    await loadFleet();
  });
});
$("van-form").addEventListener("submit", (e) => {
  e.preventDefault();
  attempt(async () => {
    const body = {
      name: $("v-name").value.trim(),
      capacity: { parcels: Number($("v-capacity").value) },
      shift_start: $("v-start").value,
      shift_end: $("v-end").value,
    };
    if ($("v-device").value) body.device = $("v-device").value;
    if ($("v-depot").value) {
      body.start_depot_id = Number($("v-depot").value);
      body.end_depot_id = Number($("v-depot").value);
    }
    await api("POST", "/api/v1/vehicles", body);
    $("van-form").reset();
    notify("Van added.");
    await loadFleet();
  });
});

$("plan-day").value = new Date(Date.now() + 86400000).toISOString().slice(0, 10);
attempt(async () => {
  const role = await currentRole();
  if (role) await showApp(role);
  else showSignIn();
});
