// emwb answer browser: filters, sort, full-text search, two variants side by side. Static files only.
// Every answer is shown with textContent: model output is data, never markup.
"use strict";
var EMWB = { index: null, texts: {}, waiting: {}, state: null };

// browser/index.js (loaded after this file) calls emwbIndex; text-<k>.js files call emwbText when loaded.
function emwbIndex(data) { EMWB.index = data; emwbStart(); }
function emwbText(k, texts) {
  EMWB.texts[k] = texts;
  (EMWB.waiting[k] || []).forEach(function (f) { f(); });
  delete EMWB.waiting[k];
}

function emwbStart() {
  var PAGE = 50;
  var ix = EMWB.index;
  var root = document.getElementById("answer-browser");
  var status = document.getElementById("ab-status");
  var results = document.getElementById("ab-results");
  var controls = document.getElementById("ab-controls");
  if (!ix || !root) { if (status) { status.textContent = "No answers to browse."; } return; }
  var col = {};
  ix.columns.forEach(function (c, i) { col[c] = i; });
  var nCols = ix.columns.length;
  var scoreAt = {};
  ix.scores.forEach(function (s, i) { scoreAt[s] = nCols + i; });
  var flagAt = {};
  ix.flags.forEach(function (f, i) { flagAt[f] = nCols + ix.scores.length + i; });
  var st = { variant: "", group: "", evaluation: "", question: "", verdict: "", judge: ix.judges[0] || "", q: "",
             sort: "", dir: "asc", page: 0, compare: false, a: "", b: "" };
  EMWB.state = st;

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    if (cls) { e.className = cls; }
    return e;
  }
  function uniq(c) {
    var seen = {}, out = [];
    ix.rows.forEach(function (r) { var v = r[col[c]]; if (v !== null && !seen[v]) { seen[v] = 1; out.push(v); } });
    return out;
  }
  function select(name, label, options, value, onChange) {
    var wrap = el("label", label + " ");
    var s = el("select");
    s.name = name;
    s.id = "ab-" + name;
    options.forEach(function (o) {
      var opt = el("option", o[1]);
      opt.value = o[0];
      if (o[0] === value) { opt.selected = true; }
      s.appendChild(opt);
    });
    s.addEventListener("change", function () { onChange(s.value); });
    wrap.appendChild(s);
    return wrap;
  }
  function verdict(r) {
    var a = r[scoreAt["alignment (" + st.judge + ")"]];
    var c = r[scoreAt["coherence (" + st.judge + ")"]];
    if (a === undefined || a === null || c === undefined || c === null) { return "unscored"; }
    var set = ix.settings;
    var low = set.inclusive ? a <= set.alignment_threshold : a < set.alignment_threshold;
    if (!(c > set.coherence_threshold)) { return "incoherent"; }
    return low ? "misaligned" : "aligned";
  }
  function text(i) {
    var k = Math.floor(i / ix.chunk);
    return EMWB.texts[k] ? EMWB.texts[k][i - k * ix.chunk] : null;
  }
  function load(chunks, done) {
    var left = chunks.filter(function (k) { return !EMWB.texts[k]; });
    if (!left.length) { done(); return; }
    var count = left.length;
    left.forEach(function (k) {
      var first = !EMWB.waiting[k];
      (EMWB.waiting[k] = EMWB.waiting[k] || []).push(function () { count -= 1; if (!count) { done(); } });
      if (first) {
        var s = document.createElement("script");
        s.src = "browser/text-" + k + ".js";
        document.body.appendChild(s);
      }
    });
  }
  function matches(r, i) {
    if (st.variant && r[col.variant] !== st.variant) { return false; }
    if (st.evaluation && r[col.evaluation] !== st.evaluation) { return false; }
    if (st.question && r[col.question_id] !== st.question) { return false; }
    if (st.group && r[col.group] !== st.group) { return false; }
    if (st.verdict && verdict(r) !== st.verdict) { return false; }
    if (st.q) {
      var t = text(i);
      if (t === null || t.toLowerCase().indexOf(st.q.toLowerCase()) < 0) { return false; }
    }
    return true;
  }
  function selected() {
    var out = [];
    for (var i = 0; i < ix.rows.length; i++) { if (matches(ix.rows[i], i)) { out.push(i); } }
    if (st.sort) {
      var at = scoreAt[st.sort] !== undefined ? scoreAt[st.sort] : flagAt[st.sort];
      var sign = st.dir === "desc" ? -1 : 1;
      out.sort(function (x, y) {
        var a = ix.rows[x][at], b = ix.rows[y][at];
        if (a === null) { return b === null ? x - y : 1; }
        if (b === null) { return -1; }
        return a < b ? -sign : a > b ? sign : x - y;
      });
    }
    return out;
  }
  function fmt(v) { return v === null || v === undefined ? "n/a" : String(v); }
  function answerCell(i) {
    var cell = el("div", null, "answer");
    var t = text(i);
    cell.textContent = t === null ? "(loading…)" : (t === "" ? "(empty answer)" : t);
    return cell;
  }
  function table(ids) {
    var t = el("table", null, "ab-table");
    var head = el("tr");
    ["variant", "question", "sample"].concat(ix.scores, ix.flags, ["finish", "answer"]).forEach(function (h) {
      head.appendChild(el("th", h));
    });
    t.appendChild(el("thead")).appendChild(head);
    var body = el("tbody");
    ids.forEach(function (i) {
      var r = ix.rows[i];
      var tr = el("tr");
      tr.dataset.variant = r[col.variant];
      [r[col.variant], r[col.question_id], r[col.sample_index]].forEach(function (v) { tr.appendChild(el("td", fmt(v))); });
      ix.scores.forEach(function (s) { tr.appendChild(el("td", fmt(r[scoreAt[s]]), "num")); });
      ix.flags.forEach(function (f) { tr.appendChild(el("td", fmt(r[flagAt[f]]), "num")); });
      tr.appendChild(el("td", fmt(r[col.finish_reason])));
      var td = el("td", null, "ab-text");
      td.appendChild(answerCell(i));
      tr.appendChild(td);
      body.appendChild(tr);
    });
    t.appendChild(body);
    return t;
  }
  function chunksOf(ids) {
    var seen = {};
    ids.forEach(function (i) { seen[Math.floor(i / ix.chunk)] = 1; });
    return Object.keys(seen).map(Number);
  }
  function all() { var out = []; for (var k = 0; k < ix.chunks; k++) { out.push(k); } return out; }
  function render() {
    if (st.q && Object.keys(EMWB.texts).length < ix.chunks) {
      status.textContent = "Searching: loading the answers' texts…";
      load(all(), render);
      return;
    }
    results.textContent = "";
    if (st.compare) { renderCompare(); return; }
    var ids = selected();
    var pages = Math.max(1, Math.ceil(ids.length / PAGE));
    st.page = Math.min(st.page, pages - 1);
    var shown = ids.slice(st.page * PAGE, (st.page + 1) * PAGE);
    status.textContent = ids.length + " of " + ix.rows.length + " answers; page " + (st.page + 1) + " of " + pages;
    var nav = el("p");
    var prev = el("button", "previous page");
    prev.id = "ab-prev";
    prev.disabled = st.page === 0;
    prev.addEventListener("click", function () { st.page -= 1; render(); });
    var next = el("button", "next page");
    next.id = "ab-next";
    next.disabled = st.page >= pages - 1;
    next.addEventListener("click", function () { st.page += 1; render(); });
    nav.appendChild(prev);
    nav.appendChild(next);
    results.appendChild(nav);
    results.appendChild(table(shown));
    load(chunksOf(shown), function () {
      Array.prototype.forEach.call(results.querySelectorAll(".ab-text"), function (td, j) {
        td.textContent = "";
        td.appendChild(answerCell(shown[j]));
      });
    });
  }
  function renderCompare() {
    var qs = st.question || (uniq("question_id")[0] || "");
    var pair = el("div", null, "ab-pair");
    pair.id = "ab-side-by-side";
    var shownAll = [];
    [st.a, st.b].forEach(function (v) {
      var side = el("div", null, "ab-side");
      side.dataset.variant = v;
      side.appendChild(el("h3", v || "(choose a variant)"));
      var ids = [];
      ix.rows.forEach(function (r, i) { if (r[col.variant] === v && r[col.question_id] === qs) { ids.push(i); } });
      side.appendChild(table(ids));
      shownAll = shownAll.concat(ids);
      pair.appendChild(side);
    });
    var key = ix.questions[(st.evaluation || ix.rows[0][col.evaluation]) + "/" + qs];
    status.textContent = "Side by side on " + qs + (key ? ": " + key : "");
    results.appendChild(pair);
    load(chunksOf(shownAll), function () {
      Array.prototype.forEach.call(results.querySelectorAll(".ab-side"), function (side) {
        var v = side.dataset.variant, j = 0;
        var tds = side.querySelectorAll(".ab-text");
        ix.rows.forEach(function (r, i) {
          if (r[col.variant] === v && r[col.question_id] === qs) { tds[j].textContent = ""; tds[j].appendChild(answerCell(i)); j += 1; }
        });
      });
    });
  }
  function opts(values, any) { return [["", any]].concat(values.map(function (v) { return [v, v]; })); }
  function set(key) { return function (v) { st[key] = v; st.page = 0; render(); }; }
  function buildControls() {
    controls.textContent = "";
    var variants = uniq("variant");
    controls.appendChild(select("variant", "variant", opts(variants, "all"), st.variant, set("variant")));
    controls.appendChild(select("evaluation", "evaluation", opts(uniq("evaluation"), "all"), st.evaluation, set("evaluation")));
    controls.appendChild(select("question", "question", opts(uniq("question_id"), "all"), st.question, set("question")));
    controls.appendChild(select("judge", "verdict of", ix.judges.map(function (j) { return [j, j]; }), st.judge, set("judge")));
    controls.appendChild(select("verdict", "verdict", opts(["misaligned", "aligned", "incoherent", "unscored"], "any"),
                                st.verdict, set("verdict")));
    controls.appendChild(select("sort", "sort by", opts(ix.scores.concat(ix.flags), "answer order"), st.sort, set("sort")));
    controls.appendChild(select("dir", "", [["asc", "ascending"], ["desc", "descending"]], st.dir, set("dir")));
    var search = el("input");
    search.type = "search";
    search.id = "ab-search";
    search.placeholder = "search the answers' text";
    search.value = st.q;
    search.addEventListener("change", function () { set("q")(search.value); });
    controls.appendChild(search);
    var cmp = el("label", " side by side: ");
    var box = el("input");
    box.type = "checkbox";
    box.id = "ab-compare";
    box.checked = st.compare;
    box.addEventListener("change", function () { st.compare = box.checked; render(); });
    cmp.appendChild(box);
    controls.appendChild(cmp);
    controls.appendChild(select("a", "A", opts(variants, "-"), st.a || variants[0], set("a")));
    controls.appendChild(select("b", "B", opts(variants, "-"), st.b || variants[1] || variants[0], set("b")));
    st.a = st.a || variants[0] || "";
    st.b = st.b || variants[1] || variants[0] || "";
  }
  function fromHash() {
    var h = location.hash || "";
    if (h.indexOf("#answers") !== 0) { return false; }
    var at = h.indexOf("?");
    ["variant", "group", "evaluation", "question", "verdict", "q"].forEach(function (k) { st[k] = ""; });
    // split first, then decode each part: a value may hold an encoded "=", "&" or "?"
    (at < 0 ? "" : h.slice(at + 1)).split("&").forEach(function (kv) {
      var eq = kv.indexOf("=");
      if (eq < 1) { return; }
      try {
        var k = decodeURIComponent(kv.slice(0, eq)), v = decodeURIComponent(kv.slice(eq + 1));
      } catch (e) { return; }  // a malformed %-escape: that part is ignored
      if (Object.prototype.hasOwnProperty.call(st, k)) { st[k] = v; }
    });
    st.compare = false;
    st.page = 0;
    return true;
  }
  window.addEventListener("hashchange", function () {
    if (fromHash()) { buildControls(); render(); root.scrollIntoView(); }
  });
  var linked = fromHash();
  buildControls();
  render();
  if (linked) { root.scrollIntoView(); }
}
