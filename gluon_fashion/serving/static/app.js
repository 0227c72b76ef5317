// The page of tools/serve.py: upload a photo, draw the returned masks, filter them here (no second request).
"use strict";

const state = { model: null, result: null, items: [], hidden: new Set(), threshold: 0.5, bitmap: null };
window.gf = state; // read by the browser test

const $ = (id) => document.getElementById(id);

// COCO compressed RLE ("counts" string) -> run lengths. Each count is a little-endian base-32 number written
// 5 bits per character (plus 48), bit 0x20 meaning "more characters follow" and 0x10 of the last one the sign;
// from the third count on it is the difference to the count two places back.
function rleCounts(text) {
  const counts = [];
  let p = 0;
  while (p < text.length) {
    let x = 0, k = 0, more = true, c = 0;
    while (more) {
      c = text.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = (c & 0x20) !== 0;
      p += 1; k += 1;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

// Runs alternate background/foreground, starting with background, in column-major (Fortran) pixel order.
function maskArea(counts) {
  let n = 0;
  for (let i = 1; i < counts.length; i += 2) n += counts[i];
  return n;
}

function rgb(color) { return `rgb(${color[0]}, ${color[1]}, ${color[2]})`; }

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").classList.toggle("error", Boolean(isError));
}

function classColor(key) {
  const m = state.model;
  if (m && m.task === "segmentation") {
    const entry = (m.labels || []).find((l) => l.label === key);
    return entry ? entry.color : [200, 200, 200];
  }
  const entry = ((m && m.classes) || []).find((c) => c.id === key);
  return entry ? entry.color : [200, 200, 200];
}

// One list for both tasks: Mask R-CNN instances, or a segmentation's labels (score 1: no confidence per pixel).
function itemsOf(result) {
  if (result.labels) {
    return result.labels.map((l) => ({ key: l.label, name: l.name, score: 1, box: null, mask: l.mask,
                                       counts: rleCounts(l.mask.counts), color: classColor(l.label) }));
  }
  return (result.instances || []).map((inst) => ({ key: inst.category_id, name: inst.name, score: inst.score,
                                                   box: inst.box, mask: inst.mask, counts: rleCounts(inst.mask.counts),
                                                   color: classColor(inst.category_id) }));
}

function visibleItems() {
  return state.items.filter((it) => it.score >= state.threshold && !state.hidden.has(it.key));
}

function drawOverlay() {
  const canvas = $("overlay");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  const shown = visibleItems();
  if (!shown.length) return shown;
  const image = ctx.createImageData(w, h);
  const data = image.data;
  // Lowest score first, so the most confident masks end on top.
  for (const it of shown.slice().sort((a, b) => a.score - b.score)) {
    let pos = 0;
    for (let r = 0; r < it.counts.length; r += 1) {
      const run = it.counts[r];
      if (r % 2 === 1) {
        for (let i = pos; i < pos + run; i += 1) {
          const x = Math.floor(i / h), y = i - x * h;
          const o = (y * w + x) * 4;
          data[o] = it.color[0]; data[o + 1] = it.color[1]; data[o + 2] = it.color[2]; data[o + 3] = 140;
        }
      }
      pos += run;
    }
  }
  ctx.putImageData(image, 0, 0);
  ctx.lineWidth = Math.max(1, Math.round(Math.min(w, h) / 300));
  for (const it of shown) {
    if (!it.box) continue;
    ctx.strokeStyle = rgb(it.color);
    ctx.strokeRect(it.box[0], it.box[1], it.box[2] - it.box[0], it.box[3] - it.box[1]);
  }
  return shown;
}

function drawLegend() {
  const legend = $("legend");
  legend.replaceChildren();
  const keys = [...new Set(state.items.map((it) => it.key))].sort((a, b) => a - b);
  for (const key of keys) {
    const all = state.items.filter((it) => it.key === key);
    const above = all.filter((it) => it.score >= state.threshold).length;
    const li = document.createElement("li");
    li.dataset.class = key;
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = !state.hidden.has(key);
    box.id = `class-${key}`;
    box.addEventListener("change", () => {
      if (box.checked) state.hidden.delete(key); else state.hidden.add(key);
      render();
    });
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = rgb(all[0].color);
    const label = document.createElement("label");
    label.htmlFor = box.id;
    label.textContent = all[0].name;
    const n = document.createElement("span");
    n.className = "n";
    n.textContent = `${above}/${all.length}`;
    li.append(box, swatch, label, n);
    legend.append(li);
  }
}

function drawTable(shown) {
  const body = document.querySelector("#instances tbody");
  body.replaceChildren();
  shown.slice().sort((a, b) => b.score - a.score).forEach((it, i) => {
    const tr = document.createElement("tr");
    tr.dataset.class = it.key;
    tr.dataset.score = it.score;
    const cells = [String(i + 1), it.name, it.score.toFixed(3),
                   it.box ? it.box.map((v) => Math.round(v)).join(", ") : "–", String(maskArea(it.counts))];
    cells.forEach((text, c) => {
      const td = document.createElement("td");
      if (c === 1) {
        const sw = document.createElement("span");
        sw.className = "swatch";
        sw.style.background = rgb(it.color);
        td.append(sw);
      }
      td.append(document.createTextNode(text));
      tr.append(td);
    });
    body.append(tr);
  });
  $("count").textContent = `(${shown.length} of ${state.items.length} shown)`;
}

function render() {
  const shown = drawOverlay();
  drawLegend();
  drawTable(shown);
  document.body.dataset.shown = shown.length;
}

async function showPhoto(file, width, height) {
  const photo = $("photo");
  photo.width = width; photo.height = height;
  $("overlay").width = width; $("overlay").height = height;
  let bitmap;
  try {
    // The server ignores EXIF orientation (masks index the stored pixels), so the page must too.
    bitmap = await createImageBitmap(file, { imageOrientation: "none" });
  } catch (err) {
    bitmap = await createImageBitmap(file);
  }
  photo.getContext("2d").drawImage(bitmap, 0, 0, width, height);
}

async function predict(file) {
  document.body.dataset.state = "predicting";
  setStatus(`predicting ${file.name}…`);
  const form = new FormData();
  form.append("image", file, file.name);
  let response, body;
  try {
    response = await fetch("/predict", { method: "POST", body: form });
    body = await response.json();
  } catch (err) {
    document.body.dataset.state = "error";
    setStatus(`request failed: ${err}`, true);
    return;
  }
  if (!response.ok) {
    document.body.dataset.state = "error";
    const retry = response.headers.get("Retry-After");
    setStatus(`${response.status}: ${body.error}${retry ? ` (retry in ${retry} s)` : ""}`, true);
    return;
  }
  state.result = body;
  state.items = itemsOf(body);
  state.hidden.clear();
  await showPhoto(file, body.image.width, body.image.height);
  render();
  const t = body.timing;
  setStatus(`${file.name}: ${body.image.width}x${body.image.height}, ${state.items.length} ` +
            `${body.labels ? "labels" : "instances"}, ${t.total_ms} ms (${t.predict_ms} ms predicting)`);
  document.body.dataset.state = "ready";
}

function setup() {
  const slider = $("threshold");
  const onSlide = () => {
    state.threshold = Number(slider.value);
    $("threshold-value").textContent = state.threshold.toFixed(2);
    if (state.items.length) render();
  };
  slider.addEventListener("input", onSlide);
  slider.addEventListener("change", onSlide);
  $("file").addEventListener("change", (e) => { if (e.target.files.length) predict(e.target.files[0]); });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) predict(e.dataTransfer.files[0]);
  });
  fetch("/model").then((r) => r.json()).then((m) => {
    state.model = m;
    $("model-info").textContent = `${m.task} · ${m.architecture} · ${m.devices.join(", ")} · ` +
      `scores from ${m.score_threshold}`;
    if (m.task === "segmentation") {
      // Labels carry no score: the slider has nothing to filter.
      $("threshold-box").hidden = true;
      state.threshold = 0;
    } else {
      state.threshold = Math.max(Number(slider.value), m.score_threshold);
      slider.min = m.score_threshold;
      slider.value = state.threshold;
      $("threshold-value").textContent = state.threshold.toFixed(2);
    }
    document.body.dataset.state = "idle";
  }).catch((err) => setStatus(`cannot read /model: ${err}`, true));
}

setup();
