// Live events for the events page: new rows arrive through server-sent
// events from kilnd's event stream. Without JavaScript the page refreshes
// itself instead (a <noscript> refresh), so nothing here is required.
"use strict";
(function () {
  const note = document.getElementById("live-note");
  const rows = document.getElementById("event-rows");
  if (!note || !rows || !window.EventSource) {
    return;
  }
  note.textContent = "Live: new events appear at the top as kilnd records them.";
  const cell = (text) => {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
  };
  const link = (id) => {
    if (!/^[a-z0-9-]{1,32}\/[a-z][0-9]+$/.test(id)) {
      return document.createTextNode(id + " ");
    }
    const parts = id.split("/");
    const a = document.createElement("a");
    a.href = "/ui/lineage/" + encodeURIComponent(parts[0]) + "/" + encodeURIComponent(parts[1]);
    a.textContent = id;
    const span = document.createElement("span");
    span.append(a, " ");
    return span;
  };
  const src = new EventSource("/ui/events/stream?since=" + encodeURIComponent(note.dataset.next));
  src.onmessage = (msg) => {
    const e = JSON.parse(msg.data);
    if (rows.querySelector('tr[data-seq="' + e.seq + '"]')) {
      return;
    }
    const tr = document.createElement("tr");
    tr.className = "event fresh live";
    tr.dataset.seq = e.seq;
    const refs = document.createElement("td");
    (e.refs || []).forEach((r) => refs.append(link(r)));
    const details = Object.keys(e.details || {}).sort().map((k) => k + "=" + e.details[k]).join(" ");
    const d = cell(details);
    d.className = "small";
    const kind = cell(e.kind);
    kind.className = "kind";
    const when = cell(e.time.replace(/\.\d+/, ""));
    when.className = "when";
    tr.append(cell(String(e.seq)), when, cell(e.actor), kind, refs, d);
    rows.prepend(tr);
  };
})();
