// tinymlaas Studio, search page: redraw the Pareto plot and the candidate table as
// candidates finish (polls the page's body while the search runs; no framework).
"use strict";

(function () {
  const POLL_MS = 1500;
  const config = { responsive: true, displaylogo: false, displayModeBar: "hover" };
  const state = (window.tinymlaasSearch = { polls: 0, candidates: 0, done: false, drawn: 0 });

  function draw() {
    const script = document.getElementById("search-figure");
    if (!script || !window.Plotly) return;
    const fig = JSON.parse(script.textContent);
    Plotly.react("search-plot", fig.data, fig.layout, config);
    state.drawn += 1;
    document.body.dataset.plotsReady = "1";
  }

  function showState(live) {
    const head = document.getElementById("search-state");
    const value = live.dataset.state;
    head.innerHTML = "";
    const badge = document.createElement("span");
    badge.className = `badge s-${value}`;
    badge.dataset.status = value;
    badge.textContent = value;
    head.appendChild(badge);
    state.candidates = Number(live.dataset.candidates || 0);
    state.done = live.dataset.live !== "1";
    const cancel = document.getElementById("cancel-search");
    if (cancel && state.done) cancel.hidden = true;
  }

  function start(body) {
    const note = document.getElementById("live-note");
    const url = `/searches/${encodeURIComponent(body.dataset.search)}/body`;
    const poll = async () => {
      try {
        const response = await fetch(url, { credentials: "same-origin" });
        if (response.ok) {
          body.innerHTML = await response.text();
          state.polls += 1;
          draw();
        }
      } catch (e) {
        note.textContent = "Connection lost; retrying…";
      }
      const live = document.getElementById("search-live");
      showState(live);
      if (state.done) {
        note.textContent = "Search ended.";
      } else {
        note.textContent = `Live: ${state.candidates} candidate(s) so far…`;
        window.setTimeout(poll, POLL_MS);
      }
    };
    const live = document.getElementById("search-live");
    showState(live);
    if (!state.done) window.setTimeout(poll, POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const body = document.getElementById("search-body");
    if (!body) return;
    if (window.Plotly) draw(); else window.addEventListener("load", draw);
    start(body);
  });
})();
