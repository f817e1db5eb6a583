/*
 * Proof of delivery on the driver page: a signature drawn on a canvas, and a photo from
 * the phone's camera (<input type=file accept=image/* capture=environment>), made smaller
 * on the phone before it is queued: a 12-megapixel photo would take minutes to send on a
 * poor connection, 1600 px on the long side is plenty to see a parcel at a door. The
 * server re-encodes both anyway (and strips their metadata).
 */
(() => {
  "use strict";

  const PHOTO_MAX_SIDE = 1600;
  const PHOTO_QUALITY = 0.82;

  // A canvas the customer signs on with a finger, a pen or a mouse (pointer events).
  function signaturePad(canvas) {
    const ctx = canvas.getContext("2d");
    let drawing = false;
    let strokes = 0;
    let last = null;

    function fit() {
      // Draw in device pixels so the line stays sharp on high-density screens.
      const ratio = window.devicePixelRatio || 1;
      const rect = canvas.getBoundingClientRect();
      canvas.width = Math.max(1, Math.round(rect.width * ratio));
      canvas.height = Math.max(1, Math.round(rect.height * ratio));
      ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
      ctx.lineWidth = 2.5;
      ctx.lineCap = "round";
      ctx.lineJoin = "round";
      ctx.strokeStyle = "#111";
      strokes = 0;
    }

    function point(event) {
      const rect = canvas.getBoundingClientRect();
      return { x: event.clientX - rect.left, y: event.clientY - rect.top };
    }

    canvas.addEventListener("pointerdown", (event) => {
      event.preventDefault();
      canvas.setPointerCapture(event.pointerId);
      drawing = true;
      last = point(event);
      ctx.beginPath();
      ctx.moveTo(last.x, last.y);
    });
    canvas.addEventListener("pointermove", (event) => {
      if (!drawing) return;
      event.preventDefault();
      const p = point(event);
      ctx.lineTo(p.x, p.y);
      ctx.stroke();
      if (Math.abs(p.x - last.x) + Math.abs(p.y - last.y) > 0) strokes += 1;
      last = p;
    });
    const end = () => { drawing = false; };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);

    return {
      fit,
      clear() {
        ctx.save();
        ctx.setTransform(1, 0, 0, 1, 0, 0);
        ctx.clearRect(0, 0, canvas.width, canvas.height);
        ctx.restore();
        strokes = 0;
      },
      // A few strokes at least: a tap or a dot is not a signature.
      isEmpty() { return strokes < 3; },
      dataUrl() { return canvas.toDataURL("image/png"); },
    };
  }

  function loadImage(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => {
        const img = new Image();
        img.onload = () => resolve(img);
        img.onerror = () => reject(new Error("not an image this phone can read"));
        img.src = reader.result;
      };
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    });
  }

  // The photo as a JPEG data URL, at most PHOTO_MAX_SIDE pixels on its long side.
  async function shrinkPhoto(file) {
    const img = await loadImage(file);
    const scale = Math.min(1, PHOTO_MAX_SIDE / Math.max(img.naturalWidth, img.naturalHeight));
    const canvas = document.createElement("canvas");
    canvas.width = Math.max(1, Math.round(img.naturalWidth * scale));
    canvas.height = Math.max(1, Math.round(img.naturalHeight * scale));
    canvas.getContext("2d").drawImage(img, 0, 0, canvas.width, canvas.height);
    return canvas.toDataURL("image/jpeg", PHOTO_QUALITY);
  }

  window.trackerDriver = window.trackerDriver || {};
  window.trackerDriver.proof = { signaturePad, shrinkPhoto };
})();
