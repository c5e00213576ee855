(function () {
  "use strict";
  // Sort rank of a cell's class: failures first.
  var RANK = { f: 0, e: 1, u: 2, p: 3, n: 4 };

  function key(td) {
    if (!td) return "";
    var k = td.getAttribute("data-k");
    if (k !== null) return k !== "" && !isNaN(k) ? Number(k) : k;
    if (td.className in RANK) return RANK[td.className];
    return td.textContent.trim().toLowerCase();
  }

  function compare(a, b) {
    if (typeof a === "number" && typeof b === "number") return a - b;
    return String(a).localeCompare(String(b), undefined, { numeric: true });
  }

  function sortBy(th) {
    var table = th.closest("table");
    var body = table.tBodies[0];
    var col = th.cellIndex;
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    var rows = Array.prototype.slice.call(body.rows);
    var keys = new Map();
    rows.forEach(function (r) { keys.set(r, key(r.cells[col])); });
    rows.sort(function (a, b) { return dir * compare(keys.get(a), keys.get(b)); });
    table.querySelectorAll("th[aria-sort]").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    body.append.apply(body, rows);
  }

  document.querySelectorAll("table.sortable thead th").forEach(function (th) {
    th.tabIndex = 0;
    th.title = "sort";
    th.addEventListener("click", function () { sortBy(th); });
    th.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(th); }
    });
  });

  // Filters: a search box (first column contains the text) and "only failing" (rows marked bad).
  function applyFilter(id) {
    var table = document.getElementById(id);
    var text = document.querySelector('input[type=search][data-filter="' + id + '"]');
    var only = document.querySelector('input[type=checkbox][data-filter="' + id + '"]');
    var q = text ? text.value.trim().toLowerCase() : "";
    var bad = only ? only.checked : false;
    var shown = 0;
    var rows = table.tBodies[0].rows;
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i];
      var hide = (q && r.cells[0].textContent.toLowerCase().indexOf(q) < 0) ||
        (bad && !r.classList.contains("bad"));
      r.hidden = !!hide;
      if (!hide) shown++;
    }
    var count = document.querySelector('[data-count="' + id + '"]');
    if (count) count.textContent = shown + " of " + rows.length + " shown";
  }

  document.querySelectorAll("input[data-filter]").forEach(function (input) {
    var id = input.getAttribute("data-filter");
    input.addEventListener(input.type === "checkbox" ? "change" : "input", function () {
      applyFilter(id);
    });
  });

  // The controls need this script; without it they stay hidden and every row shows.
  document.querySelectorAll(".controls[hidden]").forEach(function (c) { c.hidden = false; });
  document.documentElement.setAttribute("data-js", "ready");
})();
