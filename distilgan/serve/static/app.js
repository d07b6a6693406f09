// distilgan serve page: pick classes and a count, POST /generate, show and download the images; the
// tabs, and which of them this server has (GET /health). translate.js holds the Translate tab.
// Plain JavaScript, no libraries: everything this page needs is served by distilgan itself.
"use strict";

const $ = (id) => document.getElementById(id);
let model = null; // GET /model
let last = null; // last /generate answer

function formatCount(value) {
  for (const [unit, scale] of [["G", 1e9], ["M", 1e6], ["K", 1e3]]) {
    if (Math.abs(value) >= scale) return `${(value / scale).toPrecision(3)} ${unit}`;
  }
  return String(value);
}

function safeName(name) {
  return name.replace(/[^A-Za-z0-9._-]+/g, "_").replace(/^[._]+|[._]+$/g, "") || "class";
}

// GET (or POST with options) path -> its JSON; a 4xx/5xx throws an Error carrying the server's message.
async function fetchJson(path, options) {
  const response = await fetch(path, options);
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || `${response.status} ${response.statusText}`);
  return answer;
}

// the message in the tab's error box (hidden again for an empty message)
function showError(message, box = "error") {
  $(box).textContent = message;
  $(box).hidden = !message;
}

async function loadModel() {
  try {
    model = await fetchJson("/model");
  } catch (err) {
    $("model-info").textContent = "could not load the model description";
    showError(`GET /model failed: ${err.message}`);
    return;
  }
  const parts = [
    model.architecture || "model",
    `${model.resolution}×${model.resolution}`,
    `${model.num_classes} classes`,
    `z_dim ${model.z_dim}`,
  ];
  const z = model.z_distribution;
  if (z) parts.push(z.threshold === undefined ? `z ${z.kind}` : `z ${z.kind} (t=${z.threshold})`);
  if (model.parameters) parts.push(`${formatCount(model.parameters)} parameters`);
  if (model.macs_per_image) parts.push(`${formatCount(model.macs_per_image)} MACs/image`);
  parts.push(`${model.backend} on ${model.device || "?"}`);
  $("model-info").textContent = parts.join(" · ");

  const box = $("classes");
  // only the classes the model was trained on (a subset when its distillation set was), in its order
  const trained = model.classes || model.class_names.map((_, index) => index);
  trained.forEach((index, position) => {
    const label = document.createElement("label");
    const input = document.createElement("input");
    input.type = "checkbox";
    input.value = String(index);
    input.checked = position < 4; // a small first request
    label.append(input, document.createTextNode(model.class_names[index]));
    box.append(label);
  });
  $("count").max = String(model.max_count);
  $("limit").textContent = `At most ${model.max_count} images per request.`;
  $("generate").disabled = false;
}

function selectedLabels() {
  return [...document.querySelectorAll("#classes input:checked")].map((input) => Number(input.value));
}

function buildRequest() {
  const labels = selectedLabels();
  if (labels.length === 0) throw new Error("pick at least one class");
  const count = Number($("count").value);
  if (!Number.isInteger(count) || count < 1) throw new Error("images per class must be a whole number >= 1");
  if (labels.length * count > model.max_count) {
    throw new Error(`${labels.length * count} images asked for; this server makes at most ${model.max_count} per request`);
  }
  const body = { labels, count, format: "images" };
  if ($("seed").value !== "") body.seed = Number($("seed").value);
  if ($("truncation").value !== "") body.truncation = Number($("truncation").value);
  return body;
}

function render(answer) {
  const results = $("results");
  results.replaceChildren();
  const size = Math.max(64, Math.min(160, answer.width * 3)); // small images, shown enlarged
  const rows = new Map();
  answer.images.forEach((image, index) => {
    if (!rows.has(image.label)) {
      const row = document.createElement("div");
      row.className = "class-row";
      const title = document.createElement("h2");
      title.textContent = image.class_name;
      const images = document.createElement("div");
      images.className = "images";
      row.append(title, images);
      results.append(row);
      rows.set(image.label, images);
    }
    const link = document.createElement("a");
    link.href = `data:image/png;base64,${image.png_base64}`;
    link.download = `${safeName(image.class_name)}_${answer.seed}_${index}.png`;
    link.title = `${image.class_name} — click to download`;
    const img = document.createElement("img");
    img.className = "sample";
    img.src = link.href;
    img.width = size;
    img.height = Math.round((size * answer.height) / answer.width);
    img.alt = image.class_name;
    link.append(img);
    rows.get(image.label).append(link);
  });
  const grid = $("download-grid");
  grid.href = `data:image/png;base64,${answer.grid_png_base64}`;
  grid.download = `grid_seed${answer.seed}.png`;
  $("downloads").hidden = false;
}

async function generate(event) {
  event.preventDefault();
  showError("");
  let body;
  try {
    body = buildRequest();
  } catch (err) {
    showError(err.message);
    return;
  }
  const button = $("generate");
  button.disabled = true;
  $("status").textContent = "generating…";
  const started = performance.now();
  try {
    const answer = await fetchJson("/generate", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const roundTrip = performance.now() - started;
    last = answer;
    render(answer);
    $("status").replaceChildren();
    const strong = document.createElement("strong");
    strong.id = "timing";
    strong.textContent = `${answer.count} images in ${answer.generation_ms.toFixed(1)} ms`;
    $("status").append(
      strong,
      document.createTextNode(` (model; ${roundTrip.toFixed(0)} ms round trip) · seed ${answer.seed}`),
    );
  } catch (err) {
    $("status").textContent = "";
    showError(`generation failed: ${err.message}`);
  } finally {
    button.disabled = false;
  }
}

async function downloadAll() {
  // One click per file; browsers may ask once whether this page may download several files.
  for (const link of document.querySelectorAll("#results .images a")) {
    link.click();
    await new Promise((resolve) => setTimeout(resolve, 150));
  }
}

function setAll(checked) {
  document.querySelectorAll("#classes input").forEach((input) => { input.checked = checked; });
}

const TABS = ["generate", "translate"];

function selectTab(name) {
  for (const tab of TABS) {
    $(`tab-${tab}`).setAttribute("aria-selected", String(tab === name));
    $(`${tab}-panel`).hidden = tab !== name;
  }
}

// A server may hold a generator, translators or both: /health says which, so that the page never asks
// for an endpoint this server does not have.
async function start() {
  let health;
  try {
    health = await fetchJson("/health");
  } catch (err) {
    $("model-info").textContent = "could not reach the server";
    showError(`GET /health failed: ${err.message}`);
    return;
  }
  const translators = health.translators || [];
  const generator = health.generator !== false;
  $("tab-generate").hidden = !generator;
  $("model-link").hidden = !generator;
  $("tab-translate").hidden = translators.length === 0;
  document.querySelector(".tabs").hidden = !(generator && translators.length);
  const wantsTranslate = translators.length && (!generator || location.hash === "#translate");
  selectTab(wantsTranslate ? "translate" : "generate");
  if (generator) loadModel();
  else $("model-info").textContent = `${translators.length} translator${translators.length === 1 ? "" : "s"}: ${translators.join(", ")}`;
  if (translators.length) loadTranslators(); // translate.js
}

document.addEventListener("DOMContentLoaded", () => {
  $("controls").addEventListener("submit", generate);
  $("download-all").addEventListener("click", downloadAll);
  $("select-all").addEventListener("click", () => setAll(true));
  $("select-none").addEventListener("click", () => setAll(false));
  for (const tab of TABS) {
    $(`tab-${tab}`).addEventListener("click", () => {
      selectTab(tab);
      history.replaceState(null, "", `#${tab}`); // a reload or a shared link opens the same tab
    });
  }
  start();
});
