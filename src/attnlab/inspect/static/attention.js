// attnlab's attention view: the one drawing code behind `attnlab attention --html` (inlined
// in the page it writes) and the "show attention" panel of `attnlab serve`'s web page.
//
// AttnView.mount(root, data) fills the element `root` with select boxes (kind of attention,
// layer, head or the mean of heads), a heatmap with one cell per (query, key) token pair,
// and the two token rows: hovering a query token colours the keys it attends to, hovering a
// key colours the queries attending to it, hovering a cell names the pair and its weight.
// `data` is {maps: [{kind, title, query_tokens, key_tokens, layer_ids, head_ids,
// weights}]} with weights[layer][head][query][key]; a null weight (NaN or infinite in the
// model) is drawn hatched and titled "NaN".
(function (global) {
  "use strict";

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }
  function known(v) { return typeof v === "number"; }
  function show(v) { return known(v) ? v.toFixed(4) : "NaN"; }
  var HATCH = "repeating-linear-gradient(45deg, #999 0 2px, #fff 2px 6px)";
  function shade(v, top) {
    return known(v) ? "rgba(230, 90, 20, " + (v / top).toFixed(3) + ")" : HATCH;
  }
  function option(select, value, text) {
    var o = el("option", "", text); o.value = value; select.appendChild(o);
  }
  function labelled(text, select) {
    var label = el("label", "attn-control", text + " "); label.appendChild(select);
    return label;
  }

  // the (Tq, Tk) matrix of one head, or the mean over the heads (null if any is null)
  function matrix(map, layer, head) {
    var heads = map.weights[layer];
    if (head >= 0) { return heads[head]; }
    return heads[0].map(function (row, i) {
      return row.map(function (_, j) {
        var sum = 0;
        for (var h = 0; h < heads.length; h++) {
          if (!known(heads[h][i][j])) { return null; }
          sum += heads[h][i][j];
        }
        return sum / heads.length;
      });
    });
  }

  function mount(root, data) {
    if (!data || !data.maps || !data.maps.length) {
      throw new Error("no attention maps to show");
    }
    root.innerHTML = "";
    root.classList.add("attn-view");
    var kindSel = el("select", "attn-kind"), layerSel = el("select", "attn-layer");
    var headSel = el("select", "attn-head");
    var controls = el("div", "attn-controls");
    var kindBox = labelled("attention", kindSel);
    controls.appendChild(kindBox);
    controls.appendChild(labelled("layer", layerSel));
    controls.appendChild(labelled("head", headSel));
    root.appendChild(controls);
    root.appendChild(el("p", "attn-help", "Hover a query token to colour the keys it " +
      "attends to (darker = more weight); hover a key token to colour the queries that " +
      "attend to it; hover a cell of the grid for one pair."));
    var grid = el("div", "attn-grid");
    var queryRow = el("div", "attn-row"), keyRow = el("div", "attn-row");
    queryRow.appendChild(el("div", "attn-name", "queries (attending)"));
    keyRow.appendChild(el("div", "attn-name", "keys (attended to)"));
    var queries = el("div", "attn-tokens attn-queries"), keys = el("div", "attn-tokens attn-keys");
    queryRow.appendChild(queries); keyRow.appendChild(keys);
    var detail = el("div", "attn-detail");
    root.appendChild(queryRow); root.appendChild(keyRow); root.appendChild(detail);
    root.appendChild(grid);

    function current() { return data.maps[+kindSel.value]; }
    function clear() {
      Array.prototype.forEach.call(root.querySelectorAll(".attn-tok"), function (s) {
        s.style.background = ""; s.title = ""; s.classList.remove("active");
      });
      detail.textContent = "";
    }
    function paint(spans, values) {
      var top = Math.max.apply(null, values.filter(known).concat([1e-9]));
      spans.forEach(function (span, j) {
        span.style.background = shade(values[j], top); span.title = show(values[j]);
      });
    }
    function drawGrid(map, w) {
      grid.innerHTML = "";
      var n = map.key_tokens.length;
      grid.style.gridTemplateColumns = "minmax(3em, max-content) repeat(" + n + ", 1.1em)";
      grid.appendChild(el("div", "attn-corner"));
      map.key_tokens.forEach(function (t) { grid.appendChild(el("div", "attn-col", t)); });
      w.forEach(function (row, i) {
        grid.appendChild(el("div", "attn-rowhead", map.query_tokens[i]));
        row.forEach(function (v, j) {
          var cell = el("div", "attn-cell");
          cell.style.background = known(v) ? "rgba(230, 90, 20, " + v.toFixed(3) + ")" : HATCH;
          cell.title = JSON.stringify(map.query_tokens[i]) + " -> " +
            JSON.stringify(map.key_tokens[j]) + ": " + show(v);
          grid.appendChild(cell);
        });
      });
    }
    function render() {
      var map = current(), w = matrix(map, +layerSel.value, +headSel.value);
      queries.innerHTML = ""; keys.innerHTML = "";
      var qs = map.query_tokens.map(function (t) {
        var s = el("span", "attn-tok", t); queries.appendChild(s); return s;
      });
      var ks = map.key_tokens.map(function (t) {
        var s = el("span", "attn-tok", t); keys.appendChild(s); return s;
      });
      qs.forEach(function (span, i) {
        span.addEventListener("mouseenter", function () {
          clear(); span.classList.add("active"); paint(ks, w[i]);
          var order = w[i].map(function (v, j) { return [v, j]; }).sort(function (a, b) {
            return known(a[0]) && known(b[0]) ? b[0] - a[0] : known(b[0]) - known(a[0]);
          }).slice(0, 5);
          detail.textContent = JSON.stringify(map.query_tokens[i]) + " attends to\n" +
            order.map(function (p) {
              return "  " + show(p[0]) + "  " + JSON.stringify(map.key_tokens[p[1]]);
            }).join("\n");
        });
        span.addEventListener("mouseleave", clear);
      });
      ks.forEach(function (span, j) {
        span.addEventListener("mouseenter", function () {
          clear(); span.classList.add("active");
          paint(qs, w.map(function (row) { return row[j]; }));
          detail.textContent = "queries attending to " + JSON.stringify(map.key_tokens[j]);
        });
        span.addEventListener("mouseleave", clear);
      });
      drawGrid(map, w);
    }
    function fillLayersHeads() {
      var map = current();
      layerSel.innerHTML = ""; headSel.innerHTML = "";
      map.layer_ids.forEach(function (id, l) { option(layerSel, l, "layer " + id); });
      option(headSel, -1, "mean of heads");
      map.head_ids.forEach(function (id, h) { option(headSel, h, "head " + id); });
      headSel.value = "0";
      render();
    }
    data.maps.forEach(function (map, i) { option(kindSel, i, map.title); });
    kindSel.addEventListener("change", fillLayersHeads);
    layerSel.addEventListener("change", render);
    headSel.addEventListener("change", render);
    kindBox.style.display = data.maps.length > 1 ? "" : "none";
    fillLayersHeads();
    return {
      select: function (kind, layer, head) {
        kindSel.value = String(kind); fillLayersHeads();
        layerSel.value = String(layer); headSel.value = String(head); render();
      }
    };
  }

  global.AttnView = { mount: mount };
})(typeof window !== "undefined" ? window : this);
