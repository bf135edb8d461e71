// The page of remixer-serve: fills the forms from /api/info, submits a job, follows its progress
// and shows the result. No framework, nothing loaded from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
let busy = false;

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function errorText(response) {
  try {
    const doc = await response.json();
    return doc.field ? `${doc.field}: ${doc.error}` : doc.error;
  } catch (e) {
    return `HTTP ${response.status}`;
  }
}

function setBusy(on) {
  busy = on;
  for (const b of document.querySelectorAll("button")) b.disabled = on;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// Polls the job until it ends; the progress bar shows the sampler's own progress.
async function follow(id) {
  $("working").hidden = false;
  $("result").hidden = true;
  for (;;) {
    const r = await fetch(`/api/jobs/${id}`, { cache: "no-store" });
    if (!r.ok) throw new Error(await errorText(r));
    const job = await r.json();
    $("progress").value = job.progress;
    $("status").textContent = job.state === "queued"
      ? `Queued (${job.queue_position} ahead)`
      : `${job.state[0].toUpperCase()}${job.state.slice(1)}: ${Math.round(job.progress * 100)}%`;
    if (job.state === "done") return job;
    if (job.state === "failed" || job.state === "cancelled")
      throw new Error(job.field ? `${job.field}: ${job.error}` : job.error);
    await sleep(250);
  }
}

function showResult(id, name) {
  const audio = `/api/jobs/${id}/audio.wav`;
  $("player").src = audio;
  $("mel").src = `/api/jobs/${id}/mel.png`;
  $("download").href = audio;
  $("download").download = name;
  $("working").hidden = true;
  $("result").hidden = false;
  $("result-title").focus();
}

async function run(url, init, name) {
  if (busy) return;
  showError("");
  setBusy(true);
  try {
    const r = await fetch(url, init);
    if (!r.ok) throw new Error(await errorText(r));
    const job = await r.json();
    await follow(job.id);
    showResult(job.id, name);
  } catch (e) {
    $("working").hidden = true;
    showError(e.message);
  } finally {
    setBusy(false);
  }
}

function generate(event) {
  event.preventDefault();
  const body = {
    genre: $("genre").value,
    seconds: Number($("seconds").value),
    seed: Number($("seed").value),
    cfg: Number($("cfg").value),
  };
  run("/api/generate", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  }, `${body.genre}-${body.seed}.wav`);
}

function remix(event) {
  event.preventDefault();
  run("/api/remix", { method: "POST", body: new FormData($("remix-form")) }, "remix.wav");
}

function fill(info) {
  const m = info.model;
  $("model").textContent = `${m.checkpoint}: stage ${info.stage}, step ${m.step}, ${m.device}, ` +
    `${m.sample_rate} Hz; offers ${info.operations.join(" and ")}`;
  if (info.operations.includes("generate")) {
    const g = info.defaults.generate;
    for (const name of info.genres) $("genre").add(new Option(name, name));
    $("seconds").value = g.seconds.toFixed(2);
    $("seconds").max = info.limits.max_seconds;
    $("cfg").value = g.cfg;
    $("seed").value = g.seed;
    $("generate").hidden = false;
  }
  if (info.operations.includes("remix")) {
    $("strength").value = info.defaults.remix.strength;
    $("strength-value").textContent = $("strength").value;
    $("remix").hidden = false;
  }
}

async function start() {
  $("generate-form").addEventListener("submit", generate);
  $("remix-form").addEventListener("submit", remix);
  $("strength").addEventListener("input", () => { $("strength-value").textContent = $("strength").value; });
  try {
    const r = await fetch("/api/info");
    if (!r.ok) throw new Error(await errorText(r));
    fill(await r.json());
    document.body.dataset.ready = "1";
  } catch (e) {
    showError(`Cannot load the model's facts: ${e.message}`);
  }
}

start();
