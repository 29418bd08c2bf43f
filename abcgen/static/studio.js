// abcgen studio: the page's logic.  Everything musical comes from the server
// (/api/sample, /api/render, /api/notes); this file only asks, shows and plays.
"use strict";

const $ = (id) => document.getElementById(id);

const DEFAULTS = {
  meters: ["2/4", "3/4", "4/4", "6/8", "9/8", "12/8", "3/2"],
  units: ["1/8", "1/16", "1/4"],
};
const TONICS = ["C", "G", "D", "A", "E", "B", "F#", "C#", "F", "Bb", "Eb", "Ab", "Db", "Gb", "Cb"];
const MODES = [["maj", "major"], ["min", "minor"], ["mix", "mixolydian"], ["dor", "dorian"],
               ["phr", "phrygian"], ["lyd", "lydian"], ["loc", "locrian"]];
// URL query names of the settings.
// "len" (the length cap in tokens) has no control on the page; a link may set it.
const PARAMS = ["meter", "unit", "key", "t", "top_p", "seed", "prime", "n", "len", "form", "bars"];

const state = {
  abc: "",          // the text the sheet music shows
  tunes: 1,
  renderId: 0,      // only the latest engraving request may update the page
  player: null,
  tempoTouched: false,
  maxTokens: null,  // from the link's "len", else the server's default
};

// ------------------------------------------------------------------ helpers

function option(sel, value, text) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text;
  sel.appendChild(o);
}

async function postJSON(url, body) {
  const r = await fetch(url, {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify(body),
  });
  if (!r.ok) {
    let err = {error: `${r.status} ${r.statusText}`, line: null};
    try { err = await r.json(); } catch (e) { /* not JSON */ }
    const e = new Error(err.error || String(err.detail || r.status));
    e.line = err.line;
    e.status = r.status;
    throw e;
  }
  return r;
}

function show(el, text) {
  el.textContent = text || "";
  el.hidden = !text;
}

function status(text) { $("status").textContent = text || ""; }

// ------------------------------------------------------------------ settings and URL

function keyValue() {
  const t = $("tonic").value;
  return t ? t + $("mode").value : "";
}

function settings() {
  const seed = parseInt($("seed").value, 10);
  return {
    meter: $("meter").value || null,
    unit: $("unit").value || null,
    key: keyValue() || null,
    temperature: parseFloat($("temperature").value),
    top_p: parseFloat($("top_p").value),
    seed: Number.isFinite(seed) && seed >= 0 ? seed : 0,
    prime: $("prime").value,
    count: Math.max(1, Math.min(16, parseInt($("count").value, 10) || 1)),
    ...(state.maxTokens ? {max_tokens: state.maxTokens} : {}),
    ...lengthValue(),
  };
}

// The Length menu: "form:AABB" -> {form: "AABB"}, "bars:16" -> {bars: 16}, "" -> nothing.
function lengthValue() {
  const [kind, v] = $("length").value.split(":");
  if (kind === "form" && v) return {form: v};
  if (kind === "bars" && v) return {bars: parseInt(v, 10)};
  return {};
}

function toQuery(s) {
  const q = new URLSearchParams();
  if (s.meter) q.set("meter", s.meter);
  if (s.unit) q.set("unit", s.unit);
  if (s.key) q.set("key", s.key);
  q.set("t", String(s.temperature));
  if (s.top_p < 1) q.set("top_p", String(s.top_p));
  q.set("seed", String(s.seed));
  if (s.prime) q.set("prime", s.prime);
  if (s.count > 1) q.set("n", String(s.count));
  if (s.max_tokens) q.set("len", String(s.max_tokens));
  if (s.form) q.set("form", s.form);
  if (s.bars) q.set("bars", String(s.bars));
  return q.toString();
}

function selectValue(sel, value) {
  if (value && ![...sel.options].some((o) => o.value === value)) option(sel, value, value);
  sel.value = value || "";
}

function fromQuery(search) {
  const q = new URLSearchParams(search);
  if (!PARAMS.some((p) => q.has(p))) return false;
  selectValue($("meter"), q.get("meter"));
  selectValue($("unit"), q.get("unit"));
  const key = q.get("key") || "";
  const m = key.match(/^([A-G][#b]?)(maj|min|mix|dor|phr|lyd|loc)$/);
  if (m) { selectValue($("tonic"), m[1]); $("mode").value = m[2]; } else { $("tonic").value = ""; }
  if (q.has("t")) $("temperature").value = q.get("t");
  if (q.has("top_p")) $("top_p").value = q.get("top_p");
  if (q.has("seed")) $("seed").value = q.get("seed");
  $("prime").value = q.get("prime") || "";
  $("count").value = q.get("n") || "1";
  state.maxTokens = parseInt(q.get("len"), 10) || null;
  const form = (q.get("form") || "").replace(/[^A-Z]/g, "");
  const bars = parseInt(q.get("bars"), 10);
  selectValue($("length"), form ? "form:" + form : (bars > 0 ? "bars:" + bars : ""));
  return true;
}

function syncControls() {
  $("temperature-out").textContent = Number($("temperature").value).toFixed(2);
  $("top_p-out").textContent = Number($("top_p").value).toFixed(2);
  $("tempo-out").textContent = $("tempo").value;
  // Meter, unit and key may each be given alone: the model chooses the others.
  $("mode").disabled = !$("tonic").value;
}

async function loadModel() {
  let info = {meters: [], units: [], keys: [], name: "?"};
  try {
    info = await (await fetch("/api/model")).json();
  } catch (e) { /* the defaults below still work */ }
  $("model-name").textContent = `model: ${info.name} (${info.level || "?"} level)`;
  const meters = info.meters && info.meters.length ? info.meters : DEFAULTS.meters;
  const units = info.units && info.units.length ? info.units : DEFAULTS.units;
  option($("meter"), "", "model's choice");
  meters.forEach((m) => option($("meter"), m, m));
  option($("unit"), "", "model's choice");
  units.forEach((u) => option($("unit"), u, u));
  option($("tonic"), "", "model's choice");
  // Offer the tonics the model knows when it lists its keys, else all.
  const known = new Set((info.keys || []).map((k) => (k.match(/^([A-G][#b]?)/) || [])[1]));
  TONICS.filter((t) => !known.size || known.has(t)).forEach((t) => option($("tonic"), t, t));
  MODES.forEach(([v, name]) => option($("mode"), v, name));
}

// ------------------------------------------------------------------ generate

async function generate() {
  const s = settings();
  history.replaceState(null, "", "?" + toQuery(s));
  show($("sample-error"), "");
  $("generate").disabled = true;
  status("Generating…");
  try {
    const r = await postJSON("/api/sample", s);
    const data = await r.json();
    $("abc").value = data.abc;
    await engrave(data.abc);
  } catch (e) {
    show($("sample-error"), e.message);
    status("");
  } finally {
    $("generate").disabled = false;
  }
}

// ------------------------------------------------------------------ engraving and the editor

function countTunes(text) {
  const n = (text.match(/^X:/gm) || []).length;
  return Math.max(1, n);
}

function updateGutter(badLine) {
  const lines = $("abc").value.split("\n").length;
  const g = $("gutter");
  g.textContent = "";
  for (let i = 1; i <= lines; i++) {
    const span = document.createElement("span");
    span.textContent = String(i);
    if (i === badLine) span.className = "bad";
    g.appendChild(span);
    g.appendChild(document.createTextNode("\n"));
  }
  g.scrollTop = $("abc").scrollTop;
}

function updateTunePicker(text) {
  const n = countTunes(text);
  state.tunes = n;
  const sel = $("tune-select");
  const keep = sel.value;
  sel.textContent = "";
  const titles = [];
  text.split(/^(?=X:)/m).forEach((chunk) => {
    if (!/^X:/.test(chunk)) return;
    const t = chunk.match(/^T:(.*)$/m);
    titles.push(t ? t[1].trim() : "");
  });
  for (let i = 1; i <= n; i++) option(sel, String(i), `${i}${titles[i - 1] ? ": " + titles[i - 1] : ""}`);
  if (keep && Number(keep) <= n) sel.value = keep;
  $("tune-pick").hidden = n < 2;
}

async function engrave(text) {
  const id = ++state.renderId;
  $("sheet").classList.add("stale");
  status("Engraving…");
  try {
    const r = await postJSON("/api/render", {abc: text, format: "svg"});
    const svg = await r.text();
    if (id !== state.renderId) return;
    $("sheet").innerHTML = svg;
    $("sheet").classList.remove("stale");
    state.abc = text;
    updateTunePicker(text);
    show($("abc-error"), "");
    updateGutter(null);
    setReady(true);
    status(`${state.tunes} tune${state.tunes > 1 ? "s" : ""} engraved.`);
  } catch (e) {
    if (id !== state.renderId) return;
    // Keep the last good sheet (dimmed) and say what is wrong, and where.
    show($("abc-error"), e.message);
    updateGutter(e.line || null);
    status("");
    setReady(Boolean(state.abc));
  }
}

function setReady(ok) {
  $("play").disabled = !ok;
  document.querySelectorAll("[data-download]").forEach((b) => { b.disabled = !ok; });
}

let editTimer = null;
function onEdit() {
  updateGutter(null);
  clearTimeout(editTimer);
  editTimer = setTimeout(() => engrave($("abc").value), 600);
}

// ------------------------------------------------------------------ downloads

function saveBlob(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

async function download(fmt) {
  const text = $("abc").value;
  const base = "abcgen-" + ($("seed").value || "tune");
  if (fmt === "abc") {
    saveBlob(new Blob([text], {type: "text/vnd.abc"}), base + ".abc");
    return;
  }
  const body = {abc: text, format: fmt};
  if (fmt === "mid" && state.tunes > 1) body.tune = Number($("tune-select").value);
  try {
    const r = await postJSON("/api/render", body);
    saveBlob(await r.blob(), base + (body.tune ? "-" + body.tune : "") + "." + fmt);
  } catch (e) {
    show($("abc-error"), e.message);
  }
}

// ------------------------------------------------------------------ the synthesiser

// A small plucked-string voice: a triangle and a quieter sine an octave up,
// through a low-pass filter, with a quick attack and an exponential decay.
class Synth {
  constructor() {
    this.ctx = new (window.AudioContext || window.webkitAudioContext)();
    this.master = this.ctx.createGain();
    this.master.gain.value = 0.25;
    this.filter = this.ctx.createBiquadFilter();
    this.filter.type = "lowpass";
    this.filter.frequency.value = 3200;
    this.filter.connect(this.master);
    this.master.connect(this.ctx.destination);
    this.voices = [];
  }

  note(pitch, start, dur) {
    const ctx = this.ctx;
    const f = 440 * Math.pow(2, (pitch - 69) / 12);
    const env = ctx.createGain();
    const end = start + Math.max(0.05, dur * 0.92);
    env.gain.setValueAtTime(0.0001, start);
    env.gain.exponentialRampToValueAtTime(0.9, start + 0.008);
    env.gain.exponentialRampToValueAtTime(0.35, start + Math.min(0.25, dur * 0.6));
    env.gain.setValueAtTime(0.35, end - 0.03);
    env.gain.exponentialRampToValueAtTime(0.0001, end);
    env.connect(this.filter);
    for (const [type, mult, gain] of [["triangle", 1, 1.0], ["sine", 2, 0.25]]) {
      const osc = ctx.createOscillator();
      osc.type = type;
      osc.frequency.value = f * mult;
      const g = ctx.createGain();
      g.gain.value = gain;
      osc.connect(g).connect(env);
      osc.start(start);
      osc.stop(end + 0.02);
      this.voices.push(osc);
    }
  }

  stop() {
    for (const v of this.voices) { try { v.stop(); } catch (e) { /* already stopped */ } }
    this.voices = [];
    this.ctx.close();
  }
}

async function play() {
  if (state.player) { stopPlaying(); return; }
  const tune = state.tunes > 1 ? Number($("tune-select").value) : 1;
  let notes;
  try {
    const r = await postJSON("/api/notes", {abc: state.abc || $("abc").value, tune});
    notes = await r.json();
  } catch (e) {
    show($("abc-error"), e.message);
    return;
  }
  if (!notes.events.length) return;
  if (!state.tempoTouched) {   // the tune's own tempo (Q:, else one for its meter) until the player moves the slider
    $("tempo").value = String(Math.round(notes.qpm));
    syncControls();
  }
  const qpm = Number($("tempo").value);
  const sec = 60 / qpm;
  const synth = new Synth();
  const t0 = synth.ctx.currentTime + 0.1;
  for (const ev of notes.events) synth.note(ev.pitch, t0 + ev.onset * sec, ev.duration * sec);
  const total = notes.length * sec;
  state.player = {synth, t0, total};
  $("play").innerHTML = "&#9632; Stop";
  const tick = () => {
    const p = state.player;
    if (!p || p.synth !== synth) return;
    const done = (synth.ctx.currentTime - t0) / total;
    $("progress").value = Math.max(0, Math.min(1, done));
    if (done >= 1) { stopPlaying(); return; }
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}

function stopPlaying() {
  if (!state.player) return;
  state.player.synth.stop();
  state.player = null;
  $("play").innerHTML = "&#9654; Play";
  $("progress").value = 0;
}

// ------------------------------------------------------------------ start

async function start() {
  await loadModel();
  const fromLink = fromQuery(location.search);
  if (!fromLink) $("seed").value = String(Math.floor(Math.random() * 100000));
  syncControls();
  ["meter", "unit", "tonic", "mode", "length", "temperature", "top_p", "tempo"].forEach((id) =>
    $(id).addEventListener("input", syncControls));
  $("tempo").addEventListener("input", () => { state.tempoTouched = true; });
  $("dice").addEventListener("click", () => {
    $("seed").value = String(Math.floor(Math.random() * 100000));
  });
  $("settings").addEventListener("submit", (ev) => { ev.preventDefault(); generate(); });
  $("abc").addEventListener("input", onEdit);
  $("abc").addEventListener("scroll", () => { $("gutter").scrollTop = $("abc").scrollTop; });
  $("play").addEventListener("click", play);
  document.querySelectorAll("[data-download]").forEach((b) =>
    b.addEventListener("click", () => download(b.dataset.download)));
  updateGutter(null);
  generate();
}

start();
