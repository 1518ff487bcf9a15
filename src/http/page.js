// The status page's script (served at /static/page.js): search by name as you type, sort by
// any column, and refresh the jobs in place with conditional requests of the page itself.
// The page works without it: its form filters and searches on the server.
(function () {
  "use strict";
  var q = document.getElementById("q");
  var params = new URLSearchParams(location.search);
  var sortKey = params.get("sort") || "";
  var desc = params.get("dir") === "desc";
  var etag = null;
  var pending = null;
  var busy = false;

  function table() { return document.getElementById("jobs"); }
  function list() { return document.getElementById("list"); }

  // The URL says what is shown: ?q=, ?sort=, ?dir= (kept on reload and in links).
  function remember() {
    var p = new URLSearchParams(location.search);
    var text = q ? q.value.trim() : "";
    if (text) { p.set("q", text); } else { p.delete("q"); }
    if (sortKey) { p.set("sort", sortKey); } else { p.delete("sort"); }
    if (sortKey && desc) { p.set("dir", "desc"); } else { p.delete("dir"); }
    p.delete("after");
    var s = p.toString();
    history.replaceState(null, "", location.pathname + (s ? "?" + s : ""));
  }

  function filter() {
    var t = table();
    var shown = document.getElementById("shown");
    if (!t) { if (shown) { shown.textContent = ""; } return; }
    var text = q ? q.value.trim().toLowerCase() : "";
    var rows = t.tBodies[0].rows, n = 0;
    for (var i = 0; i < rows.length; i++) {
      var hit = !text || rows[i].getAttribute("data-job").toLowerCase().indexOf(text) >= 0;
      rows[i].hidden = !hit;
      if (hit) { n++; }
    }
    if (shown) { shown.textContent = n + " of " + rows.length + " shown"; }
  }

  function key(row, col) {
    var cell = row.cells[col];
    var v = cell.getAttribute("data-v");
    return v !== null ? v : cell.textContent.trim();
  }

  function sort() {
    var t = table();
    if (!t) { return; }
    var heads = t.tHead.rows[0].cells, col = -1;
    for (var i = 0; i < heads.length; i++) {
      var on = heads[i].getAttribute("data-col") === sortKey;
      if (on) { col = i; }
      if (on) { heads[i].setAttribute("aria-sort", desc ? "descending" : "ascending"); }
      else { heads[i].removeAttribute("aria-sort"); }
    }
    if (col < 0) { return; }
    var body = t.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var numeric = heads[col].classList.contains("num");
    rows.sort(function (a, b) {
      var x = key(a, col), y = key(b, col), c;
      if (numeric) { c = (parseFloat(x) || 0) - (parseFloat(y) || 0); }
      else if (!x !== !y) { return x ? -1 : 1; } // an empty cell (–) last either way
      else { c = x < y ? -1 : x > y ? 1 : 0; }
      if (c === 0) { return a.getAttribute("data-job") < b.getAttribute("data-job") ? -1 : 1; }
      return desc ? -c : c;
    });
    for (var j = 0; j < rows.length; j++) { body.appendChild(rows[j]); }
  }

  function apply() { sort(); filter(); }

  // The page again, only when it changed (If-None-Match → 304); the form keeps its focus.
  function refresh() {
    if (busy) { return; }
    busy = true;
    var headers = etag ? { "If-None-Match": etag } : {};
    fetch(location.pathname + location.search, { headers: headers, cache: "no-store" })
      .then(function (r) {
        if (r.status === 304 || !r.ok) { return null; }
        etag = r.headers.get("ETag");
        return r.text();
      })
      .then(function (html) {
        if (html === null) { return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        ["summary", "problem-view", "list", "rest"].forEach(function (id) {
          var now = document.getElementById(id), next = doc.getElementById(id);
          if (now && next) { now.replaceWith(next); }
        });
        apply();
      })
      .catch(function () {})
      .then(function () { busy = false; });
  }

  if (q) {
    q.addEventListener("input", function () {
      remember();
      filter();
      // The jobs on this page hold every match only when the server listed them all and
      // for a text that holds the one it searched for; else ask the server.
      var l = list(), text = q.value.trim().toLowerCase();
      var loaded = l ? (l.getAttribute("data-q") || "").toLowerCase() : "";
      var more = l && l.getAttribute("data-more") === "true";
      if (more || text.indexOf(loaded) < 0) {
        clearTimeout(pending);
        pending = setTimeout(function () { etag = null; refresh(); }, 200);
      }
    });
  }
  document.addEventListener("click", function (e) {
    var th = e.target.closest && e.target.closest("table.list th[data-col]");
    if (!th) { return; }
    var k = th.getAttribute("data-col");
    desc = k === sortKey ? !desc : false;
    sortKey = k;
    remember();
    sort();
  });
  apply();
  setInterval(refresh, 15000);
})();
