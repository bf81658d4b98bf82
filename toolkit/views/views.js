/* Attention views: draws the JSON payload built by toolkit/views/payload.py. No dependencies, no network.
 * Lines and heatmaps go to <canvas> (thousands of SVG/DOM lines would freeze the page at 512 tokens);
 * tokens, controls and state stay in the DOM. */
var ToolkitViews = (function () {
  "use strict";

  const ROW = 18; // px per token row; toolkit/views/static.py uses the same
  const LINK_AREA = 220; // px between the two token columns
  const THUMB = 72; // px, model view thumbnails
  const FONT = "12px Helvetica, Arial, sans-serif";
  const FILTER_LABELS = { "all": "All", "A->A": "A → A", "B->B": "B → B", "A->B": "A → B", "B->A": "B → A" };

  function decode(base64, Type) {
    const binary = atob(base64);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return new Type(bytes.buffer);
  }

  function el(tag, props, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value);
    }
    for (const child of children || []) node.append(child);
    return node;
  }

  function dropdown(label, name, options, value, onChange) {
    const input = el("select", { name: name, onchange: () => onChange(input.value) },
      options.map(([optionValue, text]) => el("option", { value: optionValue, text: text })));
    input.value = String(value);
    return el("label", {}, [label + " ", input]);
  }

  const range = (n) => Array.from({ length: n }, (_, i) => i);

  // A canvas of CSS size width × height, sharp on high-DPI screens, within Chromium's 32767 px limit.
  function makeCanvas(width, height) {
    const canvas = el("canvas");
    const ratio = Math.min(window.devicePixelRatio || 1, 30000 / Math.max(width, height, 1));
    canvas.width = Math.max(1, Math.round(width * ratio));
    canvas.height = Math.max(1, Math.round(height * ratio));
    canvas.style.width = width + "px";
    canvas.style.height = height + "px";
    const ctx = canvas.getContext("2d");
    ctx.scale(ratio, ratio);
    return { canvas, ctx };
  }

  // A renderer that yields to the browser every ~12 ms, so long inputs never block input events.
  function progressive(root) {
    let generation = 0;
    return function run(jobs) {
      const mine = ++generation;
      let next = 0;
      root.dataset.rendered = "0";
      root.dataset.total = String(jobs.length);
      (function step() {
        if (mine !== generation) return;
        const start = performance.now();
        while (next < jobs.length && performance.now() - start < 12) jobs[next++]();
        root.dataset.rendered = String(next);
        if (next < jobs.length) requestAnimationFrame(step);
      })();
    };
  }

  class LinkStack {
    constructor(data) {
      Object.assign(this, data);
      this.rowStart = decode(data.links.rowStart, Uint32Array);
      this.keyIndex = decode(data.links.keys, Uint16Array);
      this.weight = decode(data.links.weights, Uint8Array);
    }

    side(index, bStart) {
      return bStart !== null && index >= bStart ? "B" : "A";
    }

    allows(filter, query, key) {
      if (filter === "all") return true;
      const [querySide, keySide] = filter.split("->");
      return this.side(query, this.queryBStart) === querySide && this.side(key, this.keyBStart) === keySide;
    }

    // Calls visit(query, key, weight 0..255) for each stored link of one head (of one query if given).
    forEachLink(layer, head, query, visit) {
      const queries = this.queryTokens.length;
      const base = (layer * this.heads + head) * queries;
      const first = query === null ? 0 : query;
      const last = query === null ? queries : query + 1;
      for (let q = first; q < last; q++) {
        for (let e = this.rowStart[base + q]; e < this.rowStart[base + q + 1]; e++) visit(q, this.keyIndex[e], this.weight[e]);
      }
    }
  }

  // Draws the links of the selected heads and returns how many there are (on the canvas or scrolled past).
  // Links of equal weight share one Path2D, so a layer costs at most 255 strokes per head, and links wholly
  // above or below the canvas are skipped: rasterising only what is visible keeps 512 tokens fast.
  // options: layer, heads, filter, query, key (focus, or null), x0, x1, top (y of the first row), row, height (of
  // the canvas), lineWidth, strength (optional array filled with the strongest weight reaching each token on
  // the other side of the focus).
  function drawLinks(ctx, stack, options) {
    let drawn = 0;
    ctx.lineWidth = options.lineWidth;
    for (const head of options.heads) {
      const paths = [];
      stack.forEachLink(options.layer, head, options.query, (q, k, w) => {
        if (options.key !== null && k !== options.key) return;
        if (!stack.allows(options.filter, q, k)) return;
        drawn++;
        if (options.strength) {
          const other = options.query !== null ? k : q;
          options.strength[other] = Math.max(options.strength[other], w / 255);
        }
        const y0 = options.top + (q + 0.5) * options.row, y1 = options.top + (k + 0.5) * options.row;
        if ((y0 < 0 && y1 < 0) || (y0 > options.height && y1 > options.height)) return;
        const path = paths[w] || (paths[w] = new Path2D());
        path.moveTo(options.x0, y0);
        path.lineTo(options.x1, y1);
      });
      ctx.strokeStyle = stack.colors[head];
      paths.forEach((path, w) => {
        ctx.globalAlpha = w / 255;
        ctx.stroke(path);
      });
    }
    ctx.globalAlpha = 1;
    return drawn;
  }

  // Two token columns joined by lines. Hovering a token isolates its lines; clicking a query token pins it.
  // The canvas is only as tall as the window and sticks to its top while the token columns scroll past:
  // it is redrawn on scroll for the rows in view, so 512 tokens never mean a 9000-pixel canvas to rasterise.
  class LinkDiagram {
    constructor(stack, pinned) {
      this.stack = stack;
      this.pinned = pinned === null ? null : { side: "query", index: pinned };
      this.hovered = null;
      // Leaving is tracked on the column, not on each token: moving between tokens then costs one redraw, not two.
      const column = (tokens, side) => el("div", { class: "tokens " + side, onmouseleave: () => this.setHover(null) },
        tokens.map((token, index) => el("span", {
          text: token, title: token, "data-index": index,
          onmouseenter: () => this.setHover({ side, index }),
          onclick: () => this.togglePin({ side, index }),
        })));
      this.columns = { query: column(stack.queryTokens, "query"), key: column(stack.keyTokens, "key") };
      this.fullHeight = Math.max(stack.queryTokens.length, stack.keyTokens.length) * ROW;
      this.track = el("div", { class: "links", style: `width:${LINK_AREA}px;height:${this.fullHeight}px` });
      this.node = el("div", { class: "diagram" }, [this.columns.query, this.track, this.columns.key]);
      this.fitCanvas();
      this.onViewportChange = () => {
        if (!this.node.isConnected) return this.stopListening();
        if (this.pending) return;
        this.pending = true;
        requestAnimationFrame(() => { this.pending = false; this.fitCanvas(); this.draw(this.settings); });
      };
      document.addEventListener("scroll", this.onViewportChange, true); // capture: scrolls of any container
      window.addEventListener("resize", this.onViewportChange);
    }

    stopListening() {
      document.removeEventListener("scroll", this.onViewportChange, true);
      window.removeEventListener("resize", this.onViewportChange);
    }

    fitCanvas() {
      // below the head view's sticky toolbar, whose height the view publishes as --toolbar-height
      const below = parseFloat(getComputedStyle(this.track).getPropertyValue("--toolbar-height")) || 0;
      const height = Math.min(this.fullHeight, Math.max(300, window.innerHeight - below));
      if (this.canvas && this.canvasHeight === height) return;
      this.canvasHeight = height;
      ({ canvas: this.canvas, ctx: this.ctx } = makeCanvas(LINK_AREA, height));
      this.track.replaceChildren(this.canvas);
    }

    setHover(focus) {
      this.hovered = focus;
      this.draw(this.settings);
    }

    togglePin(focus) {
      const same = this.pinned && this.pinned.side === focus.side && this.pinned.index === focus.index;
      this.pinned = same ? null : focus;
      this.draw(this.settings);
    }

    // settings: layer, heads, filter
    draw(settings) {
      this.settings = settings;
      const stack = this.stack;
      const focus = this.hovered || this.pinned;
      const other = focus === null ? null : focus.side === "query" ? "key" : "query";
      const strength = other === null ? null : new Float32Array(this.columns[other].children.length);
      // Where the sticky canvas sits in its track is the first row it shows.
      const scrolled = this.canvas.getBoundingClientRect().top - this.track.getBoundingClientRect().top;
      this.ctx.clearRect(0, 0, LINK_AREA, this.canvasHeight);
      const drawn = drawLinks(this.ctx, stack, {
        layer: settings.layer, heads: settings.heads, filter: settings.filter,
        query: focus && focus.side === "query" ? focus.index : null,
        key: focus && focus.side === "key" ? focus.index : null,
        x0: 0, x1: LINK_AREA, top: -scrolled, row: ROW, height: this.canvasHeight, strength: strength,
        // 1-pixel hairlines rasterise about twice as fast as 2-pixel lines: worth it when tens of thousands are drawn
        lineWidth: focus !== null || this.fullHeight <= 64 * ROW ? 2 : 1,
      });
      for (const side of ["query", "key"]) {
        const bStart = side === "query" ? stack.queryBStart : stack.keyBStart;
        const allowedSide = settings.filter === "all" ? null : settings.filter.split("->")[side === "query" ? 0 : 1];
        Array.from(this.columns[side].children).forEach((span, index) => {
          span.classList.toggle("focus", focus !== null && focus.side === side && focus.index === index);
          span.classList.toggle("muted", allowedSide !== null && stack.side(index, bStart) !== allowedSide);
          span.style.backgroundColor = side === other && strength[index] > 0 ? `rgba(255, 170, 0, ${strength[index]})` : "";
        });
      }
      this.node.dataset.links = String(drawn);
      this.node.dataset.focus = focus === null ? "" : focus.side + ":" + focus.index;
    }
  }

  function stackChooser(stacks, state, onChange) {
    if (stacks.length < 2) return [];
    return [dropdown("Attention", "stack", stacks.map((s) => [s.name, s.label]), state.stack, onChange)];
  }

  function headView(root, payload) {
    const stacks = payload.stacks.map((data) => new LinkStack(data));
    const state = Object.assign({}, payload.state);
    const controls = el("div", { class: "controls" });
    const swatches = el("div", { class: "heads" });
    const stage = el("div", { class: "stage" });
    // The controls stay on screen while 512 tokens scroll by.
    const toolbar = el("div", { class: "toolbar" }, [controls, swatches,
      el("p", { class: "hint", text: "Hover a token to isolate its lines; click it to pin. Click a head to toggle it, double-click to show it alone." })]);
    root.append(toolbar, stage);
    const publishToolbarHeight = () => root.style.setProperty("--toolbar-height", toolbar.offsetHeight + "px");
    window.addEventListener("resize", publishToolbarHeight);
    let stack, diagram;

    function redraw() {
      diagram.draw({ layer: state.layer, heads: state.heads, filter: state.sentence_filter });
      Array.from(swatches.children).forEach((swatch, head) => swatch.setAttribute("aria-pressed", String(state.heads.includes(head))));
      root.dataset.layer = String(state.layer);
      root.dataset.heads = state.heads.join(",");
      root.dataset.filter = state.sentence_filter;
    }

    function build(pinned) {
      stack = stacks.find((s) => s.name === state.stack);
      state.layer = Math.min(state.layer, stack.layers - 1);
      state.heads = state.heads.filter((head) => head < stack.heads);
      if (stack.queryBStart === null) state.sentence_filter = "all";
      controls.replaceChildren(
        ...stackChooser(stacks, state, (name) => { state.stack = name; build(null); }),
        dropdown("Layer", "layer", range(stack.layers).map((l) => [l, String(l)]), state.layer, (v) => { state.layer = Number(v); redraw(); }),
        ...(stack.queryBStart === null ? [] : [dropdown("Sentences", "filter", Object.entries(FILTER_LABELS), state.sentence_filter,
          (v) => { state.sentence_filter = v; redraw(); })]));
      swatches.replaceChildren(...range(stack.heads).map((head) => el("button", {
        class: "swatch", title: "head " + head, style: "background:" + stack.colors[head], text: String(head),
        onclick: () => {
          state.heads = state.heads.includes(head) ? state.heads.filter((h) => h !== head) : state.heads.concat([head]).sort((a, b) => a - b);
          redraw();
        },
        ondblclick: () => { state.heads = [head]; redraw(); },
      })));
      publishToolbarHeight();
      diagram = new LinkDiagram(stack, pinned);
      stage.replaceChildren(diagram.node);
      redraw();
    }

    build(state.token);
  }

  function modelView(root, payload) {
    const stacks = payload.stacks.map((data) => new LinkStack(data));
    const state = Object.assign({}, payload.state);
    const controls = el("div", { class: "controls" });
    const grid = el("div", { class: "grid" });
    const overlay = el("div", { class: "overlay", hidden: "" });
    root.append(controls, el("p", { class: "hint", text: "Click a thumbnail to enlarge it." }), grid, overlay);
    const render = progressive(root);
    const close = () => { overlay.hidden = true; root.dataset.enlarged = ""; };
    document.addEventListener("keydown", (event) => { if (event.key === "Escape") close(); });

    function enlarge(stack, layer, head) {
      const diagram = new LinkDiagram(stack, null);
      overlay.replaceChildren(el("div", { class: "panel" }, [
        el("div", { class: "panel-title" }, [
          el("strong", { text: `${stack.label} · layer ${layer} · head ${head}` }),
          el("button", { class: "close", text: "×", title: "Close (Esc)", onclick: close }),
        ]),
        diagram.node,
      ]));
      diagram.draw({ layer: layer, heads: [head], filter: "all" });
      overlay.hidden = false;
      root.dataset.enlarged = layer + ":" + head;
    }

    function build() {
      const stack = stacks.find((s) => s.name === state.stack);
      controls.replaceChildren(...stackChooser(stacks, state, (name) => { state.stack = name; build(); }));
      const row = (THUMB - 8) / Math.max(stack.queryTokens.length, stack.keyTokens.length);
      const jobs = [];
      grid.style.gridTemplateColumns = `auto repeat(${stack.heads}, ${THUMB}px)`;
      grid.replaceChildren(el("span"), ...range(stack.heads).map((head) => el("span", { class: "col-label", text: "head " + head })));
      for (const layer of range(stack.layers)) {
        grid.append(el("span", { class: "row-label", text: "layer " + layer }));
        for (const head of range(stack.heads)) {
          const { canvas, ctx } = makeCanvas(THUMB, THUMB);
          grid.append(el("button", { class: "thumb", title: `layer ${layer}, head ${head}`, "data-layer": layer, "data-head": head,
            onclick: () => enlarge(stack, layer, head) }, [canvas]));
          jobs.push(() => drawLinks(ctx, stack, { layer, heads: [head], filter: "all", query: null, key: null,
            x0: 4, x1: THUMB - 4, top: 4, row: row, height: THUMB, lineWidth: 1 }));
        }
      }
      render(jobs);
    }

    build();
  }

  function neuronView(root, payload) {
    const stacks = payload.stacks.map((data) => Object.assign({}, data, {
      queryVectors: decode(data.queries, Float32Array), keyVectors: decode(data.keys, Float32Array),
      bias: data.positionBias === null ? null : decode(data.positionBias, Float32Array),
    }));
    const state = Object.assign({}, payload.state);
    const controls = el("div", { class: "controls" });
    const caption = el("p", { class: "caption" });
    const tokens = el("div", { class: "tokens query" });
    const figure = el("div", { class: "neuron-figure" });
    root.append(controls, el("p", { class: "hint", text: "Click a query token on the left." }), caption,
      el("div", { class: "neuron" }, [tokens, figure]));
    let stack, layout, canvas, ctx;
    const palette = payload.diverging.map(([r, g, b]) => `rgb(${r},${g},${b})`);
    const color = (value, scale) => palette[Math.round((Math.max(-1, Math.min(1, value / scale)) + 1) * 127.5)];

    // The shown query's scores (q·k × scale + position bias, -Infinity for masked future keys) and their softmax,
    // as toolkit.views.data.NeuronData.scores computes them (checked there against the model's own attention).
    function scoreRow(products, d, keys) {
      const scores = new Float64Array(keys);
      const biasOffset = (state.head * stack.queryTokens.length + state.token) * keys;
      for (let k = 0; k < keys; k++) {
        let dot = 0;
        for (let i = 0; i < d; i++) dot += products[k * d + i];
        scores[k] = stack.causal[state.layer] && k > state.token ? -Infinity
          : dot * stack.scales[state.layer] + (stack.bias === null ? 0 : stack.bias[biasOffset + k]);
      }
      const max = Math.max(...scores);
      const exps = scores.map((score) => Math.exp(score - max));
      const total = exps.reduce((sum, value) => sum + value, 0);
      return { scores, weights: exps.map((value) => value / total) };
    }

    function draw() {
      const d = stack.headDim, keys = stack.keyTokens.length, queries = stack.queryTokens.length;
      const head = state.layer * stack.heads + state.head;
      const query = stack.queryVectors.subarray((head * queries + state.token) * d, (head * queries + state.token + 1) * d);
      const keyVectors = stack.keyVectors.subarray(head * keys * d, (head + 1) * keys * d);
      const products = keyVectors.map((value, i) => value * query[i % d]);
      const { scores, weights } = scoreRow(products, d, keys);
      const absMax = (values) => values.reduce((m, v) => Math.max(m, Math.abs(v)), 1e-6);
      const vectorScale = Math.max(absMax(query), absMax(keyVectors)), productScale = absMax(products);
      const { cell, label, xKey, xProduct, xScore, xWeight, top, width, height } = layout;
      ctx.clearRect(0, 0, width, height);
      ctx.font = FONT;
      ctx.textBaseline = "middle";
      const text = (x, y, value, align) => { ctx.textAlign = align || "left"; ctx.fillStyle = "#222"; ctx.fillText(value, x, y); };
      const cells = (values, scale, x, y) => values.forEach((v, i) => { ctx.fillStyle = color(v, scale); ctx.fillRect(x + i * cell, y + 2, cell, ROW - 4); });
      [[xKey, "query q / key k"], [xProduct, "q × k"], [xScore, "q·k score"], [xWeight, "softmax"]].forEach(([x, t]) => text(x, 12, t));
      ctx.font = "bold " + FONT;
      text(label - 6, top + ROW / 2, stack.queryTokens[state.token], "right");
      ctx.font = FONT;
      cells(query, vectorScale, xKey, top);
      let strongest = 0;
      for (let k = 0; k < keys; k++) {
        const y = top + (k + 1.5) * ROW, score = scores[k], weight = weights[k];
        text(label - 6, y + ROW / 2, stack.keyTokens[k], "right");
        cells(keyVectors.subarray(k * d, (k + 1) * d), vectorScale, xKey, y);
        cells(products.subarray(k * d, (k + 1) * d), productScale, xProduct, y);
        text(xScore, y + ROW / 2, score === -Infinity ? "masked" : score.toFixed(2));
        ctx.fillStyle = "#1f77b4";
        ctx.fillRect(xWeight, y + 3, 80 * weight, ROW - 6);
        text(xWeight + 84, y + ROW / 2, weight.toFixed(3));
        if (weight > weights[strongest]) strongest = k;
      }
      Array.from(tokens.children).forEach((span, index) => span.classList.toggle("focus", index === state.token));
      caption.textContent = `${stack.label} · layer ${state.layer} · head ${state.head} · query “${stack.queryTokens[state.token]}”: ` +
        `strongest key “${stack.keyTokens[strongest]}” (${weights[strongest].toFixed(3)})`;
      root.dataset.token = String(state.token);
    }

    function build() {
      stack = stacks.find((s) => s.name === state.stack);
      state.layer = Math.min(state.layer, stack.layers - 1);
      state.head = Math.min(state.head, stack.heads - 1);
      state.token = Math.min(state.token, stack.queryTokens.length - 1);
      const measure = makeCanvas(1, 1).ctx;
      measure.font = FONT;
      const label = Math.max(...stack.keyTokens.concat(stack.queryTokens).map((t) => measure.measureText(t).width)) + 12;
      const cell = Math.min(10, Math.max(2, 192 / stack.headDim));
      const column = Math.max(cell * stack.headDim, 110); // wide enough for its heading
      const xProduct = label + column + 16, xScore = xProduct + column + 16, xWeight = xScore + 70, top = 30;
      layout = { cell, label, xKey: label, xProduct, xScore, xWeight, top, width: xWeight + 130, height: top + (stack.keyTokens.length + 2) * ROW };
      ({ canvas, ctx } = makeCanvas(layout.width, layout.height));
      figure.replaceChildren(canvas);
      controls.replaceChildren(
        ...stackChooser(stacks, state, (name) => { state.stack = name; build(); }),
        dropdown("Layer", "layer", range(stack.layers).map((l) => [l, String(l)]), state.layer, (v) => { state.layer = Number(v); draw(); }),
        dropdown("Head", "head", range(stack.heads).map((h) => [h, String(h)]), state.head, (v) => { state.head = Number(v); draw(); }));
      tokens.replaceChildren(...stack.queryTokens.map((token, index) => el("span", {
        text: token, title: token, "data-index": index, onclick: () => { state.token = index; draw(); },
      })));
      draw();
    }

    build();
  }

  function imageView(root, payload) {
    const maps = decode(payload.maps, Uint8Array);
    const rowMin = decode(payload.rowMin, Float32Array), rowMax = decode(payload.rowMax, Float32Array);
    const [gridRows, gridColumns] = payload.grid;
    const patches = gridRows * gridColumns, prefix = payload.prefixTokens;
    const tokens = prefix + patches, headSlots = payload.heads + 1; // the last slot is the mean of heads
    const state = Object.assign({}, payload.state);
    const size = 336, width = size, height = Math.round(size * gridRows / gridColumns);
    const image = new Image();
    const main = makeCanvas(width, height);
    const controls = el("div", { class: "controls" });
    const caption = el("p", { class: "caption" });
    const thumbs = el("div", { class: "grid" });
    root.append(controls,
      el("p", { class: "hint", text: "Click a patch to see where it attends; click a thumbnail to pick its layer and head." }),
      caption, el("div", { class: "image-stage" }, [main.canvas]), thumbs);

    const slot = (head) => head === "mean" ? payload.heads : head;
    const label = (query) => query < prefix ? payload.prefixLabels[query]
      : `patch (row ${Math.floor((query - prefix) / gridColumns)}, column ${(query - prefix) % gridColumns})`;

    // The query's attention over the patches as a gridColumns × gridRows RGBA canvas (colour and alpha from the LUT).
    function heatmap(layer, headSlot) {
      const offset = ((layer * headSlots + headSlot) * tokens + state.query) * patches;
      const canvas = el("canvas");
      canvas.width = gridColumns;
      canvas.height = gridRows;
      const ctx = canvas.getContext("2d");
      const pixels = ctx.createImageData(gridColumns, gridRows);
      for (let p = 0; p < patches; p++) pixels.data.set(payload.heatmap[maps[offset + p]], p * 4);
      ctx.putImageData(pixels, 0, 0);
      return canvas;
    }

    function paint(ctx, w, h, layer, headSlot) {
      ctx.clearRect(0, 0, w, h);
      ctx.imageSmoothingEnabled = true;
      ctx.drawImage(image, 0, 0, w, h);
      ctx.drawImage(heatmap(layer, headSlot), 0, 0, w, h);
      if (state.query >= prefix) {
        const patch = state.query - prefix, cellW = w / gridColumns, cellH = h / gridRows;
        ctx.strokeStyle = "#fff";
        ctx.lineWidth = w > 100 ? 2 : 1;
        ctx.strokeRect((patch % gridColumns) * cellW, Math.floor(patch / gridColumns) * cellH, cellW, cellH);
      }
    }

    function draw() {
      const headSlot = slot(state.head);
      paint(main.ctx, width, height, state.layer, headSlot);
      Array.from(thumbs.querySelectorAll(".thumb")).forEach((thumb) => {
        const layer = Number(thumb.dataset.layer), thumbSlot = Number(thumb.dataset.slot);
        paint(thumb.firstChild.getContext("2d"), THUMB / 1.25, THUMB / 1.25 * height / width, layer, thumbSlot);
        thumb.classList.toggle("selected", layer === state.layer && thumbSlot === headSlot);
      });
      const row = (state.layer * headSlots + headSlot) * tokens + state.query;
      caption.textContent = `Layer ${state.layer} · ${state.head === "mean" ? "mean of heads" : "head " + state.head} · ` +
        `attention from ${label(state.query)} (patch weights ${rowMin[row].toFixed(3)} to ${rowMax[row].toFixed(3)}; ` +
        `colour from 0 to ${rowMax[row].toFixed(3)})`;
      root.dataset.query = String(state.query);
      root.dataset.layer = String(state.layer);
      root.dataset.head = String(state.head);
      layerInput.value = String(state.layer);
      headInput.value = String(state.head);
    }

    const layerControl = dropdown("Layer", "layer", range(payload.layers).map((l) => [l, String(l)]), state.layer,
      (v) => { state.layer = Number(v); draw(); });
    const headControl = dropdown("Head", "head", [["mean", "mean"]].concat(range(payload.heads).map((h) => [h, String(h)])), state.head,
      (v) => { state.head = v === "mean" ? v : Number(v); draw(); });
    const layerInput = layerControl.querySelector("select"), headInput = headControl.querySelector("select");
    controls.append(layerControl, headControl, ...payload.prefixLabels.map((name, index) =>
      el("button", { class: "query-button", text: name, onclick: () => { state.query = index; draw(); } })));

    main.canvas.addEventListener("click", (event) => {
      const bounds = main.canvas.getBoundingClientRect();
      const column = Math.min(gridColumns - 1, Math.floor((event.clientX - bounds.left) / bounds.width * gridColumns));
      const row = Math.min(gridRows - 1, Math.floor((event.clientY - bounds.top) / bounds.height * gridRows));
      state.query = prefix + row * gridColumns + column;
      draw();
    });

    const thumbSize = THUMB / 1.25;
    thumbs.style.gridTemplateColumns = `auto repeat(${headSlots}, ${thumbSize + 4}px)`;
    thumbs.append(el("span"), ...range(payload.heads).map((h) => el("span", { class: "col-label", text: "head " + h })),
      el("span", { class: "col-label", text: "mean" }));
    for (const layer of range(payload.layers)) {
      thumbs.append(el("span", { class: "row-label", text: "layer " + layer }));
      for (const headSlot of range(headSlots)) {
        const { canvas } = makeCanvas(thumbSize, thumbSize * height / width);
        thumbs.append(el("button", {
          class: "thumb", "data-layer": layer, "data-slot": headSlot,
          title: `layer ${layer}, ${headSlot === payload.heads ? "mean of heads" : "head " + headSlot}`,
          onclick: () => { state.layer = layer; state.head = headSlot === payload.heads ? "mean" : headSlot; draw(); },
        }, [canvas]));
      }
    }

    image.onload = () => { draw(); root.dataset.ready = "1"; };
    image.src = payload.image;
  }

  const VIEWS = { head: headView, model: modelView, neuron: neuronView, image: imageView };

  function render(root, payload) {
    root.classList.add("view-" + payload.view);
    VIEWS[payload.view](root, payload);
    if (payload.view !== "image") root.dataset.ready = "1"; // the image view is ready once its picture decodes
  }

  return { render: render };
})();
