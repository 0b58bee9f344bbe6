// The search page: plain JavaScript, no build step. Talks to the JSON API under /api.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { image: null, imageUrl: null, history: JSON.parse(localStorage.getItem("fr-history") || "[]") };

function apiKeyHeaders() {
  const key = localStorage.getItem("fr-api-key");
  return key ? { "X-API-Key": key } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...apiKeyHeaders(), ...(options.headers || {}) } });
  if (response.status === 401) {
    const key = prompt("This server needs an API key (X-API-Key):");
    if (key) { localStorage.setItem("fr-api-key", key); return api(path, options); }
  }
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) {
    let detail = body && body.detail;
    if (Array.isArray(detail)) detail = detail.map((d) => `${(d.loc || []).slice(-1)[0]}: ${d.msg}`).join("; ");
    throw new Error(detail || `${response.status} ${response.statusText}`);
  }
  return body;
}

function showMessage(text, isError = false) {
  const box = $("message");
  box.textContent = text;
  box.className = isError ? "message error" : "message";
  box.hidden = !text;
}

function currentFilters() {
  const filters = {};
  document.querySelectorAll("#filters select").forEach((select) => {
    if (select.value) filters[select.name] = [select.value];
  });
  return filters;
}

function setImage(file) {
  if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
  state.image = file;
  state.imageUrl = file ? URL.createObjectURL(file) : null;
  $("thumb").src = state.imageUrl || "";
  $("thumb-box").hidden = !file;
  updateAlpha();
}

function updateAlpha() {
  $("alpha-box").hidden = !(state.image && $("query").value.trim());
  $("alpha-value").textContent = Number($("alpha").value).toFixed(2);
}

function renderResults(results) {
  const grid = $("results");
  grid.replaceChildren();
  if (!results.length) { showMessage("No results: try other words or fewer filters."); return; }
  for (const hit of results) {
    const card = document.createElement("article");
    card.className = "card";
    card.dataset.id = hit.id;
    const img = document.createElement("img");
    img.src = hit.image_url; img.alt = hit.caption || hit.id; img.loading = "lazy";
    const body = document.createElement("div");
    body.className = "body";
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = `${(hit.score * 100).toFixed(1)}%`;
    const caption = document.createElement("p");
    caption.className = "caption";
    caption.textContent = hit.caption;
    const attrs = document.createElement("div");
    attrs.className = "muted";
    attrs.textContent = [hit.attributes.gender, hit.attributes.product_type].filter(Boolean).join(" · ");
    body.append(score, caption, attrs);
    card.append(img, body);
    card.addEventListener("click", () => openPreview(hit));
    grid.append(card);
  }
}

function openPreview(hit) {
  $("preview-img").src = hit.image_url;
  $("preview-caption").textContent = `${hit.caption} (${(hit.score * 100).toFixed(1)}%)`;
  $("preview").hidden = false;
}

function saveHistory() {
  localStorage.setItem("fr-history", JSON.stringify(state.history.slice(-50)));
  renderHistory();
}

function renderHistory() {
  const list = $("history");
  list.replaceChildren();
  state.history.forEach((entry, index) => {
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.textContent = entry.label;
    link.title = "run again";
    link.addEventListener("click", () => { $("query").value = entry.text || ""; runSearch(); });
    const remove = document.createElement("button");
    remove.type = "button"; remove.className = "link"; remove.textContent = "×";
    remove.setAttribute("aria-label", `remove ${entry.label}`);
    remove.addEventListener("click", () => { state.history.splice(index, 1); saveHistory(); });
    item.append(link, remove);
    list.append(item);
  });
}

async function runSearch() {
  const text = $("query").value.trim();
  const topK = Number($("top-k").value) || 12;
  const filters = currentFilters();
  if (!text && !state.image) { showMessage("Type a description or add an image first.", true); return; }
  showMessage("Searching…");
  try {
    let result;
    if (state.image) {
      const form = new FormData();
      form.append("image", state.image);
      form.append("top_k", String(topK));
      form.append("filters", JSON.stringify(filters));
      if (text) {
        form.append("text", text);
        form.append("alpha", $("alpha").value);
        result = await api("/api/search/hybrid", { method: "POST", body: form });
      } else {
        result = await api("/api/search/image", { method: "POST", body: form });
      }
    } else {
      result = await api("/api/search/text", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ query: text, top_k: topK, filters }),
      });
    }
    showMessage("");
    renderResults(result.results);
    const parts = [text && `"${text}"`, state.image && `image ${state.image.name}`,
      state.image && text && `α=${Number($("alpha").value).toFixed(2)}`,
      ...Object.entries(filters).map(([k, v]) => `${k}=${v}`)].filter(Boolean);
    state.history.push({ label: `${parts.join(", ")} (${result.results.length})`, text });
    saveHistory();
  } catch (error) {
    $("results").replaceChildren();
    showMessage(error.message, true);
  }
}

async function loadFacets() {
  const facets = await api("/api/facets");
  const box = $("filters");
  for (const [name, values] of Object.entries(facets)) {
    const label = document.createElement("label");
    label.textContent = `${name.replace(/_/g, " ")} `;
    const select = document.createElement("select");
    select.name = name; select.id = `filter-${name}`;
    select.append(new Option("any", ""));
    values.forEach((v) => select.append(new Option(v, v)));
    label.append(select);
    box.append(label);
  }
}

async function init() {
  $("search-form").addEventListener("submit", (e) => { e.preventDefault(); runSearch(); });
  $("query").addEventListener("input", updateAlpha);
  $("alpha").addEventListener("input", updateAlpha);
  $("pick-image").addEventListener("click", () => $("image-input").click());
  $("image-input").addEventListener("change", (e) => setImage(e.target.files[0] || null));
  $("clear-image").addEventListener("click", () => { $("image-input").value = ""; setImage(null); });
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault(); zone.classList.remove("over");
    const file = e.dataTransfer.files[0];
    if (file) setImage(file);
  });
  $("preview").addEventListener("click", () => { $("preview").hidden = true; });
  $("clear-history").addEventListener("click", () => { state.history = []; saveHistory(); });
  renderHistory();
  try {
    const health = await api("/api/health");
    $("health").textContent = `${health.count} items · model ${health.model.key}`;
    await loadFacets();
  } catch (error) {
    $("health").textContent = "";
    showMessage(`Cannot reach the search service: ${error.message}`, true);
  }
}

init();
