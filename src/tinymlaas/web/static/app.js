// tinymlaas Studio: the little JavaScript the pages need (no framework).
"use strict";

(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

  // ---- new run: template or step builder ---------------------------------------------------
  function initRunForm(form) {
    const panels = $$(".mode-panel", form);
    const radios = $$("input[name=mode]", form);
    const showMode = () => {
      const mode = (radios.find((r) => r.checked) || radios[0]).value;
      panels.forEach((p) => { p.hidden = p.dataset.mode !== mode; });
    };
    radios.forEach((r) => r.addEventListener("change", showMode));
    showMode();

    // The template follows the model (the default int8 for its format) until the user
    // picks one; the fidelity threshold of the dataset's task is marked.
    const model = $("#model", form);
    const template = $("#template", form);
    let templateChosen = false;
    template.addEventListener("change", () => { templateChosen = true; });
    model.addEventListener("change", () => {
      const wanted = model.selectedOptions[0] && model.selectedOptions[0].dataset.template;
      if (!templateChosen && wanted && $(`option[value="${CSS.escape(wanted)}"]`, template)) {
        template.value = wanted;
      }
    });
    const dataset = $("#dataset", form);
    const markTask = () => {
      const task = dataset.selectedOptions[0] && dataset.selectedOptions[0].dataset.task;
      $$("#fidelity .field", form).forEach((f) => {
        f.classList.toggle("current", f.dataset.task === task);
      });
    };
    dataset.addEventListener("change", markTask);
    markTask();

    const list = $("#steps-list");
    const hidden = $("#steps-json");
    let counter = 0;

    function paramValue(field) {
      const kind = field.dataset.kind;
      const input = $("input, select, textarea", field);
      if (kind === "bool") return input.checked;
      const text = input.value.trim();
      if (text === "") return undefined;
      if (kind === "int" || kind === "number") {
        const n = Number(text);
        return Number.isFinite(n) ? n : text; // the server names the bad value
      }
      if (kind === "list") return text.split(",").map((s) => s.trim()).filter(Boolean);
      if (kind === "json") { try { return JSON.parse(text); } catch (e) { return text; } }
      return text;
    }

    function setParam(field, value) {
      const input = $("input, select, textarea", field);
      const kind = field.dataset.kind;
      if (kind === "bool") input.checked = Boolean(value);
      else if (kind === "list" && Array.isArray(value)) input.value = value.join(", ");
      else if (kind === "json") input.value = JSON.stringify(value);
      else input.value = value;
    }

    function renumber() {
      $$(".step-card", list).forEach((card, i, all) => {
        $(".up", card).disabled = i === 0;
        $(".down", card).disabled = i === all.length - 1;
      });
    }

    function addStep(name, params) {
      const tpl = $(`template[data-transformer="${CSS.escape(name)}"]`);
      if (!tpl) return null;
      const id = `step${++counter}`;
      const card = document.createElement("li");
      card.className = "step-card";
      card.dataset.transformer = name;
      card.innerHTML = `<header><h3></h3><div class="tools">
          <button type="button" class="small up" aria-label="Move step up">↑</button>
          <button type="button" class="small down" aria-label="Move step down">↓</button>
          <button type="button" class="small remove" aria-label="Remove step">Remove</button>
        </div></header><p class="hint summary"></p><div class="step-params"></div>
        <p class="field-error step-error" role="alert" hidden></p>`;
      $("h3", card).textContent = name;
      $(".summary", card).textContent = tpl.dataset.summary || "";
      const body = $(".step-params", card);
      body.appendChild(tpl.content.cloneNode(true));
      $$("[id^='TPL-']", body).forEach((el) => { el.id = el.id.replace(/^TPL-/, `${id}-`); });
      $$("label[for^='TPL-']", body).forEach((el) => {
        el.htmlFor = el.htmlFor.replace(/^TPL-/, `${id}-`);
      });
      Object.entries(params || {}).forEach(([key, value]) => {
        const field = $(`.param[data-param="${CSS.escape(key)}"]`, body);
        if (field) setParam(field, value);
      });
      $(".up", card).addEventListener("click", () => {
        if (card.previousElementSibling) list.insertBefore(card, card.previousElementSibling);
        renumber();
      });
      $(".down", card).addEventListener("click", () => {
        if (card.nextElementSibling) list.insertBefore(card.nextElementSibling, card);
        renumber();
      });
      $(".remove", card).addEventListener("click", () => { card.remove(); renumber(); });
      list.appendChild(card);
      renumber();
      return card;
    }

    function collect() {
      return $$(".step-card", list).map((card) => {
        const params = {};
        $$(".param", card).forEach((field) => {
          const value = paramValue(field);
          if (value !== undefined) params[field.dataset.param] = value;
        });
        return { transformer: card.dataset.transformer, params: params };
      });
    }

    if (list) {
      let saved = [];
      try { saved = JSON.parse(hidden.value || "[]"); } catch (e) { saved = []; }
      saved.forEach((s) => addStep(s.transformer, s.params));
      const errors = JSON.parse(($("#step-errors") || {}).textContent || "null");
      if (errors && errors.step !== null) {
        const card = $$(".step-card", list)[errors.step];
        if (card) {
          card.classList.add("has-error");
          let placed = false;
          Object.entries(errors.fields || {}).forEach(([name, msg]) => {
            const slot = $(`[data-error-for="${CSS.escape(name)}"]`, card);
            if (slot) { slot.textContent = msg; slot.hidden = false; placed = true; }
          });
          if (!placed) {
            const slot = $(".step-error", card);
            slot.textContent = errors.message; slot.hidden = false;
          }
        }
      }
      $("#add-step").addEventListener("click", () => {
        const card = addStep($("#add-transformer").value, {});
        if (card) $("button.remove", card).focus();
      });
      form.addEventListener("submit", () => { hidden.value = JSON.stringify(collect()); });
    }
  }

  // ---- run page: live status over server-sent events ----------------------------------------
  function initRunPage(body) {
    const live = (window.tinymlaasLive = { events: 0, progress: 0, seen: [], ended: false });
    if (body.dataset.live !== "1" || !window.EventSource) return;
    const note = $("#live-note");
    const runId = body.dataset.run;
    const setStatus = (cell, status) => {
      if (!cell) return;
      cell.innerHTML = "";
      const badge = document.createElement("span");
      badge.className = `badge s-${status}`;
      badge.dataset.status = status;
      badge.textContent = status;
      cell.appendChild(badge);
    };
    const updateRow = (stage, status, progress, message) => {
      const row = document.querySelector(`[data-stage="${CSS.escape(String(stage))}"]`);
      if (!row) return;
      setStatus($(".st", row), status);
      const bar = $("progress", row);
      if (bar && typeof progress === "number") bar.value = progress;
      const msg = $(".msg", row);
      if (msg && message !== undefined) msg.textContent = message || "";
      live.seen.push(`${stage}:${status}`);
    };
    const updateRun = (status) => {
      const head = $("#run-status");
      head.dataset.status = status;
      setStatus(head, status);
      $$(".live-only").forEach((el) => { el.hidden = !["pending", "running"].includes(status); });
    };
    const source = new EventSource(`/runs/${encodeURIComponent(runId)}/events`);
    note.textContent = "Live: following the run…";
    source.addEventListener("run", (e) => {
      const run = JSON.parse(e.data);
      live.events += 1;
      updateRun(run.status);
      (run.steps || []).forEach((s) => updateRow(s.index, s.status, s.progress, s.error || s.message));
    });
    source.addEventListener("progress", (e) => {
      const ev = JSON.parse(e.data);
      live.events += 1;
      live.progress += 1;
      if (ev.stage === "run") return;
      updateRow(ev.stage, ev.status, ev.progress, ev.message);
    });
    source.addEventListener("end", async () => {
      source.close();
      note.textContent = "Run finished; results loaded.";
      try {
        const response = await fetch(`/runs/${encodeURIComponent(runId)}/body`,
                                     { credentials: "same-origin" });
        if (response.ok) { body.innerHTML = await response.text(); drawLayers(); }
      } finally {
        live.ended = true;
      }
    });
    source.onerror = () => {
      if (!live.ended) note.textContent = "Connection lost; reconnecting…";
    };
  }

  // ---- run page: the per-layer chart (JSON from the page, drawn once plotly is loaded) -----
  function drawLayers() {
    const script = $("#layers-figure");
    if (!script) return;
    const draw = () => {
      if (!window.Plotly) return;
      const fig = JSON.parse(script.textContent);
      Plotly.newPlot(fig.id, fig.data, fig.layout, { responsive: true, displaylogo: false });
      document.body.dataset.layersReady = "1";
    };
    if (window.Plotly) draw(); else window.addEventListener("load", draw);
  }

  // ---- comparison: plotly charts --------------------------------------------------------------
  function initCompare(script) {
    const figures = JSON.parse(script.textContent);
    const narrow = window.matchMedia("(max-width: 640px)").matches;
    const config = { responsive: true, displaylogo: false,
                     displayModeBar: narrow ? false : "hover" };
    const draw = () => {
      if (!window.Plotly) return;
      figures.scatters.forEach((fig) => Plotly.newPlot(fig.id, fig.data, fig.layout, config));
      const select = $("#bar-metric");
      const drawBars = () => {
        const fig = figures.bars[select.value];
        Plotly.react("plot-bars", fig.data, fig.layout, config);
      };
      select.addEventListener("change", drawBars);
      drawBars();
      document.body.dataset.plotsReady = "1";
    };
    if (window.Plotly) draw(); else window.addEventListener("load", draw);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const form = $("#run-form");
    if (form) initRunForm(form);
    const body = $("#run-body");
    if (body) { initRunPage(body); drawLayers(); }
    const figures = $("#compare-figures");
    if (figures) initCompare(figures);
  });
})();
