/*
 * The doorstep part of the customer's tracking page: the delivery window and the ETA's
 * range, the PIN to tell the driver, instructions and a safe place (until the driver
 * arrives), moving the delivery to another offered window or a pickup point, after a
 * failure the reason and what happens next, after delivery the proof and a rating, and
 * opting out of messages.
 *
 * Everything comes from GET /t/{token}/details, read on load, whenever the live phase
 * changes (track.js says so with a "tracking:state" event) and every 30 s (a dispatcher's
 * answer to a request). Every POST is JSON to /t/{token}/...; the link is the credential.
 */
(() => {
  "use strict";

  const REFRESH_MS = 30000;
  const $ = (id) => document.getElementById(id);
  const base = location.pathname.replace(/\/+$/, "");
  let details = null;
  let lastPhase = null;

  function clock(iso) {
    return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function day(iso) {
    return new Date(iso).toLocaleDateString([], { weekday: "short", day: "numeric", month: "short" });
  }

  function windowText(start, end) {
    return `${day(start)}, ${clock(start)}–${clock(end)}`;
  }

  function show(id, on) {
    $(id).hidden = !on;
  }

  async function call(path, body) {
    const res = await fetch(`${base}/${path}`, {
      method: body === undefined ? "GET" : "POST",
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
    let data = null;
    try {
      data = await res.json();
    } catch (_) {
      data = null;
    }
    return { ok: res.ok, status: res.status, data };
  }

  function renderWhen(d) {
    const w = $("window");
    w.textContent = d.window ? `Delivery window: ${windowText(d.window.start, d.window.end)}` : "";
    w.hidden = !d.window;
    // The live ETA range is shown by track.js from the feed, beside the ETA itself.
    const pin = $("pin");
    pin.textContent = d.pin ? `Your delivery code: ${d.pin} — tell it to the driver.` : "";
    pin.hidden = !d.pin;
    show("when-card", !w.hidden || !pin.hidden);
  }

  function renderFailure(d) {
    show("failure-card", Boolean(d.failure));
    if (!d.failure) return;
    $("failure-reason").textContent = d.failure.reason
      ? `Reason: ${d.failure.reason}.` : "The driver could not deliver.";
    $("failure-next").textContent = d.failure.next_step_text
      ? `What happens next: ${d.failure.next_step_text}.` : "";
  }

  function renderProof(d) {
    show("proof-card", Boolean(d.delivery));
    if (!d.delivery) return;
    const parts = [`Delivered at ${clock(d.delivery.time)}`];
    if (d.delivery.recipient_name) parts.push(`received by ${d.delivery.recipient_name}`);
    $("proof-text").textContent = `${parts.join(", ")}.`;
    const images = $("proof-images");
    images.replaceChildren();
    for (const proof of d.delivery.proofs) {
      const img = document.createElement("img");
      img.src = proof.url;
      img.alt = proof.kind === "signature" ? "Signature" : "Photo of the delivery";
      img.className = `proof proof-${proof.kind}`;
      images.append(img);
    }
  }

  function renderInstructions(d) {
    show("instructions-card", d.can_edit_instructions || Boolean(d.instructions || d.safe_place));
    const editable = d.can_edit_instructions;
    const form = $("instructions-form");
    // Don't overwrite what the customer is typing.
    if (!form.contains(document.activeElement)) {
      $("instructions").value = d.instructions;
      $("safe-place").value = d.safe_place;
    }
    for (const field of form.querySelectorAll("textarea, input, button")) field.disabled = !editable;
    if (!editable) $("instructions-state").textContent = "The driver is on it: instructions can no longer change.";
  }

  function renderReschedule(d) {
    const r = d.reschedule;
    const request = r.request;
    show("reschedule-card", r.allowed || Boolean(request));
    const state = $("reschedule-state");
    if (request) {
      const what = request.pickup_point
        ? `pickup at ${request.pickup_point.name}`
        : windowText(request.window_start, request.window_end);
      const label = { pending: "waiting for confirmation", confirmed: "confirmed", declined: "declined" };
      state.textContent = `Your request (${what}): ${label[request.status] || request.status}.`;
    } else {
      state.textContent = "";
    }
    const waiting = request && request.status === "pending";
    $("reschedule-form").hidden = !r.allowed || waiting;
    const options = $("reschedule-options");
    if (options.dataset.filled) return;
    options.dataset.filled = "1";
    const legend = document.createElement("legend");
    legend.textContent = "Move it to";
    options.append(legend);
    r.windows.forEach((w, i) => options.append(option("window", i, windowText(w.window_start, w.window_end))));
    r.pickup_points.forEach((p, i) =>
      options.append(option("pickup_point", i, `Pickup point: ${p.name}${p.address ? `, ${p.address}` : ""}`)));
  }

  function option(kind, index, text) {
    const label = document.createElement("label");
    label.className = "option";
    const input = document.createElement("input");
    input.type = "radio";
    input.name = "reschedule";
    input.value = `${kind}:${index}`;
    label.append(input, ` ${text}`);
    return label;
  }

  function renderRating(d) {
    show("rating-card", d.can_rate || Boolean(d.rating));
    $("rating-form").hidden = !d.can_rate;
    $("rating-state").textContent = d.rating
      ? `Thank you: you rated this delivery ${d.rating.stars} of 5.` : "";
    const stars = $("stars");
    if (stars.dataset.filled) return;
    stars.dataset.filled = "1";
    for (let n = 1; n <= 5; n += 1) {
      const label = document.createElement("label");
      label.className = "star";
      const input = document.createElement("input");
      input.type = "radio";
      input.name = "stars";
      input.value = String(n);
      label.append(input, ` ${n} ${n === 1 ? "star" : "stars"}`);
      stars.append(label);
    }
  }

  function renderMessages(d) {
    show("messages-card", d.messages.has_contact);
    $("opt-out").hidden = d.messages.opted_out;
    $("messages-state").textContent = d.messages.opted_out
      ? "You will get no more messages about your deliveries." : "We send you a message at each step.";
  }

  function render(d) {
    details = d;
    renderWhen(d);
    renderFailure(d);
    renderProof(d);
    renderInstructions(d);
    renderReschedule(d);
    renderRating(d);
    renderMessages(d);
  }

  async function load() {
    try {
      const res = await call("details");
      if (res.ok) render(res.data);
    } catch (_) {
      // offline: the next refresh tries again
    }
  }

  $("instructions-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const res = await call("instructions", {
      instructions: $("instructions").value,
      safe_place: $("safe-place").value,
    });
    $("instructions-state").textContent = res.ok
      ? "Saved: the driver will see it." : `Not saved: ${(res.data && res.data.message) || res.status}`;
    if (res.ok) render(res.data);
  });

  $("reschedule-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const chosen = document.querySelector("input[name=reschedule]:checked");
    if (!chosen) {
      $("reschedule-state").textContent = "Choose a window or a pickup point first.";
      return;
    }
    const [kind, index] = chosen.value.split(":");
    const res = await call("reschedule", { [kind]: Number(index) });
    if (res.ok) render(res.data);
    else $("reschedule-state").textContent = `Not sent: ${(res.data && res.data.message) || res.status}`;
  });

  $("rating-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const chosen = document.querySelector("input[name=stars]:checked");
    if (!chosen) {
      $("rating-state").textContent = "Choose 1 to 5 stars.";
      return;
    }
    const res = await call("rating", { stars: Number(chosen.value), comment: $("rating-comment").value });
    if (res.ok) render(res.data);
    else $("rating-state").textContent = `Not sent: ${(res.data && res.data.message) || res.status}`;
  });

  $("opt-out").addEventListener("click", async () => {
    const res = await call("messages", { opt_out: true });
    if (res.ok) render(res.data);
  });

  document.addEventListener("tracking:state", (event) => {
    const state = event.detail;
    if (state.phase !== lastPhase) {
      lastPhase = state.phase;
      load();
    } else if (details) {
      renderWhen(details);
    }
  });

  try {
    lastPhase = JSON.parse(document.body.dataset.state).phase;
  } catch (_) {
    lastPhase = null;
  }
  load();
  setInterval(load, REFRESH_MS);
})();
