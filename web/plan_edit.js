// Editing a proposal before dispatch on the plan page: one card per vehicle of the plan
// (an unused van's card is empty, to drop onto), stops draggable within a card (where they
// are dropped is where they go), to another card or to the unassigned list, and the same
// from the keyboard (up/down buttons, a "to van" menu). Every change goes to the server
// through `hooks.edit(orderId, vehicle, position)`; the page draws its answer.
import { clock, el } from "./lib/format.js";

export const vanRef = (van) => van.vehicle_id ?? van.vehicle;
export const stopName = (s) => s.recipient || s.external_id || "order " + s.order_id;

// The plan's vehicles (every one it was made with) and, per vehicle, its route or null: a
// route belongs to the first vehicle not yet matched with the same id, name and device.
export function planVans(plan) {
  const vans = plan.vehicles || plan.routes.map((r) => ({ vehicle_id: r.vehicle_id, vehicle: r.vehicle, device: r.device }));
  const routes = vans.map(() => null);
  const indexOf = plan.routes.map((r) => {
    const k = vans.findIndex((v, j) => routes[j] === null &&
      v.vehicle_id === r.vehicle_id && v.vehicle === r.vehicle && v.device === r.device);
    if (k >= 0) routes[k] = r;
    return k;
  });
  return { vans, routes, indexOf };
}

// hooks: edit(orderId, vehicle ref | null, position | null), colour(k), duration(s),
// stats(route) → the card's summary nodes.
export function createEditor(hooks) {
  let dragging = null; // the order being dragged (dragover cannot read the DataTransfer)

  // Where a drop at `y` goes among the card's stops other than the one being dragged.
  function dropIndex(list, y) {
    const others = [...list.children].filter((li) => li.dataset.order !== String(dragging));
    const k = others.findIndex((li) => { const r = li.getBoundingClientRect(); return y < r.top + r.height / 2; });
    return { others, index: k < 0 ? others.length : k };
  }

  function clearMarks() {
    document.querySelectorAll(".drop-before, .drop-end, .drop-target").forEach((n) => n.classList.remove("drop-before", "drop-end", "drop-target"));
  }

  function draggableOrder(li, orderId) {
    li.draggable = true;
    li.addEventListener("dragstart", (e) => {
      dragging = orderId;
      e.dataTransfer.setData("text/plain", String(orderId));
      li.classList.add("dragging");
    });
    li.addEventListener("dragend", () => { li.classList.remove("dragging"); clearMarks(); dragging = null; });
  }

  function draggedOrder(e) {
    const given = Number(e.dataTransfer && e.dataTransfer.getData("text/plain"));
    return given || dragging;
  }

  function vanMenu(label, vans, except, withUnassign, onPick) {
    const menu = el("select", { "aria-label": label },
      el("option", { value: "" }, "to van…"),
      ...vans.map((v, k) => (k === except ? null : el("option", { value: String(k) }, v.vehicle))),
      withUnassign ? el("option", { value: "none" }, "unassigned") : null);
    menu.addEventListener("change", () => {
      if (!menu.value) return;
      onPick(menu.value === "none" ? null : vanRef(vans[Number(menu.value)]));
    });
    return menu;
  }

  function proposalCard(van, route, k, vans) {
    const stops = route ? route.stops : [];
    const list = el("ol", {}, ...stops.map((s, j) => proposalStop(van, s, j, stops.length, k, vans)));
    const card = el("section", { class: "plan-route", style: `--van-colour: ${hooks.colour(k)}`, dataset: { vehicle: van.vehicle, van: String(k) } },
      el("h3", {}, van.vehicle + (van.device ? ` (${van.device})` : "")), ...hooks.stats(route), list);
    card.addEventListener("dragover", (e) => {
      e.preventDefault();
      clearMarks();
      card.classList.add("drop-target");
      const { others, index } = dropIndex(list, e.clientY);
      if (index < others.length) others[index].classList.add("drop-before");
      else list.classList.add("drop-end");
    });
    card.addEventListener("dragleave", (e) => { if (!card.contains(e.relatedTarget)) clearMarks(); });
    card.addEventListener("drop", (e) => {
      e.preventDefault();
      const orderId = draggedOrder(e);
      const { index } = dropIndex(list, e.clientY);
      clearMarks();
      if (orderId) hooks.edit(orderId, vanRef(van), index);
    });
    return card;
  }

  function proposalStop(van, s, j, count, k, vans) {
    const name = stopName(s);
    const li = el("li", { dataset: { order: String(s.order_id) }, class: s.violations && s.violations.length ? "broken" : null },
      `${name} · ${clock(s.arrival)}`,
      s.lateness_s ? el("span", { class: "late" }, ` (${hooks.duration(s.lateness_s)} late)`) : "",
      ...(s.violations || []).map((v) => el("span", { class: "violation", dataset: { cause: v.cause } }, " ⚠ " + v.message)),
      el("span", { class: "stop-controls" },
        el("button", { type: "button", class: "btn-mini", "aria-label": `Move ${name} earlier`, disabled: j === 0,
          onclick: () => hooks.edit(s.order_id, vanRef(van), j - 1) }, "↑"),
        el("button", { type: "button", class: "btn-mini", "aria-label": `Move ${name} later`, disabled: j === count - 1,
          onclick: () => hooks.edit(s.order_id, vanRef(van), j + 1) }, "↓"),
        vanMenu(`Move ${name} to another van`, vans, k, true, (ref) => hooks.edit(s.order_id, ref, null))));
    draggableOrder(li, s.order_id);
    return li;
  }

  function unassignedItem(u, vans) {
    const li = el("li", { dataset: { order: String(u.order_id) } }, `${u.external_id || "#" + u.order_id}: ${u.reason}`);
    li.append(vanMenu(`Put ${u.external_id || u.order_id} on a van`, vans, -1, false, (ref) => hooks.edit(u.order_id, ref, null)));
    draggableOrder(li, u.order_id);
    return li;
  }

  return { card: proposalCard, unassigned: unassignedItem, dragged: draggedOrder };
}
