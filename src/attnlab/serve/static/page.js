// The web page of `attnlab serve`: one page whose panel follows the loaded model's family
// (decoder: a streamed chat or completion; encoder: sentence similarity or a classifier's
// labels; encoder-decoder: translation), each answer with a "show attention" button drawn
// by the attention view (attention.js, shared with `attnlab attention --html`). It talks
// only to the server it came from, through the same HTTP API as any other client.
(function () {
  "use strict";
  var KEY = "attnlab-api-key";  // sessionStorage: asked for once, kept for this tab
  var state = { card: null, messages: [], controller: null, retry: null };

  function $(id) { return document.getElementById(id); }
  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  // -- errors and the API key ---------------------------------------------------------
  function showError(message) {
    var box = $("error");
    box.textContent = message; box.hidden = false;
  }
  function clearError() { $("error").hidden = true; $("error").textContent = ""; }

  function ApiError(message, status) { this.message = message; this.status = status; }
  ApiError.prototype = Object.create(Error.prototype);

  // OpenAI's error shape {"error": {"message", "type", "param", "code"}} as one line
  function describe(body, status) {
    var e = body && body.error;
    if (!e) { return "HTTP " + status; }
    var text = e.message || ("HTTP " + status);
    if (e.param) { text += " (param: " + e.param + ")"; }
    return text;
  }

  function askForKey(retry) {
    state.retry = retry;
    $("key-form").hidden = false;
    $("key-input").focus();
  }
  $("key-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var key = $("key-input").value.trim();
    if (!key) { return; }
    sessionStorage.setItem(KEY, key);
    $("key-form").hidden = true; $("key-button").hidden = false;
    clearError();
    var retry = state.retry; state.retry = null;
    if (retry) { retry(); }
  });
  $("key-button").addEventListener("click", function () {
    sessionStorage.removeItem(KEY); askForKey(null);
  });

  // fetch with the key; a 401 asks for the key and then runs `retry`; other errors throw
  async function api(path, body, options) {
    options = options || {};
    var headers = { "Content-Type": "application/json" };
    var key = sessionStorage.getItem(KEY);
    if (key) { headers.Authorization = "Bearer " + key; }
    var response = await fetch(path, {
      method: body === undefined ? "GET" : "POST",
      headers: headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: options.signal,
    });
    if (response.ok) { return response; }
    var parsed = null;
    try { parsed = await response.json(); } catch (ignored) { parsed = null; }
    if (response.status === 401) {
      if (key) { sessionStorage.removeItem(KEY); }
      askForKey(options.retry || null);
    }
    throw new ApiError(describe(parsed, response.status), response.status);
  }

  function report(err) {
    if (err && err.name === "AbortError") { return; }
    showError(err && err.message ? err.message : String(err));
  }

  // -- attention ------------------------------------------------------------------------
  async function showAttention(body, kind) {
    clearError();
    try {
      var payload = await (await api("/v1/attention", body)).json();
      var view = AttnView.mount($("attention-view"), payload);  // the view's own format
      if (kind !== undefined) {
        var index = payload.maps.findIndex(function (m) { return m.kind === kind; });
        if (index > 0) { view.select(index, 0, 0); }
      }
      $("attention-panel").hidden = false;
      $("attention-panel").scrollIntoView({ block: "nearest" });
    } catch (err) { report(err); }
  }
  $("attention-close").addEventListener("click", function () {
    $("attention-panel").hidden = true;
  });
  function attentionButton(onClick) {
    var button = el("button", "show-attention", "show attention");
    button.type = "button";
    button.addEventListener("click", onClick);
    return button;
  }

  // -- decoder: chat or completion, streamed --------------------------------------------
  function number(id, integer) {
    var raw = $(id).value.trim();
    if (raw === "") { return undefined; }
    return integer ? parseInt(raw, 10) : parseFloat(raw);
  }
  function addMessage(role, text) {
    var box = el("div", "message " + role);
    box.appendChild(el("span", "role", role));
    var body = el("div", "text", text);
    box.appendChild(body);
    $("conversation").appendChild(box);
    return { box: box, text: body };
  }

  // read a server-sent-events body, calling onData with each parsed `data:` JSON
  async function readEvents(response, onData) {
    var reader = response.body.getReader(), decoder = new TextDecoder(), buffer = "";
    for (;;) {
      var part = await reader.read();
      if (part.done) { break; }
      buffer += decoder.decode(part.value, { stream: true });
      var lines = buffer.split("\n");
      buffer = lines.pop();
      for (var i = 0; i < lines.length; i++) {
        var line = lines[i].trim();
        if (line.indexOf("data:") !== 0) { continue; }
        var data = line.slice(5).trim();
        if (data === "[DONE]") { return; }
        onData(JSON.parse(data));
      }
    }
  }

  function busy(on) {
    $("send").disabled = on; $("stop").disabled = !on;
  }

  async function send(text) {
    clearError();
    var chat = state.card.chat_template;
    state.messages.push({ role: "user", content: text });
    addMessage("user", text);
    var reply = addMessage("assistant", "");
    reply.box.dataset.pieces = "0";
    var messages = state.messages.slice();
    var system = $("system").value.trim();
    if (chat && system) { messages.unshift({ role: "system", content: system }); }
    var body = {
      model: state.card.id, stream: true, temperature: number("temperature"),
      top_p: number("top-p"), max_tokens: number("max-tokens", true), seed: number("seed", true),
    };
    if (chat) { body.messages = messages; } else { body.prompt = text; }
    var controller = new AbortController();
    state.controller = controller;
    busy(true);
    var finish = null;
    try {
      var path = chat ? "/v1/chat/completions" : "/v1/completions";
      var response = await api(path, body, {
        signal: controller.signal, retry: function () { state.messages.pop(); send(text); },
      });
      await readEvents(response, function (chunk) {
        if (chunk.error) { throw new ApiError(describe(chunk, 500), 500); }
        var choice = chunk.choices && chunk.choices[0];
        if (!choice) { return; }
        var piece = chat ? (choice.delta && choice.delta.content) : choice.text;
        if (piece) {
          reply.text.textContent += piece;
          reply.box.dataset.pieces = String(+reply.box.dataset.pieces + 1);
        }
        if (choice.finish_reason) { finish = choice.finish_reason; }
      });
    } catch (err) {
      if (err && err.name === "AbortError") { finish = "stopped"; } else { report(err); }
    } finally {
      busy(false);
      state.controller = null;
    }
    var answer = reply.text.textContent;
    state.messages.push({ role: "assistant", content: answer });
    var note = finish === "length" ? "cut at max tokens" : finish === "stopped" ? "stopped" : "";
    reply.box.dataset.finish = finish || "error";
    if (note) { reply.box.appendChild(el("div", "note", "[" + note + "]")); }
    if (answer) {
      var actions = el("div", "actions");
      actions.appendChild(attentionButton(function () {
        showAttention({ model: state.card.id, prompt: text, completion: answer });
      }));
      reply.box.appendChild(actions);
    }
  }

  $("chat-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var text = $("message").value.trim();
    if (!text || state.controller) { return; }
    $("message").value = "";
    send(text);
  });
  $("message").addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("chat-form").requestSubmit();
    }
  });
  $("stop").addEventListener("click", function () {
    if (state.controller) { state.controller.abort(); }
  });
  $("clear").addEventListener("click", function () {
    if (state.controller) { state.controller.abort(); }
    state.messages = []; $("conversation").innerHTML = "";
  });

  // -- encoder: similarity matrix or labels --------------------------------------------
  function heat(value) {  // cosine in [-1, 1] -> a background
    var v = Math.max(0, Math.min(1, value));
    return "rgba(230, 90, 20, " + v.toFixed(3) + ")";
  }
  function sentenceList() {
    return $("sentences").value.split("\n").map(function (s) { return s.trim(); })
      .filter(function (s) { return s; });
  }
  async function encode() {
    clearError();
    var sentences = sentenceList();
    var out = $("encoder-result");
    out.innerHTML = "";
    try {
      if (state.card.routes.indexOf("/v1/classify") >= 0) {
        var labels = await (await api("/v1/classify", { input: sentences, model: state.card.id },
          { retry: encode })).json();
        labels.data.forEach(function (item, i) {
          var row = el("div", "result-item classification");
          row.appendChild(el("strong", "label", String(item.label)));
          row.appendChild(el("span", "", " " + (100 * item.probability).toFixed(1) + "%  "));
          row.appendChild(el("span", "sentence", sentences[i]));
          var scores = el("div", "scores hint", Object.keys(item.scores || {}).map(function (k) {
            return k + ": " + (+item.scores[k]).toFixed(3);
          }).join("  "));
          row.appendChild(scores);
          row.appendChild(attentionButton(function () {
            showAttention({ model: state.card.id, input: sentences[i] });
          }));
          out.appendChild(row);
        });
        return;
      }
      var result = await (await api("/v1/embeddings", { input: sentences, model: state.card.id },
        { retry: encode })).json();
      var vectors = result.data.map(function (d) { return d.embedding; });
      var table = el("table", "matrix similarity");
      var head = el("tr");
      head.appendChild(el("th", "", ""));
      sentences.forEach(function (s, j) { head.appendChild(el("th", "", "[" + j + "]")); });
      table.appendChild(head);
      vectors.forEach(function (a, i) {
        var row = el("tr");
        var name = el("th", "", "[" + i + "] " + sentences[i]);
        name.title = sentences[i];
        row.appendChild(name);
        vectors.forEach(function (b) {
          var dot = 0;
          for (var k = 0; k < a.length; k++) { dot += a[k] * b[k]; }
          var cell = el("td", "sim", dot.toFixed(3));
          cell.style.background = heat(dot);
          row.appendChild(cell);
        });
        table.appendChild(row);
      });
      out.appendChild(el("p", "hint", "cosine similarity of the sentence embeddings (" +
        vectors[0].length + " dimensions)"));
      out.appendChild(table);
      sentences.forEach(function (s, i) {
        var item = el("div", "result-item", "[" + i + "] " + s + " ");
        item.appendChild(attentionButton(function () {
          showAttention({ model: state.card.id, input: s });
        }));
        out.appendChild(item);
      });
    } catch (err) { report(err); }
  }
  $("encoder-form").addEventListener("submit", function (event) {
    event.preventDefault(); encode();
  });

  // -- encoder-decoder: translation -----------------------------------------------------
  async function translate() {
    clearError();
    var source = $("source").value.trim();
    var out = $("translation-result");
    out.innerHTML = "";
    if (!source) { showError("write a source text to translate"); return; }
    try {
      var result = await (await api("/v1/translate", {
        input: [source], num_beams: number("beams", true), model: state.card.id,
      }, { retry: translate })).json();
      var text = result.data[0].text;
      var item = el("div", "result-item translation");
      item.appendChild(el("div", "text", text));
      item.appendChild(attentionButton(function () {
        showAttention({ model: state.card.id, input: source, completion: text }, "cross");
      }));
      out.appendChild(item);
    } catch (err) { report(err); }
  }
  $("translate-form").addEventListener("submit", function (event) {
    event.preventDefault(); translate();
  });

  // -- start: wait for the model, then show its family's panel --------------------------
  async function start() {
    for (;;) {
      var health = null;
      try { health = await fetch("/health"); } catch (err) { health = null; }
      if (health && health.ok) { break; }
      if (health && health.status !== 503) {
        try { showError(describe(await health.json(), health.status)); } catch (e) {
          showError("the server answered HTTP " + health.status);
        }
        return;
      }
      await new Promise(function (done) { setTimeout(done, 500); });
    }
    try {
      var models = await (await api("/v1/models", undefined, { retry: start })).json();
      var card = models.data[0];
      state.card = card;
      card.routes = card.routes || [];
      $("model-card").textContent = card.id + " · " + card.family + " · context " +
        card.context_length + " tokens";
      if (sessionStorage.getItem(KEY)) { $("key-button").hidden = false; }
      var page = { decoder: "decoder-page", encoder: "encoder-page",
        encoder_decoder: "seq2seq-page" }[card.family];
      if (!page) { showError("this page cannot show a " + card.family + " model"); return; }
      if (card.family === "decoder" && !card.chat_template) {
        $("system-box").hidden = true;
        $("message").placeholder = "Write the beginning of a text to continue";
      }
      $(page).hidden = false;
      document.body.dataset.family = card.family;
      document.body.dataset.ready = "true";
    } catch (err) { report(err); }
  }
  start();
})();
