// The search page: plain JavaScript, no build step. Talks to the JSON API under /api.
//
// A search is a query (the text box, an uploaded image, or both) plus refinements: a reference item picked
// with "refine" on a result card, a modifier ("in red"), negatives ("stripes"), and items marked "more like
// this" / "less like this". Without refinements the page runs the plain text, image or hybrid search; with
// them it runs POST /api/search/compose (negatives alone on a text query go to /api/search/text as `minus`).
"use strict";

const $ = (id) => document.getElementById(id);
const LIMITS = { minus: 8, like: 50, unlike: 50 };
const IMAGE_CACHE_SIZE = 300;
const state = {
  image: null, imageUrl: null, history: JSON.parse(localStorage.getItem("fr-history") || "[]"),
  ref: null, // {id, caption, image_url}: a catalogue item as the reference ("refine" on a card)
  modifier: "", // what to change in the reference
  minus: [], // negative texts
  like: [], unlike: [], // {id, caption, image_url} marked on result cards
  lastText: "", lastImage: null, // the query of the results on screen
  seq: 0, // the newest search; older answers arriving late are dropped
  images: new Map(), // image url -> Promise of an object URL (only when an API key is set)
};

function apiKey() {
  return localStorage.getItem("fr-api-key") || "";
}

function apiKeyHeaders() {
  const key = apiKey();
  return key ? { "X-API-Key": key } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...apiKeyHeaders(), ...(options.headers || {}) } });
  if (response.status === 401) {
    const key = prompt("This server needs an API key (X-API-Key):");
    if (key) { localStorage.setItem("fr-api-key", key); state.images.clear(); return api(path, options); }
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

// Images: a plain `src` when no API key is set; otherwise /images/{id} needs the X-API-Key header, which an
// <img> cannot send, so the image is fetched with it and shown from an object URL (cached, oldest revoked).
function keyedImage(url) {
  let entry = state.images.get(url);
  if (!entry) {
    entry = fetch(url, { headers: apiKeyHeaders() }).then((response) => {
      if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
      return response.blob();
    }).then((blob) => URL.createObjectURL(blob));
    entry.catch(() => state.images.delete(url));
    state.images.set(url, entry);
    while (state.images.size > IMAGE_CACHE_SIZE) {
      const [oldest, promise] = state.images.entries().next().value;
      state.images.delete(oldest);
      promise.then((objectUrl) => URL.revokeObjectURL(objectUrl), () => {});
    }
  }
  return entry;
}

function showImage(img, url) {
  if (!apiKey()) { img.src = url; return; }
  img.loading = "eager"; // the bytes are fetched already: nothing to defer
  img.removeAttribute("src");
  img.dataset.src = url;
  keyedImage(url).then((objectUrl) => {
    if (img.dataset.src === url) img.src = objectUrl;
  }, (error) => {
    img.classList.add("broken");
    img.title = `image not loaded: ${error.message}`;
  });
}

function showMessage(text, isError = false) {
  const box = $("message");
  box.textContent = text;
  box.className = isError ? "message error" : "message";
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
  if (file) state.ref = null; // an upload becomes the reference instead of a picked item
  if (!file && !state.ref) setModifier("");
  updateAlpha();
  renderRefinements();
}

function updateAlpha() {
  $("alpha-box").hidden = !(state.image && $("query").value.trim());
  $("alpha-value").textContent = Number($("alpha").value).toFixed(2);
}

function setModifier(text) {
  state.modifier = text;
  $("modifier").value = text;
}

function hasReference() {
  return Boolean(state.ref || state.image);
}

function isRefined() {
  return Boolean(state.ref || (hasReference() && state.modifier) || state.minus.length || state.like.length
    || state.unlike.length);
}

function shortText(text, limit = 40) {
  return text.length > limit ? `${text.slice(0, limit - 1)}…` : text;
}

function itemLabel(item) {
  return shortText(item.caption || item.id);
}

function chip(kind, label, onRemove, item = null) {
  const li = document.createElement("li");
  li.className = `chip chip-${kind}`;
  if (item) {
    const img = document.createElement("img");
    img.alt = "";
    showImage(img, item.image_url);
    li.append(img);
  }
  const text = document.createElement("span");
  text.textContent = label;
  text.title = item ? (item.caption || item.id) : label;
  const remove = document.createElement("button");
  remove.type = "button"; remove.className = "link"; remove.textContent = "×";
  remove.setAttribute("aria-label", `remove ${label}`);
  remove.addEventListener("click", () => {
    onRemove();
    // the button is gone: keep keyboard focus nearby
    const next = document.querySelector("#chips button") || $("query");
    next.focus();
  });
  li.append(text, remove);
  return li;
}

function renderRefinements() {
  $("modifier-row").hidden = !hasReference();
  const chips = [];
  if (state.ref) {
    chips.push(chip("reference", `reference: ${itemLabel(state.ref)}`, () => {
      state.ref = null;
      if (!state.image) setModifier("");
      refineChanged();
    }, state.ref));
  } else if (state.image && isRefined()) {
    chips.push(chip("reference", `reference: ${state.image.name || "your image"}`, () => {
      $("image-input").value = ""; setImage(null); state.lastImage = null; refineChanged();
    }));
  }
  if (hasReference() && state.modifier) {
    chips.push(chip("modifier", `change: ${shortText(state.modifier)}`, () => { setModifier(""); refineChanged(); }));
  }
  state.minus.forEach((text, i) => chips.push(chip("minus", `without: ${shortText(text)}`, () => {
    state.minus.splice(i, 1); refineChanged();
  })));
  state.like.forEach((item, i) => chips.push(chip("like", `more like: ${itemLabel(item)}`, () => {
    state.like.splice(i, 1); refineChanged();
  }, item)));
  state.unlike.forEach((item, i) => chips.push(chip("unlike", `less like: ${itemLabel(item)}`, () => {
    state.unlike.splice(i, 1); refineChanged();
  }, item)));
  $("chips").replaceChildren(...chips);
  $("chips-row").hidden = !chips.length;
}

function clearRefinements() {
  state.ref = null; state.like = []; state.unlike = []; state.minus = [];
  setModifier("");
  $("minus").value = "";
}

// A refinement changed: show it and search again with the query on screen.
function refineChanged() {
  renderRefinements();
  if (state.lastText || state.image || isRefined()) {
    runSearch();
  } else {
    $("results").replaceChildren();
    $("composed").hidden = true;
    showMessage("");
  }
}

function markItem(hit, list) {
  const other = list === "like" ? "unlike" : "like";
  state[other] = state[other].filter((item) => item.id !== hit.id);
  if (state[list].some((item) => item.id === hit.id)) { // pressed again: undo
    state[list] = state[list].filter((item) => item.id !== hit.id);
    refineChanged();
    return;
  }
  if (state[list].length >= LIMITS[list]) {
    showMessage(`At most ${LIMITS[list]} items can be marked "${list === "like" ? "more" : "less"} like this".`, true);
    return;
  }
  state[list].push({ id: hit.id, caption: hit.caption, image_url: hit.image_url });
  refineChanged();
}

function refineFrom(hit) {
  state.ref = { id: hit.id, caption: hit.caption, image_url: hit.image_url };
  state.like = state.like.filter((item) => item.id !== hit.id);
  state.unlike = state.unlike.filter((item) => item.id !== hit.id);
  $("image-input").value = "";
  setImage(null); // after state.ref is set: keeps the modifier
  $("query").value = "";
  state.lastText = ""; state.lastImage = null; // the item is the query now
  updateAlpha();
  refineChanged();
  $("modifier").focus();
}

function cardButton(text, label, onClick, pressed = null) {
  const button = document.createElement("button");
  button.type = "button"; button.className = "card-action"; button.textContent = text;
  button.setAttribute("aria-label", label);
  button.title = label;
  if (pressed !== null) button.setAttribute("aria-pressed", String(pressed));
  button.addEventListener("click", (event) => { event.stopPropagation(); onClick(); });
  return button;
}

function renderResults(results) {
  const grid = $("results");
  grid.replaceChildren();
  if (!results.length) { showMessage("No results: try other words or fewer filters."); return; }
  const unliked = new Set(state.unlike.map((item) => item.id));
  for (const hit of results) {
    const card = document.createElement("article");
    card.className = "card";
    card.dataset.id = hit.id;
    const img = document.createElement("img");
    img.alt = hit.caption || hit.id; img.loading = "lazy";
    showImage(img, hit.image_url);
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
    const actions = document.createElement("div");
    actions.className = "actions";
    const name = shortText(hit.caption || hit.id, 60);
    actions.append(
      cardButton("more", `more like this: ${name}`, () => markItem(hit, "like")),
      cardButton("less", `less like this: ${name}`, () => markItem(hit, "unlike"), unliked.has(hit.id)),
      cardButton("refine", `refine from this item: ${name}`, () => refineFrom(hit)),
    );
    if (unliked.has(hit.id)) card.classList.add("unliked");
    body.append(score, caption, attrs, actions);
    card.append(img, body);
    card.addEventListener("click", () => openPreview(hit));
    grid.append(card);
  }
}

function openPreview(hit) {
  showImage($("preview-img"), hit.image_url);
  $("preview-caption").textContent = `${hit.caption} (${(hit.score * 100).toFixed(1)}%)`;
  $("preview").hidden = false;
}

function showComposed(result) {
  const box = $("composed");
  const parts = [];
  if (result.composed_caption) parts.push(`searching for: “${result.composed_caption}”`);
  else if (result.reference_caption) parts.push(`searching like: “${result.reference_caption}”`);
  if (result.reference_caption && result.caption_estimated) {
    parts.push(`(your image read as “${result.reference_caption}”, the caption of its nearest item)`);
  }
  box.textContent = parts.join(" ");
  box.hidden = !parts.length;
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
    link.addEventListener("click", () => runHistory(entry));
    const remove = document.createElement("button");
    remove.type = "button"; remove.className = "link"; remove.textContent = "×";
    remove.setAttribute("aria-label", `remove ${entry.label}`);
    remove.addEventListener("click", () => { state.history.splice(index, 1); saveHistory(); });
    item.append(link, remove);
    list.append(item);
  });
}

function runHistory(entry) {
  $("query").value = entry.text || "";
  state.lastText = entry.text || "";
  state.lastImage = state.image;
  const refine = entry.refine || {};
  state.ref = refine.ref || null;
  state.like = refine.like || [];
  state.unlike = refine.unlike || [];
  state.minus = refine.minus || [];
  setModifier(refine.modifier || "");
  updateAlpha();
  renderRefinements();
  runSearch();
}

// The request for the query on screen and its refinements: [path, fetch options, history label].
function buildRequest(text, topK, filters) {
  const modifier = hasReference() ? state.modifier : "";
  const compose = state.ref || modifier || state.like.length || state.unlike.length
    || (state.image && state.minus.length);
  const filterParts = Object.entries(filters).map(([k, v]) => `${k}=${v}`);
  if (compose) {
    const form = new FormData();
    // a plain text (or image + text) query refined by feedback: the text is the modifier
    const change = modifier || (state.ref ? "" : text);
    if (change) form.append("modifier", change);
    if (state.ref) form.append("item", state.ref.id);
    else if (state.image) form.append("image", state.image);
    state.minus.forEach((t) => form.append("minus", t));
    state.like.forEach((item) => form.append("like", item.id));
    state.unlike.forEach((item) => form.append("unlike", item.id));
    form.append("top_k", String(topK));
    form.append("filters", JSON.stringify(filters));
    const label = [change && `"${change}"`, state.ref && `like ${itemLabel(state.ref)}`,
      !state.ref && state.image && `image ${state.image.name}`,
      ...state.minus.map((t) => `without ${t}`), state.like.length && `+${state.like.length} liked`,
      state.unlike.length && `−${state.unlike.length} unliked`, ...filterParts].filter(Boolean).join(", ");
    return ["/api/search/compose", { method: "POST", body: form }, label];
  }
  if (state.image) {
    const form = new FormData();
    form.append("image", state.image);
    form.append("top_k", String(topK));
    form.append("filters", JSON.stringify(filters));
    const parts = [text && `"${text}"`, `image ${state.image.name}`,
      text && `α=${Number($("alpha").value).toFixed(2)}`, ...filterParts].filter(Boolean);
    if (text) {
      form.append("text", text);
      form.append("alpha", $("alpha").value);
      return ["/api/search/hybrid", { method: "POST", body: form }, parts.join(", ")];
    }
    return ["/api/search/image", { method: "POST", body: form }, parts.join(", ")];
  }
  const body = { query: text, top_k: topK, filters };
  if (state.minus.length) body.minus = [...state.minus];
  const label = [`"${text}"`, ...state.minus.map((t) => `without ${t}`), ...filterParts].join(", ");
  return ["/api/search/text", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  }, label];
}

async function runSearch() {
  const text = state.lastText;
  const topK = Number($("top-k").value) || 12;
  const filters = currentFilters();
  if (!text && !state.image && !state.ref && !state.like.length) {
    showMessage("Type a description or add an image first.", true);
    return;
  }
  const seq = ++state.seq;
  const grid = $("results");
  grid.setAttribute("aria-busy", "true");
  showMessage("Searching…");
  const [path, options, label] = buildRequest(text, topK, filters);
  const refine = isRefined() ? {
    ref: state.ref, modifier: state.modifier, minus: [...state.minus], like: [...state.like], unlike: [...state.unlike],
  } : null;
  try {
    const result = await api(path, options);
    if (seq !== state.seq) return; // a newer search is under way
    showMessage(`${result.results.length} results${refine ? " (refined)" : ""}`);
    renderResults(result.results);
    grid.dataset.endpoint = path;
    showComposed(result);
    state.history.push({ label: `${label} (${result.results.length})`, text, refine });
    saveHistory();
  } catch (error) {
    if (seq !== state.seq) return;
    grid.replaceChildren();
    grid.dataset.endpoint = path;
    $("composed").hidden = true;
    showMessage(error.message, true);
  } finally {
    if (seq === state.seq) grid.setAttribute("aria-busy", "false");
  }
}

// Either form (the search button, or Enter in the modifier or exclude box): the text box and the upload are the
// query; a new query drops the reference item and the feedback of the old one, and keeps the exclusions.
function submitQuery() {
  const text = $("query").value.trim();
  if (text !== state.lastText || state.image !== state.lastImage) {
    state.ref = null; state.like = []; state.unlike = [];
  }
  state.lastText = text;
  state.lastImage = state.image;
  const ok = takeRefineInputs();
  renderRefinements();
  if (ok) runSearch();
}

// The refinement form: the modifier as typed, and a new negative (its box is emptied into a chip).
function takeRefineInputs() {
  if (hasReference()) state.modifier = $("modifier").value.trim();
  const negative = $("minus").value.trim();
  if (negative && !state.minus.includes(negative)) {
    if (state.minus.length >= LIMITS.minus) {
      showMessage(`At most ${LIMITS.minus} exclusions: remove one first.`, true);
      return false;
    }
    state.minus.push(negative);
  }
  $("minus").value = "";
  return true;
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
  $("search-form").addEventListener("submit", (e) => { e.preventDefault(); submitQuery(); });
  $("refine-form").addEventListener("submit", (e) => { e.preventDefault(); submitQuery(); });
  $("clear-refinements").addEventListener("click", () => { clearRefinements(); refineChanged(); });
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
  renderRefinements();
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
