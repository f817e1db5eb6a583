// Management page: routes (list by day/status/van, cancel, reassign), devices (add with
// the apps' setup links and QR codes, disable, rotate the token) and API keys (create,
// list, revoke). Every refused action shows the server's own error text.
import { api, currentRole, signIn, signOut } from "./lib/api.js";
import { age, dateTime, el, todayUtc } from "./lib/format.js";

const PAGE = 20;
const $ = (id) => document.getElementById(id);
const state = { role: null, devices: [], offset: 0, total: 0 };

function notify(text) {
  $("error").textContent = "";
  $("notice").textContent = text;
}

function fail(err) {
  $("notice").textContent = "";
  $("error").textContent = err.message;
  if (err.status === 401) showSignIn();
}

// Run an action; a refusal shows the server's message, never a silent failure.
async function attempt(action) {
  try {
    await action();
  } catch (err) {
    fail(err);
  }
}

function showSignIn() {
  $("signin").hidden = false;
  $("app").hidden = true;
  $("signout").hidden = true;
  $("who").textContent = "";
  $("signin-token").focus();
}

async function showApp(role) {
  state.role = role;
  document.body.classList.toggle("is-admin", role === "admin");
  $("signin").hidden = true;
  $("app").hidden = false;
  $("signout").hidden = false;
  $("who").textContent = "signed in as " + role;
  await loadDevices();
  await loadRoutes();
  if (role === "admin") await loadKeys();
}

// -- routes ----------------------------------------------------------------------------

async function loadRoutes() {
  const params = new URLSearchParams({ limit: String(PAGE), offset: String(state.offset) });
  for (const [name, id] of [["day", "route-day"], ["status", "route-status"], ["device", "route-device"]]) {
    if ($(id).value) params.set(name, $(id).value);
  }
  const page = await api("GET", "/api/v1/routes?" + params);
  state.total = page.total;
  const body = $("route-table").tBodies[0];
  body.replaceChildren(...page.routes.map(routeRow));
  const last = Math.min(page.offset + page.routes.length, page.total);
  $("route-total").textContent = page.total
    ? `Routes ${page.offset + 1}–${last} of ${page.total}`
    : "No routes match.";
  $("route-prev").disabled = state.offset === 0;
  $("route-next").disabled = state.offset + PAGE >= state.total;
}

function routeRow(route) {
  const done = route.stops.filter((s) => ["completed", "failed", "skipped"].includes(s.status)).length;
  const status = route.ended_reason === "replaced" ? "cancelled (replaced)" : route.status;
  const actions = el("div", { class: "actions" });
  if (route.status === "active") {
    const select = el(
      "select",
      { "aria-label": `Van for route ${route.id}` },
      state.devices.filter((d) => d.id !== route.device).map((d) => el("option", { value: d.id }, d.name + " (" + d.id + ")")),
    );
    actions.append(
      el("button", {
        type: "button",
        class: "btn btn-danger",
        onclick: () =>
          attempt(async () => {
            if (!window.confirm(`Cancel route ${route.id}?`)) return;
            await api("POST", `/api/v1/routes/${route.id}/cancel`, { reason: "cancelled on the management page" });
            notify(`Route ${route.id} cancelled.`);
            await loadRoutes();
          }),
      }, "Cancel"),
      select,
      el("button", {
        type: "button",
        class: "btn",
        onclick: () =>
          attempt(async () => {
            const moved = await api("POST", `/api/v1/routes/${route.id}/reassign`, { device: select.value });
            notify(`Route ${route.id} is now ${moved.device}'s.`);
            await loadRoutes();
          }),
      }, "Reassign"),
    );
  }
  return el(
    "tr",
    { dataset: { route: String(route.id) } },
    el("td", {}, "#" + route.id),
    el("td", {}, route.device),
    el("td", {}, dateTime(route.planned_start)),
    el("td", {}, el("span", { class: "badge" + (route.status === "active" ? " badge-ok" : " badge-muted") }, status)),
    el("td", {}, `${done} of ${route.stops.length} done`),
    el("td", {}, actions),
  );
}

// -- devices ---------------------------------------------------------------------------

async function loadDevices() {
  const { devices } = await api("GET", "/api/v1/devices");
  state.devices = devices;
  const picker = $("route-device");
  const chosen = picker.value;
  picker.replaceChildren(el("option", { value: "" }, "any"), ...devices.map((d) => el("option", { value: d.id }, d.name)));
  picker.value = chosen;
  $("device-table").tBodies[0].replaceChildren(...devices.map(deviceRow));
}

function deviceRow(device) {
  const last = device.last_position ? age(device.last_position.time) : "never";
  const toggle = el("button", {
    type: "button",
    class: "btn" + (device.enabled ? " btn-danger" : ""),
    onclick: () =>
      attempt(async () => {
        await api("PATCH", `/api/v1/devices/${encodeURIComponent(device.id)}`, { enabled: !device.enabled });
        notify(`${device.name} ${device.enabled ? "disabled" : "enabled"}.`);
        await loadDevices();
      }),
  }, device.enabled ? "Disable" : "Enable");
  const rotate = el("button", {
    type: "button",
    class: "btn",
    onclick: () =>
      attempt(async () => {
        if (!window.confirm(`Give ${device.name} a new token? The phone's current one stops working.`)) return;
        const fresh = await api("POST", `/api/v1/devices/${encodeURIComponent(device.id)}/token`);
        showSetup(fresh);
      }),
  }, "New token");
  return el(
    "tr",
    { dataset: { device: device.id } },
    el("td", {}, device.name),
    el("td", {}, el("code", {}, device.id)),
    el("td", {}, el("span", { class: "badge " + (device.enabled ? "badge-ok" : "badge-bad") }, device.enabled ? "enabled" : "disabled")),
    el("td", {}, last),
    state.role === "admin" ? el("td", { class: "admin-only" }, el("div", { class: "actions" }, toggle, rotate)) : null,
  );
}

const APPS = { traccar: "Traccar Client", overland: "Overland (iOS)", driver: "Driver page (browser)" };

function showSetup(device) {
  $("setup-title").textContent = `Set up ${device.name} (${device.id})`;
  $("setup-token").textContent = device.token;
  $("setup-links").replaceChildren(
    ...Object.entries(APPS).map(([key, label]) =>
      el(
        "figure",
        {},
        el("img", { src: device.setup[key].qr, alt: `QR code: ${label} setup for ${device.name}` }),
        el("figcaption", {}, el("strong", {}, label), el("br"), el("a", { href: device.setup[key].url }, "Open on this phone")),
      ),
    ),
  );
  $("setup").hidden = false;
  $("setup-close").focus();
}

// -- keys ------------------------------------------------------------------------------

async function loadKeys() {
  const { keys } = await api("GET", "/api/v1/keys");
  $("key-table").tBodies[0].replaceChildren(
    ...keys.map((key) =>
      el(
        "tr",
        { dataset: { key: String(key.id) } },
        el("td", {}, String(key.id)),
        el("td", {}, key.name),
        el("td", {}, key.role),
        el("td", {}, key.enabled ? "active" : "revoked " + dateTime(key.revoked_at)),
        el("td", {}, dateTime(key.created_at)),
        el(
          "td",
          {},
          key.enabled
            ? el("button", {
                type: "button",
                class: "btn btn-danger",
                onclick: () =>
                  attempt(async () => {
                    if (!window.confirm(`Revoke key "${key.name}"? Everyone using it is signed out.`)) return;
                    await api("POST", `/api/v1/keys/${key.id}/revoke`);
                    notify(`Key "${key.name}" revoked.`);
                    await loadKeys();
                  }),
              }, "Revoke")
            : "",
        ),
      ),
    ),
  );
}

// -- wiring ----------------------------------------------------------------------------

$("signin-form").addEventListener("submit", (event) => {
  event.preventDefault();
  attempt(async () => {
    const role = await signIn($("signin-token").value);
    $("signin-token").value = "";
    notify("Signed in.");
    await showApp(role);
  });
});
$("signout").addEventListener("click", () => attempt(async () => { await signOut(); showSignIn(); }));
$("route-filter").addEventListener("submit", (event) => {
  event.preventDefault();
  state.offset = 0;
  attempt(loadRoutes);
});
$("route-prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE); attempt(loadRoutes); });
$("route-next").addEventListener("click", () => { state.offset += PAGE; attempt(loadRoutes); });
$("device-add").addEventListener("submit", (event) => {
  event.preventDefault();
  attempt(async () => {
    const body = { name: $("device-name").value.trim() };
    if ($("device-uid").value.trim()) body.unique_id = $("device-uid").value.trim();
    const made = await api("POST", "/api/v1/devices", body);
    $("device-add").reset();
    notify(`${made.name} added.`);
    showSetup(made);
    await loadDevices();
  });
});
$("setup-close").addEventListener("click", () => { $("setup").hidden = true; $("setup-token").textContent = ""; });
$("key-add").addEventListener("submit", (event) => {
  event.preventDefault();
  attempt(async () => {
    const made = await api("POST", "/api/v1/keys", { name: $("key-name").value.trim(), role: $("key-role").value });
    $("key-add").reset();
    $("key-new").textContent = `New ${made.role} key "${made.name}" (shown only now): ${made.key}`;
    await loadKeys();
  });
});

$("route-day").value = todayUtc();
attempt(async () => {
  const role = await currentRole();
  if (role) await showApp(role);
  else showSignIn();
});
