// sr3 demo page: upload, poll the job, show new frames as they arrive, compare and download.
"use strict";
const $ = (id) => document.getElementById(id);
let options = null, file = null, job = null, shownSeq = 0, pollTimer = null, beforeUrl = null, resultUrl = null;

function setStatus(text) { $("status").textContent = text; }
function setState(state) { document.body.dataset.state = state; }

async function loadOptions() {
  const r = await fetch("/api/options");
  options = await r.json();
  for (const m of options.methods) {
    const o = document.createElement("option");
    o.value = m.name; o.textContent = `${m.name} (${m.scale}x)`;
    $("method").appendChild(o);
  }
  for (const s of options.samplers) {
    const o = document.createElement("option");
    o.value = s; o.textContent = s;
    $("sampler").appendChild(o);
  }
  const mb = (options.limits.max_upload_bytes / 1048576).toFixed(1);
  $("limits").textContent = `Uploads: at most ${mb} MB and ${options.limits.max_pixels} pixels.`;
  methodChanged();
}

function methodChanged() {
  const m = options.methods.find((x) => x.name === $("method").value);
  const s = m.sampling;
  for (const id of ["sampler", "steps", "temperature"]) $(id).disabled = !s;
  if (s) { $("sampler").value = s.sampler; $("steps").value = s.steps; $("temperature").value = s.temperature; }
}

function pick(f) {
  if (!f) return;
  file = f;
  if (beforeUrl) URL.revokeObjectURL(beforeUrl);
  beforeUrl = URL.createObjectURL(f);
  $("file-info").textContent = `${f.name}, ${f.size} bytes`;
  $("drop-text").textContent = f.name;
  $("run").disabled = false;
  setStatus("Ready: press Upscale.");
}

async function run() {
  if (!file) return;
  const m = options.methods.find((x) => x.name === $("method").value);
  const q = new URLSearchParams({method: m.name, name: file.name, seed: $("seed").value || "0"});
  if (m.sampling) {
    q.set("sampler", $("sampler").value); q.set("steps", $("steps").value);
    q.set("temperature", $("temperature").value);
  }
  $("run").disabled = true;
  setStatus("Uploading…");
  const r = await fetch("/api/jobs?" + q.toString(), {method: "POST", body: file,
                                                       headers: {"Content-Type": "application/octet-stream"}});
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    setStatus(`Refused: ${body.detail || r.statusText}`);
    setState("refused");
    $("run").disabled = false;
    return;
  }
  job = {id: body.id, width: body.width, height: body.height, staged: m.name === "cascade"};
  shownSeq = 0;
  document.body.dataset.framesSeen = "0";
  document.body.dataset.frameSteps = "";
  $("cancel").disabled = false;
  $("compare-box").hidden = true;
  $("live-box").hidden = false;
  $("live").removeAttribute("src");
  $("progress").value = 0;
  setState("queued");
  poll();
}

async function poll() {
  if (!job) return;
  const r = await fetch(`/api/jobs/${job.id}`);
  if (!r.ok) { setStatus("Lost the job; reload the page."); return; }
  const s = await r.json();
  if (s.frame_seq > shownSeq) {
    shownSeq = s.frame_seq;
    $("live").src = `/api/jobs/${job.id}/frame?seq=${s.frame_seq}`;
    // Which steps were shown (read by the browser test: proof that intermediate frames arrive).
    document.body.dataset.frameSteps = `${document.body.dataset.frameSteps || ""} ${s.step}`.trim();
  }
  if (s.evaluations_total) $("progress").value = s.evaluations_done / s.evaluations_total;
  $("step-text").textContent = !s.step ? "" : job.staged ? `(stage ${s.stage}, step ${s.step})` : `(step ${s.step})`;
  if (s.status === "queued") {
    setState("queued");
    setStatus(`Queued: ${s.position} job(s) ahead.`);
  } else if (s.status === "running") {
    setState("running");
    setStatus(`Running: ${s.evaluations_done} of ${s.evaluations_total} network evaluations.`);
  } else {
    finished(s);
    return;
  }
  pollTimer = setTimeout(poll, 200);
}

async function finished(s) {
  $("cancel").disabled = true;
  $("run").disabled = !file;
  const id = job.id, size = job;
  job = null;
  if (s.status !== "done") {
    setState(s.status);
    setStatus(s.status === "cancelled" ? "Cancelled." : `Failed: ${s.error}`);
    return;
  }
  const r = await fetch(`/api/jobs/${id}/result`);
  const blob = await r.blob();
  if (resultUrl) URL.revokeObjectURL(resultUrl);
  resultUrl = URL.createObjectURL(blob);
  $("before").src = beforeUrl;
  $("before").width = size.width;
  $("after").src = resultUrl;
  $("download").href = resultUrl;
  $("download").download = s.filename;
  $("progress").value = 1;
  $("compare-box").hidden = false;
  setStatus(`Done: ${size.width}x${size.height} px.`);
  setState("done");
}

async function cancel() {
  if (!job) return;
  await fetch(`/api/jobs/${job.id}/cancel`, {method: "POST"});
  setStatus("Cancelling…");
}

function slide() {
  const v = $("slider").value;
  $("after-clip").style.left = `${v}%`;
}

window.addEventListener("DOMContentLoaded", () => {
  $("live").addEventListener("load", () => {
    document.body.dataset.framesSeen = String(Number(document.body.dataset.framesSeen) + 1);
  });
  $("file").addEventListener("change", (e) => pick(e.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over");
    pick(e.dataTransfer.files[0]);
  });
  $("method").addEventListener("change", methodChanged);
  $("run").addEventListener("click", run);
  $("cancel").addEventListener("click", cancel);
  $("slider").addEventListener("input", slide);
  // The after image is positioned inside a clip box; keep it (and the slider) as wide as the before image.
  new ResizeObserver(() => {
    const width = `${$("before").clientWidth}px`;
    $("after").style.width = width;
    $("slider").style.width = width;
  }).observe($("before"));
  loadOptions();
});
