/* Leaderboard page behaviour: sort, filter, expand rows, copy recipes, draw charts.
   Plain DOM, no network. Each trial is its own <tbody> (summary row + details row), so
   sorting moves a trial's details with it. Text is only ever set via textContent. */
(function () {
  "use strict";

  var table = document.getElementById("leaderboard");

  function trials() {
    return Array.prototype.slice.call(table.tBodies);
  }

  // ------------------------------------------------------------------ sorting
  function sortKey(tbody, index, type) {
    var cell = tbody.rows[0].cells[index];
    var raw = cell ? cell.getAttribute("data-sort") : "";
    if (raw === null || raw === "") return null; // no data / not evaluated: always last
    if (type === "num") {
      var value = parseFloat(raw);
      return isNaN(value) ? null : value;
    }
    return raw;
  }

  function sortBy(th) {
    var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
    var index = headers.indexOf(th);
    var type = th.getAttribute("data-type") || "text";
    var current = th.getAttribute("aria-sort");
    // First click: best first for numbers (descending), A-Z for text; then toggle.
    var dir = current ? (current === "ascending" ? "descending" : "ascending")
                      : (type === "num" && index !== 0 ? "descending" : "ascending");
    headers.forEach(function (h) {
      h.removeAttribute("aria-sort");
      h.classList.remove("sorted-asc", "sorted-desc");
    });
    th.setAttribute("aria-sort", dir);
    th.classList.add(dir === "ascending" ? "sorted-asc" : "sorted-desc");
    var sign = dir === "ascending" ? 1 : -1;
    var rows = trials().map(function (tb) {
      return { tb: tb, key: sortKey(tb, index, type), order: +tb.getAttribute("data-order") };
    });
    rows.sort(function (a, b) {
      if (a.key === null && b.key === null) return a.order - b.order;
      if (a.key === null) return 1;
      if (b.key === null) return -1;
      var c = type === "num" ? a.key - b.key : a.key.localeCompare(b.key);
      return c !== 0 ? sign * c : a.order - b.order;
    });
    rows.forEach(function (r) { table.appendChild(r.tb); });
  }

  // ------------------------------------------------------------------ filtering
  var text = document.getElementById("filter-text");
  var selects = {
    study: document.getElementById("filter-study"),
    method: document.getElementById("filter-method"),
    align: document.getElementById("filter-align")
  };

  function applyFilter() {
    var words = text.value.toLowerCase().split(/\s+/).filter(Boolean);
    var shown = 0;
    var all = trials();
    all.forEach(function (tb) {
      var hay = tb.getAttribute("data-search") || "";
      var ok = words.every(function (w) { return hay.indexOf(w) !== -1; });
      Object.keys(selects).forEach(function (k) {
        var want = selects[k] ? selects[k].value : "";
        if (want && tb.getAttribute("data-" + k) !== want) ok = false;
      });
      tb.hidden = !ok;
      if (ok) shown += 1;
    });
    document.getElementById("shown-count").textContent = shown + " of " + all.length + " shown";
    document.getElementById("no-match").hidden = shown !== 0;
  }

  // ------------------------------------------------------------------ details
  function setExpanded(tbody, open) {
    var button = tbody.querySelector("button.toggle");
    var details = tbody.rows[1];
    if (!button || !details) return;
    details.hidden = !open;
    button.setAttribute("aria-expanded", open ? "true" : "false");
    button.textContent = open ? "▾" : "▸";
    tbody.classList.toggle("expanded", open);
  }

  function openFromHash() {
    var id = decodeURIComponent(window.location.hash.slice(1));
    if (!id) return;
    var target = document.getElementById(id);
    if (target && target.tagName === "TBODY") {
      setExpanded(target, true);
      target.scrollIntoView({ block: "start" });
    }
  }

  // ------------------------------------------------------------------ copy
  function copyText(button) {
    var pre = document.getElementById(button.getAttribute("data-copy"));
    if (!pre) return;
    var value = pre.textContent;
    function done(label) {
      button.textContent = label;
      window.setTimeout(function () { button.textContent = "copy"; }, 1500);
    }
    function fallback() {
      // file:// pages may not get the async clipboard: select the text and use execCommand.
      var range = document.createRange();
      range.selectNodeContents(pre);
      var sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      done(ok ? "copied" : "selected: press Ctrl+C");
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(value).then(function () { done("copied"); }, fallback);
    } else {
      fallback();
    }
  }

  // ------------------------------------------------------------------ charts
  function renderCharts() {
    var holder = document.getElementById("chart-specs");
    var specs = holder ? JSON.parse(holder.textContent || "[]") : [];
    var pending = [];
    specs.forEach(function (spec) {
      var el = document.getElementById(spec.id);
      if (!spec.figure || !el || typeof Plotly === "undefined") return;
      var config = { displaylogo: false, responsive: true };
      // responsive plots take the container's size: give it the figure's height first
      if (spec.figure.layout && spec.figure.layout.height) el.style.height = spec.figure.layout.height + "px";
      pending.push(
        Plotly.newPlot(el, spec.figure.data, spec.figure.layout, config).then(function () {
          el.setAttribute("data-rendered", "true");
        })
      );
    });
    return Promise.all(pending);
  }

  // ------------------------------------------------------------------ wiring
  if (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      th.classList.add("sortable");
      th.tabIndex = 0;
      th.addEventListener("click", function () { sortBy(th); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(th); }
      });
    });
    text.addEventListener("input", applyFilter);
    Object.keys(selects).forEach(function (k) {
      if (selects[k]) selects[k].addEventListener("change", applyFilter);
    });
    table.addEventListener("click", function (e) {
      var button = e.target.closest("button.toggle");
      if (button) {
        var tbody = button.closest("tbody");
        setExpanded(tbody, tbody.rows[1].hidden);
        return;
      }
      var link = e.target.closest("a[href^='#']");
      if (link) {
        var target = document.getElementById(decodeURIComponent(link.hash.slice(1)));
        if (target && target.tagName === "TBODY") setExpanded(target, true);
      }
    });
    applyFilter();
    openFromHash();
    window.addEventListener("hashchange", openFromHash);
  }
  document.addEventListener("click", function (e) {
    var button = e.target.closest("button.copy");
    if (button) copyText(button);
  });
  renderCharts().then(
    function () { document.body.setAttribute("data-ready", "true"); },
    function (err) {
      document.body.setAttribute("data-ready", "error");
      console.error("chart rendering failed", err);
    }
  );
})();
