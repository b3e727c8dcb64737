"""The explorer: one self-contained interactive HTML page joining attribution, factorised groups and patch evidence.

After "The Building Blocks of Interpretability" (Olah et al., Distill 2018):
a person picks an image and a position in it, and sees side by side what the
CNN's layer does there (its NMF groups: what each looks like, its strongest
dataset examples, how active it is and how much it adds to each class) and
what the BagNet's patch there contributes exactly (its class logits and the
class concept it falls into); then picks a class and sees every explanation
map of that class, with its faithfulness numbers and sanity verdicts.

This module only *renders*: the numbers and pictures are computed elsewhere
and handed over as one dict (see `render_explorer` for its layout). The page
carries its data as JSON inside a ``<script type="application/json">`` tag,
draws everything with plain JavaScript, and makes no network request at all
(its Content-Security-Policy forbids any): it works from ``file://``, offline,
and can be mailed as one file.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Iterator

from bagnet_keras.core.commit import write_atomic

__all__ = ["render_explorer", "write_explorer_page"]

#: The page's file name inside the output folder.
PAGE_NAME = "explorer.html"

#: Nothing may be fetched: images are data: URLs, styles and scripts are inline.
_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.2em auto; max-width: 1240px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; margin: 0.2em 0; }
h2 { font-size: 1.1em; margin: 0.2em 0 0.4em; border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
.note { color: #555; font-size: 0.85em; margin: 0.3em 0; }
button { font: inherit; font-size: 0.85em; cursor: pointer; }
img.pixelated, canvas, #main-image, .example, .vis, .thumb img { image-rendering: pixelated; }
#strip { display: flex; gap: 6px; overflow-x: auto; padding: 6px 0 10px; }
.thumb { flex: 0 0 auto; width: 140px; padding: 4px; border: 2px solid #ddd; border-radius: 6px;
         background: #fff; text-align: left; font-size: 0.75em; line-height: 1.3; }
.thumb img { width: 64px; height: 64px; display: block; margin: 0 auto 3px; }
.thumb.selected { border-color: #222; background: #f4f4f4; }
.thumb .line { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.wrong { color: #c5221f; }
#explorer { display: grid; grid-template-columns: minmax(290px, 320px) minmax(0, 1fr); gap: 1.2em;
             align-items: start; }
#image-panel { position: sticky; top: 8px; }  /* the image and the class stay in view while scrolling */
.scroll { overflow-x: auto; }
td:first-child { white-space: nowrap; }
#image-box { position: relative; display: inline-block; line-height: 0; }
#main-image { cursor: crosshair; }
#overlay { position: absolute; left: 0; top: 0; pointer-events: none; }
.key { display: inline-block; width: 14px; height: 10px; border: 2px solid; margin: 0 3px 0 8px; vertical-align: -1px; }
.key.cnn { border-color: #e8710a; } .key.bagnet { border-color: #1a73e8; }
.legend { font-size: 0.85em; margin: 0.4em 0; }
.choose { display: block; margin: 0.6em 0; font-weight: 600; }
.choose select { font: inherit; font-weight: normal; max-width: 220px; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { padding: 3px 6px; border-bottom: 1px solid #eee; vertical-align: middle; text-align: left; }
th { font-weight: 600; background: #f6f6f6; white-space: nowrap; }
th.class-column { white-space: normal; max-width: 8em; overflow-wrap: anywhere; }
td.num { white-space: nowrap; font-variant-numeric: tabular-nums; }
th.chosen, td.chosen, tr.chosen td { background: #fff6d6; }
.bar { display: inline-block; position: relative; width: 44px; height: 9px; background: #f0f0f0;
       margin-right: 4px; vertical-align: middle; }
.bar.signed::after { content: ""; position: absolute; left: 50%; top: -2px; height: 13px; border-left: 1px solid #999; }
.fill { position: absolute; top: 0; height: 100%; }
.fill.pos { background: #e8710a; } .fill.neg { background: #1a73e8; }
.bar.activation .fill { background: #5f6368; }
.vis { height: 40px; display: block; }
.examples { display: inline-flex; flex-wrap: wrap; gap: 2px; align-items: center; max-width: 330px; }
.example { height: 32px; }
.more { font-size: 0.75em; padding: 0 4px; }
.none { color: #888; }
.concept { display: inline-flex; align-items: center; gap: 8px; }
.buttons { margin: 0.4em 0 1em; }
section.panel { margin-bottom: 1.2em; }
#maps { display: flex; flex-wrap: wrap; gap: 12px; }
figure.map { margin: 0; width: 200px; font-size: 0.8em; }
figure.map canvas { display: block; margin-bottom: 3px; }
figure.map .label { font-weight: 600; margin-bottom: 2px; }
.pass { color: #188038; } .fail { color: #c5221f; } .notrun { color: #888; }
#colorbar { display: inline-block; width: 120px; height: 10px; vertical-align: middle; border: 1px solid #ccc; }
"""

_BODY = """<h1>{title}</h1>
<p class="note">Pick an image below, then click a pixel of the large image: the CNN panel shows the layer's groups
(non-negative factors of its activations) at that position, the BagNet panel the exact evidence of the patch there.
Choose a class beside the image to see its attributions and every explanation map of it. Every number has
three significant digits.</p>
<nav id="strip" aria-label="images"></nav>
<div id="explorer">
 <section id="image-panel">
  <div id="image-box"><img id="main-image" alt="the selected image"><canvas id="overlay"></canvas></div>
  <p id="pixel" class="note"></p>
  <p class="legend"><span class="key cnn"></span>CNN receptive field<span class="key bagnet"></span>BagNet patch</p>
  <label class="choose">Class: <select id="class-select"></select></label>
  <p class="note">The class's attribution column is marked in the CNN panel, its row in the BagNet panel, and
  its maps are drawn below them.</p>
  <div id="image-info"></div>
 </section>
 <div id="panels">
  <section id="cnn-panel" class="panel" hidden>
   <h2>CNN <span id="cnn-name"></span>, layer <span id="cnn-layer"></span> at <span id="cnn-position"></span></h2>
   <p class="note">Each row: one group of the layer (what it looks like, its strongest dataset examples), how active
   it is here, and its attribution to each class's logit here (orange adds, blue takes away).</p>
   <div class="scroll"><table id="cnn-table"></table></div>
   <p class="buttons"><button id="cnn-all-groups" type="button"></button>
   <button id="cnn-all-classes" type="button"></button></p>
  </section>
  <section id="bagnet-panel" class="panel" hidden>
   <h2>BagNet <span id="bagnet-name"></span>, patch at <span id="bagnet-position"></span></h2>
   <p class="note">The patch's exact evidence (logit) for each class: the image's logits are the mean of these over
   all patches. Concept: the cluster of the class's strongest patches this one falls into.</p>
   <div class="scroll"><table id="bagnet-table"></table></div>
   <p class="buttons"><button id="bagnet-all-classes" type="button"></button></p>
  </section>
  <section id="maps-panel" class="panel" hidden>
   <h2>Choose a class: the maps of <span id="maps-class"></span></h2>
   <p class="note">Each map stretched over the image (in grey), from its minimum (clear) to its maximum
   (<span id="colorbar"></span>); the image's scores, their mean over the test set, and the sanity checks
   (&#10003; passes, &#10007; fails, &ndash; not run).</p>
   <div id="maps"></div>
  </section>
 </div>
</div>
"""

_SCRIPT = r"""
"use strict";
// Every view is drawn again from `state` after each click; nothing is fetched.
const DATA = JSON.parse(document.getElementById("explorer-data").textContent);
const K = DATA.class_names.length;
const TOP_GROUPS = 6, TOP_CLASSES = 3, TOP_EXAMPLES = 4;
const MAIN_WIDTH = 288, MAP_WIDTH = 176;  // target CSS widths; the scales themselves are integers
const CNN_COLOUR = "#e8710a", BAGNET_COLOUR = "#1a73e8";
const state = {image: 0, py: 0, px: 0, scale: 1, cls: 0, allGroups: false, allCnnClasses: false,
               allBagnetClasses: false, open: new Set(), drawing: 0};
const $ = (id) => document.getElementById(id);

// The one number format of the page (the tests read the numbers back in this form).
const fmt = (v) => (typeof v === "number" && isFinite(v) ? v.toPrecision(3) : "–");
const num = (v) => (typeof v === "number" && isFinite(v) ? v : -Infinity);
const name = (k) => DATA.class_names[k] ?? `class ${k}`;

function el(tag, attrs = {}, ...children) {
  // Text goes in as text nodes only, so no string from the data is ever parsed as HTML.
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "on") for (const [type, f] of Object.entries(value)) node.addEventListener(type, f);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function picture(url, cls, title) {
  // Embedded images only: any other URL would be a request (and the page's policy blocks it anyway).
  if (typeof url !== "string" || !url.startsWith("data:image/")) return null;
  return el("img", {src: url, class: cls, alt: title || "", title: title || null});
}

const loaded = new Map();
function loadImage(url) {
  // Resolves to null for a missing or broken image, so a bad map never stops the others.
  if (typeof url !== "string" || !url.startsWith("data:image/")) return Promise.resolve(null);
  if (!loaded.has(url)) loaded.set(url, new Promise((resolve) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => resolve(null);
    image.src = url;
  }));
  return loaded.get(url);
}

function ranked(values) {
  // Indices by value, largest first; ties (and missing values, last) keep their index order.
  return values.map((_, k) => k).sort((a, b) => num(values[b]) - num(values[a]) || a - b);
}

const largest = (values) => values.reduce((m, v) => Math.max(m, Math.abs(isFinite(v) ? v : 0)), 1e-12);

function modelOf(i, modelName) {
  const models = DATA.images[i].models || {};
  return models[modelName] || null;
}

function defaultClass(i) {
  const model = (DATA.cnn && modelOf(i, DATA.cnn.name)) || (DATA.bagnet && modelOf(i, DATA.bagnet.name))
    || Object.values(DATA.images[i].models || {})[0];
  return model && Number.isInteger(model.predicted) ? model.predicted : 0;
}

function nearest(model) {
  // The grid position whose receptive-field centre is nearest the chosen pixel (ties: the later), in the grid.
  const {patch_size: p, stride: s, offset: o} = model.geometry;
  const one = (v, n) => Math.min(n - 1, Math.max(0, Math.round((v - o - (p - 1) / 2) / s)));
  return [one(state.py, model.grid[0]), one(state.px, model.grid[1])];
}

function box(model, [r, c], [H, W]) {
  // The input pixels position (r, c) sees, clipped to the image: [top, left, bottom, right], inclusive.
  const {patch_size: p, stride: s, offset: o} = model.geometry;
  const clip = (v, n) => Math.min(n - 1, Math.max(0, v));
  return [clip(o + s * r, H), clip(o + s * c, W), clip(o + s * r + p - 1, H), clip(o + s * c + p - 1, W)];
}

function bar(value, max, signed, cls) {
  // As long as |value| / max; a signed bar grows right (adds) or left (takes away) from its middle.
  const v = isFinite(value) ? value : 0, f = Math.min(1, Math.abs(v) / max);
  const fill = el("span", {class: "fill " + (v < 0 ? "neg" : "pos")});
  fill.style.width = `${(signed ? 50 : 100) * f}%`;
  fill.style.left = signed ? (v < 0 ? `${50 - 50 * f}%` : "50%") : "0";
  return el("span", {class: `bar ${signed ? "signed" : cls || ""}`}, fill);
}

function examples(urls, key) {
  // The first few examples; the rest one click away.
  const list = urls || [], open = state.open.has(key);
  const shown = open ? list : list.slice(0, TOP_EXAMPLES);
  const span = el("span", {class: "examples"}, shown.map((u) => picture(u, "example")));
  if (list.length > TOP_EXAMPLES) span.append(el("button", {class: "more", type: "button",
    text: open ? "fewer" : `+${list.length - TOP_EXAMPLES}`,
    on: {click: () => { if (open) state.open.delete(key); else state.open.add(key); drawPanels(); }}}));
  return span;
}

function toggle(id, needed, on, offText, onText) {
  const button = $(id);
  button.hidden = !needed;
  button.textContent = on ? onText : offText;
}

function drawStrip() {
  $("strip").replaceChildren(...DATA.images.map((image, i) => {
    const models = Object.entries(image.models || {});
    const wrong = models.some(([, m]) => m.predicted !== image.label);
    return el("button", {id: `thumb-${i}`, class: "thumb" + (wrong ? " misclassified" : ""), type: "button",
                         on: {click: () => selectImage(i)}},
      picture(image.src, "", `image ${image.index}`),
      el("div", {class: "line", text: `#${image.index}: ${name(image.label)}`, title: name(image.label)}),
      models.map(([modelName, m]) => el("div", {class: "line" + (m.predicted === image.label ? "" : " wrong"),
        text: `${m.predicted === image.label ? "✓" : "✗"} ${modelName}: ${name(m.predicted)}`,
        title: `${modelName} predicts ${name(m.predicted)}`})));
  }));
}

function drawInfo() {
  const i = state.image, image = DATA.images[i];
  const cell = (m, k, model) => el("td", {class: "num"}, el("span", {"data-kind": "probability",
    "data-model": model, "data-class": k, text: fmt((m.probabilities || [])[k])}));
  const rows = Object.entries(image.models || {}).map(([model, m]) => el("tr",
    {class: m.predicted === image.label ? null : "wrong"}, el("td", {text: model}),
    el("td", {text: name(m.predicted)}), cell(m, m.predicted, model), cell(m, image.label, model)));
  $("image-info").replaceChildren(
    el("p", {}, `Image #${image.index}, true class `, el("b", {text: name(image.label)})),
    el("table", {}, el("tr", {}, ["model", "predicts", "p(predicted)", "p(true)"].map((t) => el("th", {text: t}))),
       rows));
}

function drawOverlay() {
  const canvas = $("overlay"), ctx = canvas.getContext("2d"), s = state.scale;
  const size = DATA.images[state.image].size;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  // The BagNet box sits 2 px further inside, so both stay visible where they coincide.
  for (const [model, colour, inset] of [[DATA.cnn, CNN_COLOUR, 1], [DATA.bagnet, BAGNET_COLOUR, 3]]) {
    if (!model) continue;
    const [t, l, b, r] = box(model, nearest(model), size);
    ctx.lineWidth = 2;
    ctx.strokeStyle = colour;
    ctx.strokeRect(l * s + inset, t * s + inset, (r - l + 1) * s - 2 * inset, (b - t + 1) * s - 2 * inset);
  }
  ctx.lineWidth = 1;
  ctx.strokeStyle = "#fff";
  ctx.strokeRect(state.px * s + 0.5, state.py * s + 0.5, s - 1, s - 1);
  const pixel = $("pixel");
  pixel.textContent = `pixel: row ${state.py}, column ${state.px} (click the image to choose another)`;
  pixel.dataset.row = state.py;
  pixel.dataset.column = state.px;
}

function cnnClasses(i) {
  // The CNN's most probable classes (all on request), and the chosen class whatever its rank.
  const model = modelOf(i, DATA.cnn.name);
  const order = ranked(model && model.probabilities ? model.probabilities : DATA.class_names.map(() => 0));
  const shown = state.allCnnClasses ? order : order.slice(0, TOP_CLASSES);
  return shown.includes(state.cls) ? shown : [...shown, state.cls];
}

function groupRow(g, activation, attribution, classes, actMax, attrMax) {
  const group = DATA.cnn.groups[g] || {name: `group ${g}`, examples: []};
  return el("tr", {class: "group-row", "data-group": g},
    el("td", {text: group.name}),
    el("td", {}, picture(group.visualization, "vis", `feature visualisation of ${group.name}`)
                 || el("span", {class: "none", text: "–"})),
    el("td", {}, examples(group.examples, `g${g}`)),
    el("td", {class: "num"}, bar(activation, actMax, false, "activation"),
       el("span", {"data-kind": "cnn-activation", "data-group": g, text: fmt(activation)})),
    classes.map((k) => el("td", {class: "num" + (k === state.cls ? " chosen" : "")}, bar(attribution[k], attrMax, true),
       el("span", {"data-kind": "cnn-attribution", "data-group": g, "data-class": k, text: fmt(attribution[k])}))));
}

function drawCnn() {
  const cnn = DATA.cnn, i = state.image, [r, c] = nearest(cnn);
  $("cnn-position").textContent = `row ${r}, column ${c}`;
  const activation = cnn.activation[i][r][c], attribution = cnn.attribution[i][r][c];
  const order = ranked(activation), classes = cnnClasses(i);
  const groups = state.allGroups ? order : order.slice(0, TOP_GROUPS);
  // One scale per position, so the bars keep their lengths when more rows or columns are shown.
  const actMax = largest(activation), attrMax = largest(attribution.flat());
  const head = el("tr", {}, ["group", "looks like", "strongest examples", "activation"].map((t) => el("th", {text: t})),
    classes.map((k) => el("th", {class: "class-column" + (k === state.cls ? " chosen" : ""), text: `to ${name(k)}`})));
  $("cnn-table").replaceChildren(el("thead", {}, head), el("tbody", {},
    groups.map((g) => groupRow(g, activation[g], attribution[g], classes, actMax, attrMax))));
  toggle("cnn-all-groups", order.length > TOP_GROUPS, state.allGroups, `show all ${order.length} groups`,
         `show the top ${TOP_GROUPS} groups`);
  toggle("cnn-all-classes", K > TOP_CLASSES, state.allCnnClasses, `show all ${K} classes`,
         `show the top ${TOP_CLASSES} classes`);
}

function conceptCell(k, j) {
  const found = Number.isInteger(j) && j >= 0 ? ((DATA.bagnet.concepts || {})[String(k)] || [])[j] : undefined;
  if (!found) return el("td", {class: "none", "data-kind": "bagnet-concept", "data-class": k, "data-concept": -1,
                               text: "no concept"});
  return el("td", {"data-kind": "bagnet-concept", "data-class": k, "data-concept": j}, el("span", {class: "concept"},
    el("span", {}, `concept ${j}: `, el("span", {"data-kind": "concept-share", text: fmt(100 * found.share)}),
       "% of the class's evidence"), examples(found.examples, `c${k}.${j}`)));
}

function drawBagnet() {
  const bagnet = DATA.bagnet, i = state.image, [r, c] = nearest(bagnet);
  $("bagnet-position").textContent = `row ${r}, column ${c}`;
  const logits = bagnet.evidence[i][r][c], concept = ((bagnet.concept || [])[i] || [])[r]?.[c] || [];
  const order = ranked(logits), shown = state.allBagnetClasses ? order : order.slice(0, TOP_CLASSES);
  const max = largest(logits);
  const head = el("tr", {}, ["class", "evidence", "concept"].map((t) => el("th", {text: t})));
  $("bagnet-table").replaceChildren(el("thead", {}, head), el("tbody", {}, shown.map((k) =>
    el("tr", {class: "class-row" + (k === state.cls ? " chosen" : ""), "data-class": k}, el("td", {text: name(k)}),
       el("td", {class: "num"}, bar(logits[k], max, true),
          el("span", {"data-kind": "bagnet-logit", "data-class": k, text: fmt(logits[k])})),
       conceptCell(k, concept[k])))));
  toggle("bagnet-all-classes", K > TOP_CLASSES, state.allBagnetClasses, `show all ${K} classes`,
         `show the top ${TOP_CLASSES} classes`);
}

// A small inferno-like colour map; the overlay's opacity grows with the value, so low values leave the image clear.
const STOPS = [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]];
const COLOURS = Array.from({length: 256}, (_, v) => {
  const x = (v / 255) * (STOPS.length - 1), j = Math.min(STOPS.length - 2, Math.floor(x)), f = x - j;
  return STOPS[j].map((a, n) => Math.round(a + f * (STOPS[j + 1][n] - a)));
});
const alphaOf = (v) => Math.round(230 * Math.pow(v / 255, 0.8));

function drawHeat(canvas, base, heat) {
  const ctx = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
  ctx.imageSmoothingEnabled = false;  // image pixels stay pixels
  ctx.clearRect(0, 0, w, h);
  if (!heat) {
    if (base) ctx.drawImage(base, 0, 0, w, h);
    return;
  }
  ctx.filter = "grayscale(1)";  // the map's colours read clearly on a grey image
  if (base) ctx.drawImage(base, 0, 0, w, h);
  ctx.filter = "none";
  const off = document.createElement("canvas");
  off.width = w;
  off.height = h;
  const octx = off.getContext("2d", {willReadFrequently: true});
  octx.imageSmoothingEnabled = true;  // a coarse map is stretched smoothly over the image
  octx.drawImage(heat, 0, 0, w, h);
  const pixels = octx.getImageData(0, 0, w, h), d = pixels.data;
  for (let p = 0; p < d.length; p += 4) {
    const v = d[p], [r, g, b] = COLOURS[v];
    d[p] = r; d[p + 1] = g; d[p + 2] = b; d[p + 3] = alphaOf(v);
  }
  octx.putImageData(pixels, 0, 0);
  ctx.drawImage(off, 0, 0);
}

function sanity(verdicts) {
  return ["randomization", "invariance"].map((test) => {
    const v = (verdicts || {})[test];
    const [cls, mark, words] = v === true ? ["pass", "✓", "passes"] : v === false ? ["fail", "✗", "fails"]
      : ["notrun", "–", "not run"];
    return el("span", {class: cls, title: `${test} check: ${words}`, "data-kind": "sanity", "data-test": test,
                       text: `${mark} ${test} `});
  });
}

function mapCard(m, j, i) {
  const [H, W] = DATA.images[i].size, s = Math.max(1, Math.round(MAP_WIDTH / W));
  const measures = [...new Set([...Object.keys(m.scores || {}), ...Object.keys(m.summary || {})])];
  return el("figure", {class: "map", "data-map": j},
    el("canvas", {width: W * s, height: H * s}),
    el("figcaption", {}, el("div", {class: "label", text: m.label}),
      measures.map((measure) => el("div", {}, `${measure}: `,
        el("span", {"data-kind": "map-score", "data-measure": measure,
                    text: fmt(((m.scores || {})[measure] || [])[i])}),
        " (test mean ", el("span", {"data-kind": "map-summary", "data-measure": measure,
                                   text: fmt((m.summary || {})[measure])}), ")")),
      el("div", {}, sanity(m.sanity))));
}

async function drawMaps() {
  const token = ++state.drawing, i = state.image, k = state.cls, image = DATA.images[i];
  $("maps-class").textContent = name(k);
  const cards = DATA.maps.map((m, j) => mapCard(m, j, i));
  $("maps").replaceChildren(...cards);
  const base = await loadImage(image.src);
  for (const [j, m] of DATA.maps.entries()) {
    const heat = await loadImage(((m.heat || [])[i] || [])[k]);
    if (token !== state.drawing) return;  // another image or class was chosen meanwhile: its drawing wins
    const canvas = cards[j].querySelector("canvas");
    drawHeat(canvas, base, heat);
    canvas.dataset.drawn = `${i}:${k}`;
  }
}

function drawPanels() {
  drawOverlay();
  if (DATA.cnn) drawCnn();
  if (DATA.bagnet) drawBagnet();
}

function selectImage(i) {
  const image = DATA.images[i], [H, W] = image.size, s = Math.max(1, Math.round(MAIN_WIDTH / W));
  Object.assign(state, {image: i, py: Math.floor(H / 2), px: Math.floor(W / 2), scale: s, cls: defaultClass(i)});
  const main = $("main-image"), overlay = $("overlay");
  main.src = picture(image.src) ? image.src : "";
  main.width = overlay.width = W * s;
  main.height = overlay.height = H * s;
  main.dataset.scale = s;
  $("class-select").value = String(state.cls);
  DATA.images.forEach((_, j) => $(`thumb-${j}`).classList.toggle("selected", j === i));
  drawInfo();
  drawPanels();
  drawMaps();
}

function start() {
  if (!DATA.images.length) {
    $("explorer").replaceChildren(el("p", {class: "note", text: "No images to explore."}));
    return;
  }
  $("cnn-panel").hidden = !DATA.cnn;
  $("bagnet-panel").hidden = !DATA.bagnet;
  $("maps-panel").hidden = !DATA.maps.length;
  if (DATA.cnn) { $("cnn-name").textContent = DATA.cnn.name; $("cnn-layer").textContent = DATA.cnn.layer; }
  if (DATA.bagnet) $("bagnet-name").textContent = DATA.bagnet.name;
  $("colorbar").style.background = `linear-gradient(to right, ${COLOURS.filter((_, v) => v % 32 === 0 || v === 255)
    .map(([r, g, b], n, all) => `rgba(${r},${g},${b},${alphaOf(n * 255 / (all.length - 1)) / 255})`).join(", ")})`;
  $("class-select").replaceChildren(...DATA.class_names.map((c, k) => el("option", {value: k, text: `${k}: ${c}`})));
  $("class-select").addEventListener("change", (event) => {
    state.cls = Number(event.target.value);
    drawPanels();
    drawMaps();
  });
  $("main-image").addEventListener("click", (event) => {
    const [H, W] = DATA.images[state.image].size;
    state.py = Math.min(H - 1, Math.max(0, Math.floor(event.offsetY / state.scale)));
    state.px = Math.min(W - 1, Math.max(0, Math.floor(event.offsetX / state.scale)));
    drawPanels();
  });
  const flip = (id, key) => $(id).addEventListener("click", () => { state[key] = !state[key]; drawPanels(); });
  flip("cnn-all-groups", "allGroups");
  flip("cnn-all-classes", "allCnnClasses");
  flip("bagnet-all-classes", "allBagnetClasses");
  drawStrip();
  selectImage(0);
}

start();
"""


def _image_urls(data: dict) -> Iterator[tuple[str, object]]:
    """``(where, url)`` of every picture the page shows."""
    for i, image in enumerate(data["images"]):
        yield f"images[{i}]['src']", image.get("src")
    for g, group in enumerate((data.get("cnn") or {}).get("groups", [])):
        if group.get("visualization") is not None:
            yield f"cnn['groups'][{g}]['visualization']", group["visualization"]
        for j, url in enumerate(group.get("examples", [])):
            yield f"cnn['groups'][{g}]['examples'][{j}]", url
    for k, concepts in ((data.get("bagnet") or {}).get("concepts") or {}).items():
        for j, concept in enumerate(concepts):
            for n, url in enumerate(concept.get("examples", [])):
                yield f"bagnet['concepts'][{k!r}][{j}]['examples'][{n}]", url
    for m, entry in enumerate(data.get("maps") or []):
        for i, row in enumerate(entry.get("heat", [])):
            for k, url in enumerate(row):
                yield f"maps[{m}]['heat'][{i}][{k}]", url


def _check(data: dict) -> None:
    """Raise ValueError, naming the place, where ``data`` cannot make a page that fetches nothing."""
    missing = [key for key in ("title", "class_names", "images") if key not in data]
    if missing:
        raise ValueError(f"the explorer's data lacks {missing}; it needs 'title', 'class_names' and 'images'")
    n = len(data["images"])
    for part, key in (("cnn", "activation"), ("cnn", "attribution"), ("bagnet", "evidence")):
        if data.get(part) and len(data[part][key]) != n:
            raise ValueError(
                f"data[{part!r}][{key!r}] has {len(data[part][key])} images, but data['images'] has {n}; "
                "give them for the same images, in the same order"
            )
    for where, url in _image_urls(data):
        if not (isinstance(url, str) and url.startswith("data:image/")):
            raise ValueError(
                f"data{where} is {str(url)[:40]!r}: the explorer embeds every image as a data:image/... URL "
                "and fetches nothing; encode the image (e.g. as PNG in base64)"
            )


def _plain(value: object) -> object:
    """NumPy arrays and scalars as lists and numbers (for `json.dumps`)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"the explorer's data holds a {type(value).__name__}, which JSON cannot carry")


def _finite(value: object) -> object:
    """``value`` with every NaN or infinity replaced by None (JSON has neither; the page shows '–')."""
    value = _plain(value) if hasattr(value, "tolist") else value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _embedded_json(data: dict) -> str:
    """``data`` as JSON that cannot end its ``<script>`` tag early: ``<``, ``>`` and ``&`` are escaped."""
    try:
        text = json.dumps(data, allow_nan=False, separators=(",", ":"), default=_plain)
    except ValueError:  # a NaN or an infinity somewhere: only then walk the whole structure
        text = json.dumps(_finite(data), allow_nan=False, separators=(",", ":"), default=_plain)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_explorer(data: dict) -> str:
    """The explorer page for ``data``: one complete HTML document that makes no network request.

    Parameters
    ----------
    data : dict
        What the page shows, in plain lists and numbers (NumPy arrays are accepted too)::

            title: str, class_names: [K names],
            images: [{index, label, src (data URL), size [H, W],
                      models: {name: {predicted, probabilities [K]}}}, ...]      # N images
            cnn: None or {name, layer, grid [h, w], geometry {patch_size, stride, offset},
                          groups [{name, visualization (data URL or None), examples [data URLs]}],
                          activation [N][h][w][G], attribution [N][h][w][G][K]}
            bagnet: None or {name, grid, geometry, evidence [N][h][w][K], concept [N][h][w][K] (index or -1),
                             concepts {str(k): [{share, examples [data URLs]}]}}
            maps: [{model, method, label, heat [N][K] (grayscale PNG data URLs), scores {measure: [N]},
                    summary {measure: mean}, sanity {randomization, invariance: bool or None}}]

        Position (r, c) of a grid sees input rows ``offset + stride*r`` to ``offset + stride*r + patch_size - 1``
        (columns likewise). NaN and infinities are shown as '–'.

    Returns
    -------
    str
        The page: inline style and script, ``data`` embedded as JSON.

    Raises
    ------
    ValueError
        When a key is missing, the parts disagree on the number of images, or an image is not a
        ``data:image/`` URL (the page fetches nothing).

    Examples
    --------
    >>> image = {"index": 7, "label": 0, "src": "data:image/png;base64,AAAA", "size": [2, 2], "models": {}}
    >>> page = render_explorer({"title": "</script> & co", "class_names": ["a", "b"], "images": [image],
    ...                         "cnn": None, "bagnet": None, "maps": []})
    >>> page.startswith("<!DOCTYPE html>"), page.count("</script>"), "<title>&lt;/script&gt; &amp; co" in page
    (True, 2, True)
    >>> "http://" in page or "https://" in page
    False
    """
    _check(data)
    data = {"cnn": None, "bagnet": None, "maps": [], **data}
    title = html.escape(str(data["title"]))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_POLICY}">\n'
        '<link rel="icon" href="data:,">\n'  # no favicon request
        f"<title>{title}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + _BODY.format(title=title)
        + f'<script type="application/json" id="explorer-data">{_embedded_json(data)}</script>\n'
        + f"<script>{_SCRIPT}</script>\n</body>\n</html>\n"
    )


def write_explorer_page(data: dict, output_dir: str | os.PathLike) -> str:
    """Write the explorer page for ``data`` to ``output_dir/explorer.html`` (atomically); returns its path.

    Parameters
    ----------
    data : dict
        As for `render_explorer`.
    output_dir : path
        Created if needed; nothing else is written in it.

    Examples
    --------
    >>> import tempfile
    >>> image = {"index": 0, "label": 1, "src": "data:image/png;base64,AAAA", "size": [2, 2], "models": {}}
    >>> data = {"title": "t", "class_names": ["a", "b"], "images": [image], "cnn": None, "bagnet": None, "maps": []}
    >>> path = write_explorer_page(data, tempfile.mkdtemp())
    >>> os.path.basename(path), open(path, encoding="utf-8").read().count('id="main-image"')
    ('explorer.html', 1)
    """
    os.makedirs(output_dir, exist_ok=True)
    return write_atomic(os.path.join(os.fspath(output_dir), PAGE_NAME), render_explorer(data))
