// The console's only hand-written script (no build step). Every page works without it; it adds:
//   * times in the viewer's own zone: <time datetime="ISO"> is rewritten with Intl.DateTimeFormat;
//   * evidence highlighting: a button with data-ev="N" marks every <mark data-ev> that contains N;
//   * keyboard shortcuts: "/" focuses the search box, "j"/"k" move between table rows, Enter opens one;
//   * one row per call in the live list: the poller asks again for calls stored shortly before its cursor
//     (writers commit out of order), so a call already shown may come again: the copy on top is removed;
//   * one request per double-click on an operator's button: the second click of a double-click (its detail
//     counts the presses) submits nothing. hx-sync="this:drop" covers only a click while the request is in
//     flight, and a dry run answers before a slow second press. Keyboard presses (detail 0) and separate
//     clicks still submit each time.
// It never inserts markup built from page text: only classes, attributes and textContent change.
(function () {
  "use strict";

  const format = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
    timeZoneName: "short",
  });

  function localTimes(root) {
    root.querySelectorAll("time[datetime]:not([data-local])").forEach(function (el) {
      const when = new Date(el.getAttribute("datetime"));
      if (isNaN(when.getTime())) return;
      el.title = el.getAttribute("datetime");
      el.textContent = format.format(when);
      el.setAttribute("data-local", "");
    });
  }

  function showEvidence(button) {
    const wanted = button.getAttribute("data-ev");
    let first = null;
    document.querySelectorAll("mark.ev").forEach(function (mark) {
      const hit = (mark.getAttribute("data-ev") || "").split(" ").indexOf(wanted) >= 0;
      mark.classList.toggle("hl", hit);
      if (hit && first === null) first = mark;
    });
    document.querySelectorAll("[data-ev].selected").forEach(function (el) { el.classList.remove("selected"); });
    button.classList.add("selected");
    if (first !== null) {
      first.scrollIntoView({block: "center"});
      first.setAttribute("tabindex", "-1");
      first.focus({preventScroll: true});
    }
  }

  document.addEventListener("click", function (event) {
    const button = event.target.closest("button.evidence[data-ev]");
    if (button) { event.preventDefault(); showEvidence(button); }
  });

  function rows() { return Array.from(document.querySelectorAll("table.nav-rows tbody tr[data-href]")); }

  document.addEventListener("keydown", function (event) {
    const tag = (event.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea" || tag === "select" || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "/") {
      const search = document.querySelector("input[type=search]");
      if (search) { event.preventDefault(); search.focus(); }
      return;
    }
    if (event.key !== "j" && event.key !== "k") return;
    const all = rows();
    if (all.length === 0) return;
    const current = all.indexOf(document.activeElement.closest ? document.activeElement.closest("tr") : null);
    const next = Math.max(0, Math.min(all.length - 1, current + (event.key === "j" ? 1 : -1)));
    const link = all[current < 0 ? 0 : next].querySelector("a");
    if (link) { event.preventDefault(); link.focus(); }
  });

  function viewerZone(root) {
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    root.querySelectorAll("input[data-viewer-zone]").forEach(function (el) { if (!el.value) el.value = zone; });
  }

  function dropRepeatedRows() {
    const seen = new Set();
    const all = Array.from(document.querySelectorAll("#rows > tr[id]"));
    for (let i = all.length - 1; i >= 0; i--) {  // from the bottom: the copy shown first is kept
      if (seen.has(all[i].id)) all[i].remove(); else seen.add(all[i].id);
    }
  }

  document.addEventListener("click", function (event) {
    if (event.detail < 2 || !event.target.closest) return;
    const button = event.target.closest("button, input[type=submit]");
    if (button && button.type === "submit" && button.form && button.form.hasAttribute("hx-sync")) {
      event.preventDefault();
    }
  }, true);

  document.addEventListener("htmx:afterSwap", dropRepeatedRows);
  document.addEventListener("DOMContentLoaded", function () { localTimes(document); viewerZone(document); });
  document.addEventListener("htmx:afterSettle", function (event) { localTimes(event.target); viewerZone(event.target); });
})();
