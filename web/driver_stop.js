/*
 * One stop on the driver page: what the driver needs at the door (address, recipient,
 * tap-to-call, notes, time window, parcels to hand over or collect, the customer's own
 * instructions, tap-to-navigate), and the forms that complete or fail it with the proof,
 * reason and next step the company asks for.
 *
 * `render(ctx)` builds the element from the template; ctx = {route, stop, nextId, pending
 * (the queued action of this stop, if any), settings, lastFix, on: {arrived, report, undo,
 * fix}}. A stop with a queued action shows what it will become, and an Undo button while
 * the action is still held back.
 */
(() => {
  "use strict";

  const STATUS_LABEL = {
    pending: "to do",
    arrived: "arrived",
    visited: "visited",
    completed: "delivered",
    failed: "failed",
    skipped: "skipped",
  };
  const DONE = new Set(["completed", "failed", "skipped"]);
  const REASON_LABEL = {
    not_home: "Not home",
    refused: "Refused",
    damaged: "Damaged",
    no_access: "No access",
    other: "Other",
  };
  const NEXT_STEP_LABEL = {
    retry_today: "Retry later today",
    pickup_point: "Leave at a pickup point",
    return_to_depot: "Return to depot",
  };

  function shortTime(iso) {
    return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  // Metres between two WGS84 points (haversine; plenty for "near the stop or not").
  function distanceM(lat1, lon1, lat2, lon2) {
    const rad = Math.PI / 180;
    const a = Math.sin(((lat2 - lat1) * rad) / 2) ** 2
      + Math.cos(lat1 * rad) * Math.cos(lat2 * rad) * Math.sin(((lon2 - lon1) * rad) / 2) ** 2;
    return 2 * 6371008.8 * Math.asin(Math.sqrt(a));
  }

  function farFrom(stop, lastFix, settings) {
    if (!lastFix) return null;
    const d = distanceM(lastFix.lat, lastFix.lon, stop.lat, stop.lon);
    const limit = Math.max(settings.far_from_stop_m, stop.radius_m || 0);
    return d > limit ? Math.round(d) : null;
  }

  // geo: for Android's map chooser, and the usual apps' own links (iOS has no geo:).
  function navigationLinks(stop) {
    const ll = `${stop.lat},${stop.lon}`;
    const label = encodeURIComponent(stop.address || stop.name || "Stop");
    return [
      ["nav-geo", "Navigate", `geo:${ll}?q=${ll}(${label})`],
      ["nav-google", "Google Maps", `https://www.google.com/maps/dir/?api=1&destination=${ll}`],
      ["nav-apple", "Apple Maps", `https://maps.apple.com/?daddr=${ll}`],
      ["nav-waze", "Waze", `https://waze.com/ul?ll=${ll}&navigate=yes`],
    ];
  }

  function stopMeta(stop, shown) {
    if (shown === "failed") return stop.reason ? `Failed: ${stop.reason}` : "Failed";
    if (shown === "completed") return stop.completed_at ? `Delivered ${shortTime(stop.completed_at)}` : "Delivered";
    if (shown === "skipped") return "Skipped";
    const parts = [];
    if (stop.status === "arrived" && stop.arrived_at) parts.push(`Arrived ${shortTime(stop.arrived_at)}`);
    if (stop.eta) parts.push(`ETA ${shortTime(stop.eta)}`);
    return parts.join(" · ");
  }

  function text(node, value) {
    node.textContent = value || "";
    node.hidden = !value;
  }

  function fillDetails(li, stop) {
    text(li.querySelector(".stop-address"), stop.address);
    const windowText = stop.window_start && stop.window_end
      ? `Window ${shortTime(stop.window_start)}–${shortTime(stop.window_end)}` : "";
    text(li.querySelector(".stop-window"), windowText);
    text(li.querySelector(".stop-notes"), stop.notes ? `Notes: ${stop.notes}` : "");
    const customer = [];
    if (stop.instructions) customer.push(`Customer: ${stop.instructions}`);
    if (stop.safe_place) customer.push(`Safe place: ${stop.safe_place}`);
    text(li.querySelector(".stop-customer"), customer.join(" · "));
    const parcels = li.querySelector(".stop-parcels");
    for (const p of stop.parcels || []) {
      const item = document.createElement("li");
      item.className = `parcel parcel-${p.action}`;
      const verb = p.action === "collect" ? "Collect" : "Hand over";
      item.textContent = `${verb}: ${[p.ref, p.description].filter(Boolean).join(" — ")}`;
      parcels.append(item);
    }
    parcels.hidden = parcels.children.length === 0;
    const links = li.querySelector(".stop-links");
    if (stop.phone) {
      const call = document.createElement("a");
      call.className = "link-button call";
      call.href = `tel:${stop.phone.replace(/[^0-9+]/g, "")}`;
      call.textContent = `Call ${stop.phone}`;
      links.append(call);
    }
    for (const [cls, label, href] of navigationLinks(stop)) {
      const a = document.createElement("a");
      a.className = `link-button ${cls}`;
      a.href = href;
      a.textContent = label;
      if (href.startsWith("https:")) {
        a.target = "_blank";
        a.rel = "noopener noreferrer";
      }
      links.append(a);
    }
  }

  function buildFailForm(form, settings) {
    const reasons = form.querySelector(".fail-codes");
    for (const code of settings.reason_codes) {
      const label = document.createElement("label");
      label.className = "choice";
      const input = document.createElement("input");
      input.type = "radio";
      input.name = "reason_code";
      input.value = code;
      label.append(input, ` ${REASON_LABEL[code] || code}`);
      reasons.append(label);
    }
    const select = form.querySelector(".next-step");
    for (const step of settings.next_steps) {
      const option = document.createElement("option");
      option.value = step;
      option.textContent = NEXT_STEP_LABEL[step] || step;
      select.append(option);
    }
    form.querySelector(".next-step-row").hidden = settings.next_steps.length === 0;
  }

  function showFar(form, metres, message) {
    const far = form.querySelector(".far");
    far.hidden = false;
    far.querySelector(".far-text").textContent = message
      || `You are ${metres} m from this stop. Why here?`;
    far.querySelector(".far-reason").required = true;
  }

  function render(ctx) {
    const { route, stop, nextId, pending, settings, on } = ctx;
    const li = document.getElementById("stop-template").content.firstElementChild.cloneNode(true);
    const required = new Set(stop.proof_required || []);
    let shown = stop.status;
    if (pending && pending.kind === "report") shown = pending.body.status;
    if (pending && pending.kind === "status") shown = pending.body.status;
    li.dataset.stopId = String(stop.id);
    li.dataset.status = shown;
    li.classList.add(`stop-${shown}`);
    if (stop.id === nextId) {
      li.classList.add("stop-next");
      li.setAttribute("aria-current", "step");
    }
    li.querySelector(".stop-seq").textContent = String(stop.seq);
    li.querySelector(".stop-name").textContent = stop.name || `Stop ${stop.seq}`;
    li.querySelector(".stop-recipient").textContent = stop.recipient || "";
    li.querySelector(".stop-status").textContent = STATUS_LABEL[shown] || shown;
    const meta = pending && pending.kind === "report" && pending.body.status === "failed"
      ? `Failed: ${REASON_LABEL[pending.body.reason_code] || pending.body.reason_code}`
      : stopMeta(stop, shown);
    li.querySelector(".stop-meta").textContent = meta;
    fillDetails(li, stop);

    const sync = li.querySelector(".stop-sync");
    const actions = li.querySelector(".stop-actions");
    const doneForm = li.querySelector(".done-form");
    const failForm = li.querySelector(".fail-form");
    if (pending) {
      sync.hidden = false;
      const message = sync.querySelector(".sync-text");
      const undo = sync.querySelector(".undo");
      if (pending.attention) {
        message.textContent = `Not sent: ${pending.attention.message}`;
        sync.classList.add("sync-attention");
        undo.textContent = "Discard";
        undo.hidden = false;
      } else if (pending.due > Date.now()) {
        const left = Math.ceil((pending.due - Date.now()) / 1000);
        message.textContent = `Sending in ${left} s`;
        undo.hidden = false;
      } else {
        message.textContent = "Waiting to send (kept on this phone)";
        undo.hidden = true;
      }
      undo.addEventListener("click", () => on.undo(pending));
    } else {
      sync.remove();
    }
    const finished = DONE.has(shown) && !(pending && pending.attention);
    if (finished || route.status !== "active") {
      actions.remove();
      doneForm.remove();
      failForm.remove();
      return li;
    }
    if (shown !== "pending") actions.querySelector(".act-arrived").remove();
    buildFailForm(failForm, settings);
    for (const kind of ["photo", "signature", "name", "pin"]) {
      doneForm.querySelector(`.proof-${kind}`).hidden = !required.has(kind);
    }
    let pad = null;
    let photo = null;

    function open(form) {
      actions.hidden = true;
      form.hidden = false;
      const metres = farFrom(stop, ctx.lastFix(), settings);
      if (metres !== null) showFar(form, metres);
      if (form === doneForm && required.has("signature") && !pad) {
        pad = window.trackerDriver.proof.signaturePad(doneForm.querySelector(".signature"));
        pad.fit();
      }
    }

    function close(form) {
      form.hidden = true;
      actions.hidden = false;
    }

    function error(form, message) {
      form.querySelector(".form-error").textContent = message;
    }

    actions.addEventListener("click", (event) => {
      const button = event.target.closest("button");
      if (!button) return;
      if (button.dataset.status === "arrived") {
        on.arrived(route, stop);
      } else if (button.dataset.action === "ask-done") {
        // Nothing to ask for: no proof required and near the stop.
        if (required.size === 0 && farFrom(stop, ctx.lastFix(), settings) === null) {
          on.report(route, stop, { status: "completed", proof: {} }, pending);
        } else {
          open(doneForm);
        }
      } else if (button.dataset.action === "ask-failed") {
        open(failForm);
      }
    });
    for (const form of [doneForm, failForm]) {
      form.addEventListener("click", (event) => {
        const button = event.target.closest("button");
        if (!button) return;
        if (button.dataset.action === "cancel") close(form);
        if (button.dataset.action === "clear-signature" && pad) pad.clear();
      });
    }
    doneForm.querySelector(".photo-input").addEventListener("change", async (event) => {
      const file = event.target.files && event.target.files[0];
      photo = null;
      if (!file) return;
      try {
        photo = await window.trackerDriver.proof.shrinkPhoto(file);
        const preview = doneForm.querySelector(".photo-preview");
        preview.src = photo;
        preview.hidden = false;
        error(doneForm, "");
      } catch (err) {
        error(doneForm, `Could not read the photo: ${err.message}`);
      }
    });
    doneForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const proof = {};
      if (required.has("photo")) {
        if (!photo) return error(doneForm, "Take a photo of the delivery.");
        proof.photo = photo;
      }
      if (required.has("signature")) {
        if (!pad || pad.isEmpty()) return error(doneForm, "Ask the customer to sign.");
        proof.signature = pad.dataUrl();
      }
      if (required.has("name")) {
        const name = doneForm.querySelector(".name-input").value.trim();
        if (!name) return error(doneForm, "Enter who received it.");
        proof.name = name;
      }
      if (required.has("pin")) {
        const pin = doneForm.querySelector(".pin-input").value.trim();
        if (!/^[0-9]{4,8}$/.test(pin)) return error(doneForm, "Enter the customer's PIN.");
        proof.pin = pin;
      }
      const body = { status: "completed", proof };
      const far = doneForm.querySelector(".far-reason");
      if (!doneForm.querySelector(".far").hidden) {
        if (!far.value.trim()) return error(doneForm, "Say why you are completing it here.");
        body.far_reason = far.value.trim();
      }
      on.report(route, stop, body, pending);
      return undefined;
    });
    failForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const checked = failForm.querySelector("input[name=reason_code]:checked");
      if (!checked) return error(failForm, "Choose why it failed.");
      const details = failForm.querySelector(".fail-reason").value.trim();
      if (checked.value === "other" && !details) return error(failForm, "Say what happened.");
      const body = { status: "failed", reason_code: checked.value };
      if (details) body.reason_text = details;
      if (settings.next_steps.length) body.next_step = failForm.querySelector(".next-step").value;
      if (!failForm.querySelector(".far").hidden) {
        const far = failForm.querySelector(".far-reason").value.trim();
        if (!far) return error(failForm, "Say why you are failing it here.");
        body.far_reason = far;
      }
      on.report(route, stop, body, pending);
      return undefined;
    });
    if (pending && pending.attention) {
      // The server asks for something (a reason for being far away, a proof): the form
      // again, with its message.
      const form = pending.body.status === "failed" ? failForm : doneForm;
      open(form);
      if (pending.attention.error === "far_from_stop") showFar(form, null, pending.attention.message);
      error(form, pending.attention.message);
    }
    return li;
  }

  window.trackerDriver = window.trackerDriver || {};
  window.trackerDriver.stop = { render, DONE, distanceM };
})();
