// Rater page of `sr3 study serve`.
//
// This script knows nothing about the answer: the server hands it an opaque
// trial id and three opaque image URLs, and it sends back "left" or "right"
// with the response time.  It never sees which image is real, the method, or
// any file name.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const body = document.body;
  const SCREENS = ["consent", "instructions", "trial", "done", "error"];

  let state = null;      // last state from the server
  let started = false;   // past the instructions in this page load
  let ready = false;     // images are on screen and an answer is accepted
  let busy = false;      // a request is in flight
  let shownAt = 0;
  let hideTimer = null;

  function show(screen) {
    for (const s of SCREENS) $("screen-" + s).hidden = s !== screen;
    body.dataset.screen = screen;
  }

  function setReady(value) {
    ready = value;
    body.dataset.ready = value ? "1" : "0";
  }

  async function api(path, payload) {
    const options = payload === undefined
      ? { credentials: "same-origin", cache: "no-store" }
      : { method: "POST", credentials: "same-origin", cache: "no-store",
          headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload) };
    const response = await fetch(path, options);
    let data = null;
    try { data = await response.json(); } catch (e) { /* not JSON */ }
    if (!response.ok) {
      const detail = data && typeof data.detail === "string" ? data.detail : "HTTP " + response.status;
      const error = new Error(detail);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  // Network errors and 5xx are retried with back-off.  Re-sending an answer is
  // safe: the server recognises it and does not count it twice.
  async function withRetry(fn) {
    let delay = 250;
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn();
      } catch (error) {
        if ((error.status && error.status < 500) || attempt >= 8) throw error;
        $("status").textContent = "Connection problem, retrying\u2026";
        await new Promise((resolve) => setTimeout(resolve, delay));
        delay = Math.min(delay * 2, 4000);
      }
    }
  }

  function fail(error) {
    setReady(false);
    busy = false;
    // A refused consent (e.g. 429, too many new sessions) has no answers to speak of.
    $("error-text").textContent = (error && error.message ? error.message : String(error)) +
      (state && state.registered ? ". Your answers so far are saved." : ".");
    show("error");
  }

  function render(next) {
    state = next;
    if (!state.registered) {
      $("consent-text").textContent = state.consent;
      show("consent");
      $("agree").focus();
      return;
    }
    if (state.resume) {
      const url = new URL(state.resume, location.href).href;
      $("resume-link").href = url;
      $("resume-link").textContent = url;
      $("resume").hidden = false;
    }
    body.dataset.answered = String(state.answered);
    if (state.done) {
      show("done");
      return;
    }
    if (!started) {
      showInstructions();
      return;
    }
    startTrial();
  }

  function showInstructions() {
    $("instructions-title").textContent = state.answered > 0 ? "Welcome back" : "How it works";
    $("instructions-question").textContent = state.question;
    $("middle-note").hidden = !(state.trial && state.trial.middle);
    $("display-note").textContent = state.display_ms > 0
      ? "The images disappear after " + state.display_ms / 1000 + " seconds; answer while they are shown or after."
      : "The images stay until you answer.";
    show("instructions");
    $("begin").focus();
  }

  function loadInto(img, src) {
    return new Promise((resolve, reject) => {
      img.onload = () => resolve();
      img.onerror = () => reject(new Error("an image could not be loaded"));
      img.src = src;
    });
  }

  async function startTrial() {
    const trial = state.trial;
    setReady(false);
    clearTimeout(hideTimer);
    const stage = $("stage");
    stage.classList.add("loading");
    stage.classList.remove("expired");
    body.dataset.expired = "0";
    $("question").textContent = state.question;
    $("progress-text").textContent = (state.answered + 1) + " / " + state.total;
    $("bar").style.width = (100 * state.answered / state.total) + "%";
    $("middle").hidden = !trial.middle;
    $("status").textContent = "";
    show("trial");
    try {
      const loads = [loadInto($("img-left"), trial.left), loadInto($("img-right"), trial.right)];
      if (trial.middle) loads.push(loadInto($("img-middle"), trial.middle));
      await Promise.all(loads);
    } catch (error) {
      fail(error);
      return;
    }
    if (state.trial !== trial) return;  // superseded meanwhile
    // The low-resolution input is shown at the size of the candidates.
    $("img-middle").style.width = trial.middle ? $("img-left").naturalWidth + "px" : "";
    // Reveal both images in the same frame, then start the clock.
    requestAnimationFrame(() => {
      stage.classList.remove("loading");
      shownAt = performance.now();
      setReady(true);
      if (state.display_ms > 0) {
        // The paper shows each pair for 3 s (Saharia et al. 2021, Sec. 4.2), then hides it.
        hideTimer = setTimeout(() => {
          stage.classList.add("expired");
          body.dataset.expired = "1";
        }, state.display_ms);
      }
    });
  }

  async function answer(side) {
    if (!ready || busy) return;
    setReady(false);
    busy = true;
    const rt = Math.round(performance.now() - shownAt);
    clearTimeout(hideTimer);
    const button = $("choice-" + side);
    button.classList.add("picked");
    const payload = { trial: state.trial.id, choice: side, rt_ms: rt };
    try {
      const result = await withRetry(() => api("/api/answer", payload));
      button.classList.remove("picked");
      busy = false;
      render(result.state);
    } catch (error) {
      button.classList.remove("picked");
      fail(error);
    }
  }

  async function consent() {
    if (busy) return;
    busy = true;
    try {
      const next = await withRetry(() => api("/api/consent", { consent: true }));
      busy = false;
      render(next);
    } catch (error) {
      fail(error);
    }
  }

  function begin() {
    if (!state || state.done) return;
    started = true;
    startTrial();
  }

  async function reload() {
    try {
      render(await withRetry(() => api("/api/state")));
    } catch (error) {
      fail(error);
    }
  }

  $("agree").addEventListener("click", consent);
  $("begin").addEventListener("click", begin);
  $("retry").addEventListener("click", reload);
  $("choice-left").addEventListener("click", () => answer("left"));
  $("choice-right").addEventListener("click", () => answer("right"));
  document.addEventListener("keydown", (event) => {
    if (event.repeat || event.altKey || event.ctrlKey || event.metaKey) return;
    const screen = body.dataset.screen;
    if (screen === "trial") {
      if (event.key === "ArrowLeft") { event.preventDefault(); answer("left"); }
      else if (event.key === "ArrowRight") { event.preventDefault(); answer("right"); }
    } else if (event.key === "Enter") {
      if (screen === "consent") { event.preventDefault(); consent(); }
      else if (screen === "instructions") { event.preventDefault(); begin(); }
      else if (screen === "error") { event.preventDefault(); reload(); }
    }
  });

  reload();
})();
