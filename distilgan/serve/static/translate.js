// distilgan serve page, Translate tab: upload or drop an image, pick a translator and an edit,
// POST /translate, show the model's input and the result side by side.
// Loaded after app.js, whose helpers ($, fetchJson, showError, formatCount, safeName) it uses; app.js calls
// loadTranslators().
"use strict";

const translation = { listing: null, file: null, preview: null };

function showTranslateError(message) {
  showError(message, "translate-error");
}

function formatBytes(n) {
  for (const [unit, scale] of [["MiB", 1 << 20], ["KiB", 1 << 10]]) {
    if (n >= scale) return `${(n / scale).toPrecision(3)} ${unit}`;
  }
  return `${n} bytes`;
}

function currentTranslator() {
  return translation.listing.translators.find((t) => t.name === $("translate-model").value);
}

function fillEdits() {
  const translator = currentTranslator();
  $("translate-edit").replaceChildren(...translator.edits.map((edit) => new Option(edit.name, String(edit.index))));
  const parts = [
    translator.architecture || "translator",
    `${translator.resolution}×${translator.resolution}`,
    `${translator.num_edits} edit${translator.num_edits === 1 ? "" : "s"}`,
  ];
  if (translator.parameters) parts.push(`${formatCount(translator.parameters)} parameters`);
  if (translator.macs_per_image) parts.push(`${formatCount(translator.macs_per_image)} MACs/image`);
  parts.push(`${translator.backend}${translator.precision ? ` ${translator.precision}` : ""} on ${translator.device}`);
  $("translator-info").textContent = parts.join(" · ");
}

function updateTranslateButton() {
  $("translate-submit").disabled = !(translation.listing && translation.file);
}

async function loadTranslators() {
  let listing;
  try {
    listing = await fetchJson("/translators");
  } catch (err) {
    showTranslateError(`GET /translators failed: ${err.message}`);
    return;
  }
  translation.listing = listing;
  const models = $("translate-model");
  models.replaceChildren(...listing.translators.map((t) => new Option(t.name, t.name)));
  models.disabled = listing.translators.length < 2; // nothing to choose: the one translator is used
  fillEdits();
  $("translate-limits").textContent =
    `${listing.formats.join(" or ")}, at most ${formatBytes(listing.max_upload_bytes)} and ` +
    `${formatCount(listing.max_upload_pixels)} pixels; other sizes are resized to the model's.`;
  updateTranslateButton();
}

function resetResult() {
  $("translate-result").hidden = true;
  $("translate-result-caption").textContent = "result";
  $("translate-download").hidden = true;
}

function chooseFile(file) {
  showTranslateError("");
  if (!file) return;
  const limit = translation.listing && translation.listing.max_upload_bytes;
  if (limit && file.size > limit) { // the server would refuse it (413): say so before sending it
    showTranslateError(`${file.name} is ${formatBytes(file.size)}; this server takes images of at most ${formatBytes(limit)}`);
    return;
  }
  translation.file = file;
  if (translation.preview) URL.revokeObjectURL(translation.preview);
  translation.preview = URL.createObjectURL(file);
  const input = $("translate-input");
  input.src = translation.preview;
  input.hidden = false;
  $("translate-input-caption").textContent = `${file.name} (as chosen)`;
  $("translate-drop-text").textContent = `${file.name} — drop or click to choose another`;
  resetResult();
  updateTranslateButton();
}

function showResult(answer, roundTrip) {
  const input = $("translate-input");
  input.src = `data:image/png;base64,${answer.input_png_base64}`;
  $("translate-input-caption").textContent =
    [`model input ${answer.width}×${answer.height}`, ...answer.notes].join("; ");
  const result = $("translate-result");
  result.src = `data:image/png;base64,${answer.image_png_base64}`;
  result.alt = answer.edit;
  result.hidden = false;
  $("translate-result-caption").textContent = `${answer.edit} (${answer.model})`;
  const download = $("translate-download");
  download.href = result.src;
  const stem = translation.file.name.replace(/\.[^.]*$/, "");
  download.download = `${safeName(stem)}_${safeName(answer.edit)}.png`;
  download.hidden = false;
  const strong = document.createElement("strong");
  strong.id = "translate-timing";
  strong.textContent = `translated in ${answer.translation_ms.toFixed(1)} ms`;
  $("translate-status").replaceChildren(strong, document.createTextNode(` (model; ${roundTrip.toFixed(0)} ms round trip)`));
}

async function translate(event) {
  event.preventDefault();
  showTranslateError("");
  if (!translation.file) {
    showTranslateError("choose an image first");
    return;
  }
  const form = new FormData();
  form.append("image", translation.file, translation.file.name);
  form.append("model", $("translate-model").value);
  form.append("edit", $("translate-edit").value);
  form.append("format", "json");
  const button = $("translate-submit");
  button.disabled = true;
  $("translate-status").textContent = "translating…";
  const started = performance.now();
  try {
    const answer = await fetchJson("/translate", { method: "POST", body: form });
    showResult(answer, performance.now() - started);
  } catch (err) {
    $("translate-status").textContent = "";
    resetResult();
    showTranslateError(`translation failed: ${err.message}`);
  } finally {
    updateTranslateButton();
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("translate-form").addEventListener("submit", translate);
  $("translate-model").addEventListener("change", fillEdits);
  $("translate-file").addEventListener("change", (event) => chooseFile(event.target.files[0]));
  const drop = $("translate-drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    chooseFile(event.dataTransfer.files[0]);
  });
  // a file dropped beside the zone would make the browser leave the page to open it
  for (const type of ["dragover", "drop"]) {
    document.addEventListener(type, (event) => {
      if (event.dataTransfer && [...event.dataTransfer.types].includes("Files")) event.preventDefault();
    });
  }
});
