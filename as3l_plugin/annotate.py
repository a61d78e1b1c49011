"""The human annotation step: a self-contained page to label the selection, and a tiny server.

``as3l annotate SELECT_DIR`` (and the pipeline's ``labels: {source: annotate}``) writes, next
to the selection's ``to_annotate.csv``:

- ``annotate.html``: every selected image (base64 PNG data URIs, so it opens from
  ``file://``; click one to enlarge it, a class key labels it there), a class picker (buttons; keys 1–9, 0 for the first ten classes; a search box
  when there are more), progress, undo, a "skip / unsure" mark and a button that downloads
  the filled ``to_annotate.csv``. Clicks are kept in the browser's localStorage, so a
  reopened page shows them, as it shows the labels the CSV held when the page was written.
- ``contact_sheet.png``: the selection's thumbnails with their row numbers
  (``row: dataset index``), for a quick look or labeling on paper.

With ``--serve`` (:func:`serve`) the same page is served by a stdlib HTTP server bound to
127.0.0.1 only; every click POSTs the label and the server rewrites ``to_annotate.csv``
atomically, so closing the tab loses nothing; the page's Done button stops the server.
A random token in the page must accompany every POST (another web page cannot post), and
requests addressed to another host name than 127.0.0.1 / localhost are refused.

The CSV format and its reader are :mod:`as3l_plugin.annotations`.
"""

from __future__ import annotations

import base64
import hashlib
import io as _io
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np

from .annotations import (ANNOTATION_FILENAME, HEADER, SKIPPED, UNLABELED, annotation_rows,
                          parse_label, read_annotations)
from .errors import InputError, LabelsError, StaleInputError
from .artifacts import read_artifact_sidecar
from .io import atomic_write_bytes, atomic_write_csv, atomic_write_text, find_index

__all__ = ["PAGE_FILENAME", "CONTACT_SHEET", "Annotation", "open_selection", "write_page",
           "write_contact_sheet", "serve"]

PAGE_FILENAME = "annotate.html"
CONTACT_SHEET = "contact_sheet.png"
#: longest side of an image embedded in the page (larger ones are shrunk)
MAX_SIDE = 384


@dataclass
class Annotation:
    """A selection being labeled.

    Attributes
    ----------
    dir : Path
        The selection directory (``to_annotate.csv``, the page and the sheet go there).
    idx : ndarray of int64, shape (m,)
        Selected dataset rows, in the sampler's order.
    images : list of ndarray of uint8, (H, W) or (H, W, 3), length m
    paths : list of str, length m
        Relative image paths (folder data), else ``""``.
    class_names : list of str, length C
    labels : ndarray of int64, shape (m,)
        Class ids, :data:`~as3l_plugin.annotations.UNLABELED` or ``SKIPPED``.
    """

    dir: Path
    idx: np.ndarray
    images: list
    paths: List[str]
    class_names: List[str]
    labels: np.ndarray

    @property
    def csv(self) -> Path:
        return self.dir / ANNOTATION_FILENAME

    @property
    def num_labeled(self) -> int:
        return int((self.labels >= 0).sum())

    @property
    def num_skipped(self) -> int:
        return int((self.labels == SKIPPED).sum())

    def save(self) -> Path:
        """Write ``to_annotate.csv`` atomically (class names in ``label``, with paths)."""
        return atomic_write_csv(self.csv, HEADER, annotation_rows(
            self.idx, self.labels, paths=self.paths, class_names=self.class_names))

    def set_label(self, index: int, label: str) -> None:
        """Set the label of dataset row ``index`` from a page value (name, id, ``skip`` or
        ``""``); raises :class:`LabelsError` for an index not selected or an unknown class."""
        pos = np.flatnonzero(self.idx == int(index))
        if pos.size != 1:
            raise LabelsError(f"{index} is not one of the {self.idx.size} selected samples",
                              path=self.csv, field="index")
        self.labels[pos[0]] = parse_label(str(label), len(self.class_names), self.class_names,
                                          where=self.csv, sample=int(index))


def open_selection(select_dir, *, dataset=None, data_dir=None, index=None) -> Annotation:
    """Load a selection directory with its images, class names and the labels given so far.

    ``dataset`` is a dataset object or a name (default: the name in the index's sidecar);
    a missing ``to_annotate.csv`` means nothing is labeled yet. Raises an
    :class:`~as3l_plugin.errors.AS3LError` for a selection that does not fit the dataset or
    a malformed CSV (nothing is written).
    """
    from .datasets import class_names, load_dataset
    from .io import load_npy

    select_dir = Path(select_dir)
    index = Path(index) if index is not None else find_index(select_dir)
    side = read_artifact_sidecar(index)
    if dataset is None or isinstance(dataset, str):
        name = dataset or side.get("dataset")
        if not name:
            raise InputError("the selection records no dataset; pass --dataset NAME (the "
                             "dataset the features were made from)", path=index,
                             field="--dataset")
        dataset = load_dataset(name, data_dir)
    x = dataset.x_train
    n = len(x)
    if side.get("n") is not None and int(side["n"]) != n:
        raise StaleInputError(f"the selection was made on {side['n']} samples but dataset "
                              f"{dataset.name!r} has {n} training images; pass the dataset the "
                              "features were made from", path=index, field="n")
    idx = load_npy(index, what="index")
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer) or idx.size == 0 \
            or idx.min() < 0 or idx.max() >= n:
        raise InputError(f"expected int indices in [0, {n}), got {idx.dtype} {idx.shape}",
                         path=index)
    idx = idx.astype(np.int64)
    names = class_names(dataset)
    all_paths = getattr(dataset, "paths", None)
    paths = [""] * idx.size if all_paths is None else [str(all_paths[i]) for i in idx]
    csv = select_dir / ANNOTATION_FILENAME
    if csv.exists():
        labels = read_annotations(csv, idx, len(names), class_names=names, n_samples=n,
                                  paths=all_paths)
    else:
        labels = np.full(idx.size, UNLABELED, dtype=np.int64)
    return Annotation(select_dir, idx, [np.asarray(x[i]) for i in idx], paths, names, labels)


# --------------------------------------------------------------------------- images
def _pil(img: np.ndarray, max_side: int = MAX_SIDE):
    from PIL import Image
    a = np.asarray(img)
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    im = Image.fromarray(a.squeeze(-1) if a.ndim == 3 and a.shape[-1] == 1 else a)
    if max(im.size) > max_side:
        im.thumbnail((max_side, max_side))
    return im


def _png_data_uri(img: np.ndarray) -> str:
    buf = _io.BytesIO()
    _pil(img).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def write_contact_sheet(ann: Annotation, path=None, *, cell: int = 96, cols: int = 10) -> Path:
    """``contact_sheet.png``: the thumbnails in selection order, each captioned
    ``row: dataset index`` (row = line of the sample in ``to_annotate.csv``, 1-based)."""
    from PIL import Image, ImageDraw, ImageFont
    m = len(ann.images)
    cols = max(1, min(cols, m))
    rows = -(-m // cols)
    cap = 16
    sheet = Image.new("RGB", (cols * (cell + 8) + 8, rows * (cell + cap + 8) + 8), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for k, img in enumerate(ann.images):
        im = _pil(img).convert("RGB")
        scale = cell / max(im.size)
        im = im.resize((max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale))),
                       Image.NEAREST if scale >= 1 else Image.BILINEAR)
        x0 = 8 + (k % cols) * (cell + 8)
        y0 = 8 + (k // cols) * (cell + cap + 8)
        sheet.paste(im, (x0 + (cell - im.size[0]) // 2, y0 + (cell - im.size[1]) // 2))
        draw.text((x0, y0 + cell + 2), f"{k + 1}: {int(ann.idx[k])}", fill="black", font=font)
    buf = _io.BytesIO()
    sheet.save(buf, format="PNG", optimize=True)
    return atomic_write_bytes(path or ann.dir / CONTACT_SHEET, buf.getvalue())


# --------------------------------------------------------------------------- the page
def _label_cell(ann: Annotation, c: int) -> str:
    return annotation_rows([0], [c], class_names=ann.class_names)[0][1]


def render_page(ann: Annotation, *, images: Optional[Sequence[str]] = None,
                serve_token: Optional[str] = None) -> str:
    """The page as HTML text. ``images``: the data URIs (computed once by the server);
    ``serve_token``: served mode (POST each click with this token) instead of file mode."""
    images = images if images is not None else [_png_data_uri(im) for im in ann.images]
    csv_now = ann.csv.read_bytes() if ann.csv.exists() else b""
    data = {
        "items": [{"i": int(i), "p": p, "src": s}
                  for i, p, s in zip(ann.idx, ann.paths, images)],
        "classes": ann.class_names,
        "labels": [_label_cell(ann, int(c)) for c in ann.labels],
        "header": list(HEADER),
        "csv": ANNOTATION_FILENAME,
        "token": serve_token,
        # localStorage key and the CSV the page started from (a newer CSV wins)
        "key": "as3l-annotate:" + hashlib.sha256(ann.idx.tobytes()).hexdigest()[:16],
        "base": hashlib.sha256(csv_now).hexdigest()[:16],
    }
    blob = json.dumps(data).replace("</", "<\\/")
    return _PAGE.replace("/*DATA*/null", blob)


def write_page(ann: Annotation, path=None) -> Path:
    """Write the self-contained ``annotate.html`` (file mode: labels leave by download)."""
    return atomic_write_text(path or ann.dir / PAGE_FILENAME, render_page(ann))


# --------------------------------------------------------------------------- the server
def serve(ann: Annotation, *, port: int = 0, on_ready: Callable[[str], None] = print,
          log: Callable[[str], None] = lambda msg: None) -> Annotation:
    """Serve the page on ``http://127.0.0.1:<port>/`` until the user presses Done.

    ``port=0`` picks a free port; ``on_ready(url)`` is called once listening. Each
    ``POST /label`` (JSON ``{"index": int, "label": str}``) updates ``ann.labels`` and
    rewrites ``to_annotate.csv`` atomically; ``POST /done`` saves and stops. Returns ``ann``.
    """
    import secrets
    token = secrets.token_hex(16)
    images = [_png_data_uri(im) for im in ann.images]
    ann.save()  # the CSV exists (with paths and names) from the first moment

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):  # quiet: the terminal shows our own lines
            pass

        def _reply(self, code: int, body: bytes, ctype: str = "application/json"):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, obj):
            self._reply(code, json.dumps(obj).encode())

        def _state(self):
            return {"labeled": ann.num_labeled, "skipped": ann.num_skipped,
                    "total": int(ann.idx.size)}

        def _local(self) -> bool:
            """Only pages addressed to this machine (no DNS rebinding to 127.0.0.1)."""
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
            return host in ("127.0.0.1", "localhost")

        def do_GET(self):
            if not self._local():
                return self._reply(403, b"forbidden", "text/plain")
            if self.path.split("?")[0] not in ("/", "/" + PAGE_FILENAME):
                return self._reply(404, b"not found", "text/plain")
            page = render_page(ann, images=images, serve_token=token)
            self._reply(200, page.encode(), "text/html; charset=utf-8")

        def do_POST(self):
            if not self._local() or self.headers.get("X-AS3L-Token") != token:
                return self._json(403, {"error": "bad token; reload the page"})
            try:
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
            except (ValueError, json.JSONDecodeError):
                return self._json(400, {"error": "expected a JSON body"})
            if self.path == "/label":
                try:
                    ann.set_label(int(body["index"]), str(body.get("label", "")))
                except (KeyError, TypeError, ValueError) as exc:
                    return self._json(400, {"error": " ".join(str(exc).split())})
                ann.save()
                log(f"  {int(body['index'])}: {body.get('label') or '(cleared)'}  "
                    f"[{ann.num_labeled} / {ann.idx.size} labeled]")
                return self._json(200, self._state())
            if self.path == "/done":
                ann.save()
                self._json(200, self._state())
                threading.Thread(target=server.shutdown, daemon=True).start()
                return
            self._json(404, {"error": "unknown endpoint"})

    server = HTTPServer(("127.0.0.1", int(port)), Handler)
    try:
        on_ready(f"http://127.0.0.1:{server.server_address[1]}/")
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return ann


_PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>AS3L: label the selection</title>
<style>
 body{font:14px system-ui,sans-serif;margin:0;background:#f4f4f4;color:#222}
 header{position:sticky;top:0;background:#fff;border-bottom:1px solid #ccc;padding:8px 12px;z-index:2}
 #top{display:flex;gap:12px;align-items:center;flex-wrap:wrap}
 #progress{font-weight:600;min-width:11em}
 #classes{display:flex;gap:6px;flex-wrap:wrap;margin-top:8px}
 button{font:inherit;padding:5px 10px;border:1px solid #999;border-radius:4px;background:#fafafa;cursor:pointer}
 button:hover{background:#e8f0ff} button kbd{color:#666;font-size:11px;margin-right:4px}
 #done{background:#2a7;color:#fff;border-color:#196} #status{color:#a22}
 main{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px;padding:12px}
 .card{background:#fff;border:2px solid #ddd;border-radius:6px;padding:6px;text-align:center;cursor:pointer}
 .card.cur{border-color:#36c;box-shadow:0 0 0 2px #36c}
 .card.done{background:#eefaf0} .card.skip{background:#fff6dd}
 .card img{cursor:zoom-in;width:128px;height:128px;object-fit:contain;image-rendering:pixelated;background:#000}
 .meta{font-size:12px;color:#666} .lab{font-weight:600;min-height:1.2em}
 .zoom{color:#36c;text-decoration:underline;cursor:zoom-in}
 #zoom{display:none;position:fixed;inset:0;background:rgba(0,0,0,.85);z-index:5;align-items:center;justify-content:center;flex-direction:column;color:#fff}
 #zoom img{width:min(80vw,80vh);height:min(80vw,80vh);object-fit:contain;image-rendering:pixelated}
 #search{padding:5px;width:14em}
</style></head><body>
<header>
 <div id="top">
  <span id="progress"></span>
  <button id="undo" title="undo (Ctrl+Z / Backspace)">&#8630; Undo</button>
  <button id="skip" title="skip / unsure (S)">Skip / unsure</button>
  <button id="download" title="save to_annotate.csv">Download to_annotate.csv</button>
  <button id="done" title="save and stop the server">Done</button>
  <input id="search" placeholder="search a class, Enter picks">
  <span id="status"></span>
 </div>
 <div id="classes"></div>
</header>
<main id="grid"></main>
<div id="zoom"><img alt=""><div id="zoomcap"></div></div>
<script>
"use strict";
const D = /*DATA*/null;
const C = D.classes, items = D.items, served = !!D.token;
let labels = D.labels.map(parse);     // class id, -1 unlabeled, -2 skip
let cur = 0, history = [];
function parse(s){ if(s==="") return -1; if(s.toLowerCase()==="skip") return -2;
  const k = C.indexOf(s); return k >= 0 ? k : (/^\d+$/.test(s) && +s < C.length ? +s : -1); }
function cell(c){ return c === -1 ? "" : c === -2 ? "skip" : C[c]; }
const $ = id => document.getElementById(id);
if(!served){
  $("done").style.display = "none";
  try{ const saved = JSON.parse(localStorage.getItem(D.key) || "null");
       if(saved && saved.base === D.base && saved.labels.length === items.length) labels = saved.labels;
  }catch(e){}
}
if(C.length <= 10) $("search").style.display = "none";

function csvText(){
  const q = v => /[",\n]/.test(v) ? '"' + v.replace(/"/g,'""') + '"' : v;
  return D.header.join(",") + "\n" + items.map((it,k) =>
    [String(it.i), q(cell(labels[k])), q(it.p)].join(",")).join("\n") + "\n";
}
function status(msg){ $("status").textContent = msg || ""; }
async function post(path, body){
  const r = await fetch(path, {method:"POST", headers:{"Content-Type":"application/json",
    "X-AS3L-Token":D.token}, body:JSON.stringify(body)});
  const js = await r.json(); if(!r.ok) throw new Error(js.error || r.status); return js;
}
function persist(k){
  if(served) post("/label", {index: items[k].i, label: cell(labels[k])})
    .then(() => status(""), e => status("NOT SAVED: " + e.message));
  else try{ localStorage.setItem(D.key, JSON.stringify({base: D.base, labels})); }catch(e){}
}
function set(k, c){
  if(labels[k] === c) return;
  history.push([k, labels[k]]); labels[k] = c; persist(k);
  for(let j = 1; j <= items.length; j++){ const t = (k + j) % items.length;
    if(labels[t] === -1){ cur = t; break; } }
  render();
}
function undo(){
  const h = history.pop(); if(!h) return;
  labels[h[0]] = h[1]; cur = h[0]; persist(h[0]); render();
}
function render(){
  const n = labels.filter(c => c >= 0).length, s = labels.filter(c => c === -2).length;
  $("progress").textContent = n + " / " + items.length + " labeled" + (s ? ", " + s + " skipped" : "");
  document.querySelectorAll(".card").forEach((el, k) => {
    el.className = "card" + (k === cur ? " cur" : "") + (labels[k] >= 0 ? " done" : labels[k] === -2 ? " skip" : "");
    el.querySelector(".lab").textContent = labels[k] === -2 ? "skip / unsure" : labels[k] >= 0 ? C[labels[k]] : "";
  });
  const cards = document.querySelectorAll(".card"); if(cards[cur]) cards[cur].scrollIntoView({block:"nearest"});
}
function zoom(k){ const z = $("zoom"); z.querySelector("img").src = items[k].src;
  $("zoomcap").textContent = "row " + (k+1) + " · index " + items[k].i + (items[k].p ? " · " + items[k].p : "");
  z.style.display = "flex"; }
$("zoom").onclick = () => { $("zoom").style.display = "none"; };

const grid = $("grid");
items.forEach((it, k) => {
  const el = document.createElement("div"); el.className = "card"; el.dataset.index = it.i;
  el.innerHTML = '<img alt=""><div class="meta"><span></span> <a class="zoom" title="enlarge (Enter)">enlarge</a></div><div class="lab"></div>';
  el.querySelector("img").src = it.src;
  el.querySelector(".meta span").textContent = "#" + (k+1) + " · " + it.i + (it.p ? " · " + it.p : "");
  el.onclick = () => { cur = k; render(); };
  const big = ev => { ev.stopPropagation(); cur = k; render(); zoom(k); };
  el.querySelector("img").onclick = big; el.querySelector(".zoom").onclick = big;
  grid.appendChild(el);
});
const bar = $("classes");
C.forEach((name, c) => {
  const b = document.createElement("button"); b.dataset.cls = c;
  b.innerHTML = (c < 10 ? "<kbd>" + ((c + 1) % 10) + "</kbd>" : "") + "<span></span>";
  b.querySelector("span").textContent = name;
  b.onclick = () => set(cur, c); bar.appendChild(b);
});
$("skip").onclick = () => set(cur, -2);
$("undo").onclick = undo;
$("search").oninput = () => { const q = $("search").value.toLowerCase();
  bar.querySelectorAll("button").forEach(b => { b.style.display = C[b.dataset.cls].toLowerCase().includes(q) ? "" : "none"; }); };
$("search").onkeydown = ev => { if(ev.key === "Enter"){ const b = [...bar.querySelectorAll("button")].find(b => b.style.display !== "none");
  if(b) set(cur, +b.dataset.cls); $("search").value = ""; $("search").oninput(); $("search").blur(); } ev.stopPropagation(); };
$("download").onclick = () => { const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([csvText()], {type:"text/csv"})); a.download = D.csv; a.click(); };
$("done").onclick = () => post("/done", {}).then(js => {
  document.body.innerHTML = "<h2 style='padding:20px'>Saved " + js.labeled + " / " + js.total +
    " labels to " + D.csv + ". You can close this tab.</h2>"; }, e => status("NOT SAVED: " + e.message));
document.addEventListener("keydown", ev => {
  if($("zoom").style.display === "flex"){ $("zoom").style.display = "none"; if(ev.key === "Escape") return; }
  if(/^[0-9]$/.test(ev.key) && !ev.ctrlKey && !ev.metaKey){ const c = (+ev.key + 9) % 10; if(c < C.length) set(cur, c); }
  else if(ev.key === "s" || ev.key === "S") set(cur, -2);
  else if(ev.key === "Backspace" || (ev.key === "z" && (ev.ctrlKey || ev.metaKey))){ ev.preventDefault(); undo(); }
  else if(ev.key === "ArrowRight"){ cur = Math.min(cur + 1, items.length - 1); render(); }
  else if(ev.key === "ArrowLeft"){ cur = Math.max(cur - 1, 0); render(); }
  else if(ev.key === "Enter"){ zoom(cur); }
  else if(ev.key === "/" && C.length > 10){ ev.preventDefault(); $("search").focus(); }
});
cur = Math.max(0, labels.indexOf(-1));
render();
</script></body></html>
"""
