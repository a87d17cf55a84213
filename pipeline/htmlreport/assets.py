"""The page's style and its one script, as constants.

The script only browses data: it decompresses the embedded payload with the browser's own
DecompressionStream('gzip'), indexes the samples by question once, and renders 50 rows a page.
Every piece of data reaches the page through `textContent`, never `innerHTML`: teacher text is
shown as text whatever it holds. No network, no library."""

from __future__ import annotations

PAGE_ROWS = 50

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:0 16px 48px;
color:#222}
h1{font-size:22px;margin:20px 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid
#ddd;padding-bottom:4px}h3{font-size:15px;margin:16px 0 6px}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:left;vertical-align:top}th{background:#f4f4f4}td.n{text-align:right;
font-variant-numeric:tabular-nums}
.muted{color:#777}.notrun{color:#a60}.complete{color:#070}.bad{color:#b00}
pre{white-space:pre-wrap;word-break:break-word;margin:0;max-height:16em;overflow:auto;
font:12px/1.4 ui-monospace,monospace}
.controls{display:flex;gap:8px;flex-wrap:wrap;align-items:center;margin:6px 0}
.controls input{padding:3px 6px;min-width:200px}
.pager{margin:6px 0;display:flex;gap:8px;align-items:center}
.side{display:grid;grid-template-columns:1fr 1fr;gap:8px}.side>div{border:1px solid #ddd;
padding:6px}.card{border:1px solid #ccc;padding:8px;margin:8px 0}
.qlink{background:none;border:none;color:#06c;cursor:pointer;padding:0;font:inherit;
text-decoration:underline;white-space:nowrap}
nav a{margin-right:12px}
"""

JS = """
(async function () {
  const PAGE = __PAGE_ROWS__;
  const el = (id) => document.getElementById(id);
  function node(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  async function load() {
    const src = el("payload");
    const bin = atob(src.textContent.trim());
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return JSON.parse(await new Response(stream).text());
  }
  let D;
  try {
    D = await load();
  } catch (e) {
    for (const x of document.querySelectorAll(".needs-data"))
      x.textContent = "This browser could not read the embedded data: " + e;
    return;
  }
  for (const x of document.querySelectorAll(".needs-data")) x.textContent = "";

  // A list shown PAGE items at a time, with previous / next.
  function paged(box, items, row, empty) {
    let page = 0;
    box.replaceChildren();
    const bar = node("div", undefined, "pager"), body = node("div");
    const prev = node("button", "previous"), next = node("button", "next"), info = node("span");
    bar.append(prev, next, info);
    box.append(bar, body);
    function show() {
      body.replaceChildren();
      const n = items.length, from = page * PAGE, to = Math.min(n, from + PAGE);
      info.textContent = n ? `${from + 1}-${to} of ${n.toLocaleString()}` : empty;
      prev.disabled = page === 0;
      next.disabled = to >= n;
      row(body, items.slice(from, to));
    }
    prev.onclick = () => { page--; show(); };
    next.onclick = () => { page++; show(); };
    show();
  }

  const S = D.samples;
  if (S) browser(S);
  function browser(S) {
    const n = S.q.length, byQ = new Map(), qIndex = new Map(S.qid.map((id, i) => [id, i]));
    for (let i = 0; i < n; i++) {
      if (!byQ.has(S.q[i])) byQ.set(S.q[i], []);
      byQ.get(S.q[i]).push(i);
    }
    const kind = el("s-kind"), teacher = el("s-teacher");
    kind.append(node("option", "all samples"), node("option", "kept"), node("option", "rejected"));
    for (const r of S.reasons.slice(1)) kind.append(node("option", "rejected: " + r));
    teacher.append(node("option", "all teachers"));
    for (const t of S.teachers) teacher.append(node("option", t));
    let lower = null, qlower = null;  // lower-cased texts, made on the first text search
    function status(i) { return S.r[i] === 0 ? "kept" : "rejected: " + S.reasons[S.r[i]]; }
    function table(body, rows) {
      const t = node("table"), head = node("tr");
      for (const h of ["question", "teacher", "status", "answer", "gold", "text"])
        head.append(node("th", h));
      t.append(head);
      for (const i of rows) {
        const tr = node("tr"), q = node("td"), link = node("button", S.qid[S.q[i]], "qlink");
        link.onclick = () => question(S.q[i]);
        q.append(link);
        const text = node("td");
        text.append(node("pre", S.x[i]));
        tr.append(q, node("td", S.teachers[S.t[i]]), node("td", status(i)),
                  node("td", S.a[i]), node("td", S.gold[S.q[i]]), text);
        t.append(tr);
      }
      body.append(t);
    }
    function question(qi) {
      const box = el("s-question");
      box.replaceChildren(node("h3", "question " + S.qid[qi]));
      box.append(node("pre", S.qtext[qi]), node("p", "gold answer: " + S.gold[qi]));
      const all = byQ.get(qi) || [];
      box.append(node("p", `${all.length} sample(s) from the teacher(s), kept and rejected:`));
      table(box, all);
      box.scrollIntoView();
    }
    function search() {
      const text = el("s-text").value.trim().toLowerCase(), qid = el("s-qid").value.trim();
      const k = kind.selectedIndex, t = teacher.selectedIndex - 1;
      let cand = null;
      if (qid) {
        const qs = qIndex.has(qid) ? [qIndex.get(qid)] : S.qid.flatMap((id, i) => id.includes(qid) ? [i] : []);
        cand = qs.flatMap((q) => byQ.get(q) || []);
        if (qIndex.has(qid)) {  // one question: its page holds every sample, no list below
          question(qIndex.get(qid));
          el("s-results").replaceChildren();
          return;
        }
      }
      el("s-question").replaceChildren();
      if (text && !lower) {
        lower = S.x.map((x) => x.toLowerCase());
        qlower = S.qtext.map((x) => x.toLowerCase());
      }
      const hits = [];
      const each = cand || Array.from({ length: n }, (_, i) => i);
      for (const i of each) {
        if (k === 1 && S.r[i] !== 0) continue;
        if (k === 2 && S.r[i] === 0) continue;
        if (k > 2 && S.r[i] !== k - 2) continue;
        if (t >= 0 && S.t[i] !== t) continue;
        if (text && !lower[i].includes(text) && !qlower[S.q[i]].includes(text)) continue;
        hits.push(i);
      }
      paged(el("s-results"), hits, table, "no sample matches");
    }
    let timer = null;
    for (const id of ["s-text", "s-qid"])
      el(id).oninput = () => { clearTimeout(timer); timer = setTimeout(search, 250); };
    kind.onchange = search;
    teacher.onchange = search;
    // report.html#q=ID opens that question's page: a link one can send
    if (location.hash.startsWith("#q=")) el("s-qid").value = decodeURIComponent(location.hash.slice(3));
    search();
  }

  for (const pair of (D.eval || [])) {
    paged(el(pair.id), pair.rows, (body, rows) => {
      for (const r of rows) {
        const card = node("div", undefined, "card");
        card.append(node("b", r[0]), node("span", "  gold answer: " + r[1]), node("pre", r[2]));
        const side = node("div", undefined, "side");
        const a = node("div"), b = node("div");
        a.append(node("b", `${pair.right} (right): ${r[3]}`), node("pre", r[4]));
        b.append(node("b", `${pair.wrong} (wrong): ${r[5]}`), node("pre", r[6]));
        side.append(a, b);
        card.append(side);
        body.append(card);
      }
    }, "no such question");
  }
  // when the page became usable, for whoever measures it (a headless browser reads the DOM)
  document.body.dataset.readyMs = String(Math.round(performance.now()));
})();
""".replace("__PAGE_ROWS__", str(PAGE_ROWS))
