// Runs attnlab's attention page in Node with a minimal fake DOM (no browser, no network)
// and replays hover actions. Usage: node html_harness.js PAGE.html ACTIONS_JSON
// Prints one JSON array: per action the painted tokens' titles and the detail text.
"use strict";
const fs = require("fs");
const page = fs.readFileSync(process.argv[2], "utf8");
const actions = JSON.parse(process.argv[3]);
const scripts = [...page.matchAll(/<script([^>]*)>([\s\S]*?)<\/script>/g)];
const byId = {};
const created = [];

function element(tag, id) {
  const e = {
    tagName: tag, id: id, children: [], style: {}, title: "", className: "", value: "",
    handlers: {}, _text: "",
    classList: { set: new Set(), add(c) { this.set.add(c); }, remove(c) { this.set.delete(c); } },
    appendChild(child) {
      this.children.push(child);
      if (this.tagName === "select" && this.children.length === 1) { this.value = String(child.value); }
      return child;
    },
    addEventListener(type, fn) { this.handlers[type] = fn; },
    set innerHTML(v) { this.children = []; }, get innerHTML() { return ""; },
    set textContent(v) { this._text = String(v); }, get textContent() { return this._text; },
  };
  if (id) { byId[id] = e; }
  created.push(e);
  return e;
}

for (const id of ["kind", "layer", "head"]) { element("select", id); }
for (const id of ["queries", "keys", "detail", "kind-box"]) { element("div", id); }
const dataScript = scripts.find((m) => m[1].includes("application/json"));
element("script", dataScript[1].match(/id="([^"]+)"/)[1]).textContent = dataScript[2];
const document = {
  getElementById: (id) => byId[id],
  createElement: (tag) => element(tag),
  querySelectorAll: (sel) => created.filter((e) => e.className === sel.slice(1)),
};
const code = scripts.find((m) => !m[1].includes("src") && !m[1].includes("json"))[2];
new Function("document", code)(document);

const results = actions.map((a) => {
  byId.kind.value = String(a.kind); byId.kind.handlers.change();
  byId.layer.value = String(a.layer); byId.layer.handlers.change();
  byId.head.value = String(a.head); byId.head.handlers.change();
  const queries = byId.queries.children, keys = byId.keys.children;
  const [from, to] = a.hover === "query" ? [queries, keys] : [keys, queries];
  from[a.index].handlers.mouseenter();
  const out = {
    query_tokens: queries.map((s) => s.textContent),
    key_tokens: keys.map((s) => s.textContent),
    titles: to.map((s) => s.title),
    alphas: to.map((s) => parseFloat(s.style.background.split(",")[3])),
    backgrounds: to.map((s) => s.style.background),
    detail: byId.detail.textContent,
    kind_box_hidden: byId["kind-box"].style.display === "none",
    layer_options: byId.layer.children.map((o) => o.textContent),
    head_options: byId.head.children.map((o) => o.textContent),
  };
  from[a.index].handlers.mouseleave();
  return out;
});
console.log(JSON.stringify(results));
