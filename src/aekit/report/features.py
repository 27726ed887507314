"""A static feature browser: for each latent of a sparse autoencoder (an `aekit.Autoencoder`
with a sparse bottleneck and the dictionary body), how often it fires, how strongly, on which
tokens of which contexts, and which output tokens its decoder direction promotes.

One streaming pass over an activation store keeps, per latent, the firing count, the sum and
maximum of its activation and its `top_k` largest activations with their rows (a running
top-k merged batch by batch), so memory is O(n_latents · top_k) whatever the store's size.
Then the page is written: `index.html`, self-contained (the data embedded as JSON, inline CSS
and a little JS that draws a page of latents at a time, sorts and finds; no external assets;
every string escaped, and set as text, never parsed as HTML), and `features.json` beside it
with the same data for other tools.

Figures per latent over the N rows read:
- density = (rows where the latent ≠ 0) / N;
- mean activation = the mean of its nonzero activations (its typical size when it fires);
- top contexts: the rows of its largest activations (ties: the earliest row), each shown as
  the ±`window` tokens around the activating token, which is highlighted with an intensity
  proportional to activation / (the latent's largest activation);
- with an unembedding W_U (vocab, d_out): the logits W_U · W_dec[i] of the latent's decoder
  direction (`model.decoder_directions()[i]`, in the raw output space), whose 10 largest
  tokens it promotes and 10 smallest it suppresses (the direct effect on the output ignoring
  later layers and the final normalisation, the usual "logit lens" reading).
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aekit.errors import AekitError
from aekit.eval.sparse import model_device, sparse_code
from aekit.io import atomic_write_text

PAGE = "index.html"
DATA = "features.json"
LOGIT_TOKENS = 10
"""Tokens listed as promoted and as suppressed per latent."""
SIGNIFICANT = 5
"""Significant digits kept of activations and logits in the browser's data."""
UNEMBED_CHUNK = 256
"""Latents whose logits over the vocabulary are computed at once (bounds a (chunk, vocab))."""


@dataclass
class LatentStats:
    """What one pass over N rows gathered for the m selected latents."""

    latents: torch.Tensor
    """(m,) the latent indices."""
    rows: int
    """N, the rows read."""
    count: torch.Tensor
    """(m,) rows on which each latent is nonzero."""
    total: torch.Tensor
    """(m,) sum of its nonzero activations (float64)."""
    top_values: torch.Tensor
    """(m, top_k) its largest activations, descending; -inf where it fired on fewer rows."""
    top_rows: torch.Tensor
    """(m, top_k) the store rows of those activations; -1 where none."""


def merge_top_k(
    best_values: torch.Tensor,
    best_rows: torch.Tensor,
    slot: torch.Tensor,
    value: torch.Tensor,
    row: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge candidate activations (slot, value, row), one entry each, into each slot's
    running top-k (best_values, best_rows), both (m, k), descending by value.

    All entries are sorted by value (descending) and then, stably, by slot; an entry's rank
    within its slot is its position minus the slot's first position, and ranks below k are
    kept. Stable sorts keep equal values in the order given, kept entries first: ties go to
    the earliest row when candidates come in row order."""
    m, k = best_values.shape
    kept = best_rows >= 0
    slots = torch.arange(m, device=slot.device).unsqueeze(1).expand(m, k)
    slot = torch.cat([slots[kept], slot])
    value = torch.cat([best_values[kept], value])
    row = torch.cat([best_rows[kept], row])
    order = torch.argsort(value, descending=True, stable=True)
    order = order[torch.argsort(slot[order], stable=True)]
    slot, value, row = slot[order], value[order], row[order]
    per_slot = torch.bincount(slot, minlength=m)
    first = torch.cumsum(per_slot, 0) - per_slot
    rank = torch.arange(len(slot), device=slot.device) - first[slot]
    top = rank < k
    values = torch.full_like(best_values, -math.inf)
    rows = torch.full_like(best_rows, -1)
    values[slot[top], rank[top]] = value[top]
    rows[slot[top], rank[top]] = row[top]
    return values, rows


@torch.no_grad()
def collect_latent_stats(
    sae: nn.Module,
    store: Any,
    site: str,
    *,
    latents: torch.Tensor | None = None,
    top_k: int = 10,
    max_rows: int | None = None,
    batch_size: int = 4096,
) -> LatentStats:
    """One pass over `store.read(site, ...)` in row order (see LatentStats)."""
    n_latents = sae.latent_dim
    selected = torch.arange(n_latents) if latents is None else torch.as_tensor(latents).long()
    if selected.ndim == 1:  # repeats dropped, the order kept
        selected = torch.tensor(list(dict.fromkeys(selected.tolist())), dtype=torch.int64)
    if selected.ndim != 1 or len(selected) == 0:
        raise AekitError("latents must be a non-empty list of latent indices")
    if selected.min() < 0 or selected.max() >= n_latents:
        raise AekitError(f"latent indices must lie in [0, {n_latents}): the SAE has that many")
    device = model_device(sae)
    # slot_of[j] = position of latent j among the selected, -1 for latents not shown.
    slot_of = torch.full((n_latents,), -1, dtype=torch.int64, device=device)
    slot_of[selected.to(device)] = torch.arange(len(selected), device=device)
    m = len(selected)
    count = torch.zeros(m, dtype=torch.int64, device=device)
    total = torch.zeros(m, dtype=torch.float64, device=device)
    best_values = torch.full((m, top_k), -math.inf, device=device)
    best_rows = torch.full((m, top_k), -1, dtype=torch.int64, device=device)
    rows = len(store) if max_rows is None else min(max_rows, len(store))
    was_training = sae.training
    sae.eval()
    try:
        for start in range(0, rows, batch_size):
            x = store.read(site, start, min(start + batch_size, rows)).to(device, torch.float32)
            values, indices = sparse_code(sae, x)
            # One (row, latent, value) entry per nonzero activation, in row order.
            r, c = (values != 0).nonzero(as_tuple=True)
            latent = c if indices is None else indices[r, c]
            slot = slot_of[latent]
            shown = slot >= 0
            slot, value, row = slot[shown], values[r, c][shown].float(), r[shown] + start
            count.index_add_(0, slot, torch.ones_like(slot))
            total.index_add_(0, slot, value.double())
            # Only candidates beating their latent's current k-th best can enter its top-k.
            better = value > best_values[slot, -1]
            best_values, best_rows = merge_top_k(
                best_values, best_rows, slot[better], value[better], row[better]
            )
    finally:
        sae.train(was_training)
    return LatentStats(selected, rows, count.cpu(), total.cpu(), best_values.cpu(), best_rows.cpu())


def _short(value: float) -> float:
    """A value to SIGNIFICANT digits: the page shows no more, and the data stays small."""
    return float(f"{value:.{SIGNIFICANT}g}")


def _token_names(ids: set[int], tokenizer: Any) -> dict[int, str]:
    ordered = sorted(ids)
    if tokenizer is None:
        return {i: str(i) for i in ordered}
    names = tokenizer.convert_ids_to_tokens(ordered)
    return {i: str(name) for i, name in zip(ordered, names, strict=True)}


def _contexts(
    store: Any, stats: LatentStats, window: int, pad_id: int | None
) -> dict[int, dict[str, Any]]:
    """Per shown store row: its context, position, and the window of token ids around it
    (padding dropped) with the index of the activating token in it."""
    rows = stats.top_rows[stats.top_rows >= 0].unique()
    if len(rows) == 0:
        return {}
    context, position, token = (t.long() for t in store.token_info(rows))
    contexts = context.unique()
    # A store captured without its contexts file still names each row's own token.
    tokens = store.context_tokens(contexts).long() if getattr(store, "n_contexts", 1) else None
    where = {int(c): i for i, c in enumerate(contexts)}
    out = {}
    info = zip(rows.tolist(), context.tolist(), position.tolist(), token.tolist(), strict=True)
    for r, c, p, t in info:
        if tokens is None:
            out[r] = {"context": c, "position": p, "tokens": [t], "at": 0}
            continue
        line = tokens[where[c]]
        lo, hi = max(0, p - window), min(len(line), p + window + 1)
        ids = line[lo:hi].tolist()
        at = p - lo
        if ids[at] != t:
            raise AekitError(
                f"store row {r}: token {t} is not token {p} of context {c} ({ids[at]}): the "
                "store's contexts do not match its rows"
            )
        # Padding after the text (never the activating token itself) says nothing.
        keep = [j for j, i in enumerate(ids) if i != pad_id or j == at]
        out[r] = {
            "context": c,
            "position": p,
            "tokens": [ids[j] for j in keep],
            "at": keep.index(at),
        }
    return out


def _logit_effects(
    sae: nn.Module, latents: torch.Tensor, unembedding: torch.Tensor
) -> tuple[list[list[tuple[int, float]]], list[list[tuple[int, float]]]]:
    """Per latent, the (token id, logit) of the LOGIT_TOKENS largest and smallest entries of
    unembedding @ W_dec[i], W_dec the decoder directions in the raw output space."""
    W_dec = sae.decoder_directions().detach().float().cpu()
    W_U = torch.as_tensor(unembedding).detach().float().cpu()
    if W_U.ndim != 2 or W_U.shape[1] != W_dec.shape[1]:
        raise AekitError(
            f"unembedding has shape {tuple(W_U.shape)}; it must be (vocab, {W_dec.shape[1]}), "
            "the width of the SAE's decoder directions"
        )
    k = min(LOGIT_TOKENS, W_U.shape[0])
    promoted, suppressed = [], []
    for part in latents.split(UNEMBED_CHUNK):
        logits = W_dec[part] @ W_U.T
        for top, sign, out in ((logits.topk(k), 1, promoted), ((-logits).topk(k), -1, suppressed)):
            for ids, vals in zip(top.indices.tolist(), top.values.tolist(), strict=True):
                out.append([(i, _short(sign * v)) for i, v in zip(ids, vals, strict=True)])
    return promoted, suppressed


def feature_data(
    sae: nn.Module,
    store: Any,
    site: str,
    stats: LatentStats,
    *,
    tokenizer: Any = None,
    unembedding: torch.Tensor | None = None,
    window: int = 8,
) -> dict[str, Any]:
    """The browser's data (what features.json holds): one record per latent, densest first,
    and the names of every token id shown."""
    pad_id = getattr(tokenizer, "pad_token_id", None)
    shown = _contexts(store, stats, window, pad_id)
    effects = _logit_effects(sae, stats.latents, unembedding) if unembedding is not None else None
    token_ids: set[int] = {i for c in shown.values() for i in c["tokens"]}
    records = []
    for s, latent in enumerate(stats.latents.tolist()):
        n_fired = int(stats.count[s])
        top = [
            {"row": r, "activation": _short(v), **shown[r]}
            for v, r in zip(stats.top_values[s].tolist(), stats.top_rows[s].tolist(), strict=True)
            if r >= 0
        ]
        record = {
            "latent": latent,
            "density": n_fired / stats.rows if stats.rows else 0.0,
            "count": n_fired,
            "mean_activation": _short(float(stats.total[s]) / n_fired) if n_fired else None,
            "max_activation": top[0]["activation"] if top else None,
            "contexts": top,
        }
        if effects is not None:
            record["promoted"], record["suppressed"] = effects[0][s], effects[1][s]
            token_ids.update(i for i, _ in record["promoted"] + record["suppressed"])
        records.append(record)
    records.sort(key=lambda r: (-r["density"], r["latent"]))
    return {
        "site": site,
        "rows": stats.rows,
        "n_latents": sae.latent_dim,
        "window": window,
        "latents": records,
        "tokens": {str(i): name for i, name in _token_names(token_ids, tokenizer).items()},
    }


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; padding: 0 1em; max-width: 1400px;
       color: #222; }
table { border-collapse: collapse; width: 100%; }
td, th { border: 1px solid #ccc; padding: 0.3em 0.5em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.bar { background: #eee; width: 8em; height: 0.6em; margin-top: 0.3em; }
.bar div { background: #4a7ab5; height: 100%; }
.ctx { font-family: ui-monospace, monospace; font-size: 0.85em; white-space: pre; margin: 0.1em 0; }
.ctx span { border-right: 1px solid #eee; }
.ctx mark { color: #000; outline: 1px solid #e60; }
.ctx .act { color: #777; margin-right: 0.6em; border: none; }
.tok { font-family: ui-monospace, monospace; font-size: 0.85em; white-space: pre; }
.up { color: #196127; } .down { color: #a11; }
.controls { margin: 1em 0; }
.note { background: #fff6d6; border: 1px solid #cb3; padding: 0.6em 1em; }
"""

SCRIPT = """
'use strict';
// Every string from the data goes in through textContent: nothing is parsed as HTML.
const data = JSON.parse(document.getElementById('features').textContent);
const names = data.tokens;
const rows = document.getElementById('rows');
const size = PAGE_SIZE;
const floor = Math.log10(1 / Math.max(data.rows, 2));
let order = data.latents.slice();
let page = 0;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function fmt(v) {
  return v === null || v === undefined ? '\u2014' : String(Number(Number(v).toPrecision(4)));
}
function context(c, max) {
  const div = el('div', undefined, 'ctx');
  div.title = `row ${c.row}, context ${c.context}, position ${c.position}`;
  div.appendChild(el('span', fmt(c.activation), 'act'));
  c.tokens.forEach((t, j) => {
    const s = el(j === c.at ? 'mark' : 'span', names[t]);
    if (j === c.at) {
      const a = max > 0 ? Math.min(1, Math.max(0.1, c.activation / max)) : 1;
      s.style.background = `rgba(255, 140, 0, ${a.toFixed(2)})`;
      s.title = `activation ${fmt(c.activation)}`;
    }
    div.appendChild(s);
  });
  return div;
}
function tokens(label, pairs, cls) {
  const div = el('div', label + ' ', cls);
  pairs.forEach(([t, v], i) => {
    if (i) div.appendChild(document.createTextNode(', '));
    div.appendChild(el('span', names[t], 'tok'));
    div.appendChild(document.createTextNode(` (${v >= 0 ? '+' : ''}${fmt(v)})`));
  });
  return div;
}
function row(r) {
  const tr = el('tr');
  tr.id = `latent-${r.latent}`;
  tr.appendChild(el('td', r.latent, 'num'));
  const d = el('td', undefined, 'num');
  d.append(el('div', fmt(r.density)), el('div', `${r.count} rows`));
  const bar = el('div', undefined, 'bar');
  const fill = el('div');
  fill.style.width = `${r.density > 0 ? 100 * (1 - Math.log10(r.density) / floor) : 0}%`;
  bar.appendChild(fill);
  d.appendChild(bar);
  tr.append(d, el('td', fmt(r.mean_activation), 'num'), el('td', fmt(r.max_activation), 'num'));
  const ctx = el('td', r.contexts.length ? undefined : 'never fired on these rows');
  r.contexts.forEach((c) => ctx.appendChild(context(c, r.max_activation)));
  const out = el('td');
  if (r.promoted) {
    out.append(tokens('promotes', r.promoted, 'up'), tokens('suppresses', r.suppressed, 'down'));
  }
  tr.append(ctx, out);
  return tr;
}
function show() {
  const pages = Math.max(1, Math.ceil(order.length / size));
  page = Math.min(Math.max(page, 0), pages - 1);
  rows.replaceChildren(...order.slice(page * size, (page + 1) * size).map(row));
  document.getElementById('page').textContent = `page ${page + 1} of ${pages}`;
}
function sortBy(value) {
  const [key, dir] = value.split(':');
  const sign = dir === 'desc' ? -1 : 1;
  const num = (r) => r[key] === null ? -Infinity : r[key];
  order.sort((a, b) => sign * (num(a) - num(b)) || a.latent - b.latent);
  page = 0;
  show();
}
function find(value) {
  const at = order.findIndex((r) => r.latent === Number(value));
  if (at < 0) return;
  page = Math.floor(at / size);
  show();
  document.getElementById(`latent-${value}`).scrollIntoView();
}
document.getElementById('sort').addEventListener('change', (e) => sortBy(e.target.value));
document.getElementById('prev').addEventListener('click', () => { page -= 1; show(); });
document.getElementById('next').addEventListener('click', () => { page += 1; show(); });
document.getElementById('find').addEventListener('change', (e) => find(e.target.value));
show();
"""


def script_json(obj: Any) -> str:
    """JSON that is safe as the text of a <script> element: '<', '>' and '&' are written as
    JSON escapes, so no token string ("</script>", "<!--") can end or alter the element."""
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(data: dict[str, Any], page_size: int = 50) -> str:
    """The browser page of `feature_data`'s output: the data embedded as JSON, rendered a
    page of latents at a time by the inline script (a static table of every latent would
    hold millions of elements for a large SAE)."""
    fired = sum(1 for r in data["latents"] if r["count"])
    title = f"SAE features — {data['site']}"
    summary = (
        f"{len(data['latents'])} of the SAE's {data['n_latents']} latents shown, "
        f"{fired} of them fired on the {data['rows']:,} rows read. Density: the fraction of rows "
        "on which a latent is nonzero (bar: log scale from one row to all); mean activation: "
        "the mean of its nonzero activations; contexts: its largest activations, "
        f"±{data['window']} tokens around the highlighted activating token (intensity ∝ "
        "activation / max activation); output tokens: the largest and smallest logits of the "
        "unembedding times the latent's decoder direction."
    )
    header = "".join(
        f"<th>{h}</th>"
        for h in (
            "latent",
            "density",
            "mean act.",
            "max act.",
            "top-activating contexts",
            "output tokens (W_U · W_dec)",
        )
    )
    controls = (
        'sort by <select id="sort">'
        '<option value="density:desc">density, high first</option>'
        '<option value="density:asc">density, low first</option>'
        '<option value="max_activation:desc">max activation, high first</option>'
        '<option value="latent:asc">latent index</option></select> '
        '<button id="prev">previous</button> <span id="page"></span> '
        '<button id="next">next</button> latent <input id="find" type="number" min="0">'
    )
    return "\n".join(
        [
            "<!DOCTYPE html>",
            f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
            f"<style>{CSS}</style></head><body>",
            f"<h1>{html.escape(title)}</h1>",
            f'<p class="note">{html.escape(summary)}</p>',
            f'<div class="controls">{controls}</div>',
            "<noscript><p class=note>This page draws its table with JavaScript; the same data "
            f"is in {DATA} beside it.</p></noscript>",
            f'<table><thead><tr>{header}</tr></thead><tbody id="rows"></tbody></table>',
            f'<script type="application/json" id="features">{script_json(data)}</script>',
            f"<script>{SCRIPT.replace('PAGE_SIZE', str(int(page_size)))}</script>",
            "</body></html>\n",
        ]
    )


def build_feature_browser(
    out_dir: str | Path,
    sae: nn.Module,
    store: Any,
    site: str,
    *,
    tokenizer: Any = None,
    unembedding: torch.Tensor | None = None,
    latents: torch.Tensor | list[int] | None = None,
    top_k: int = 10,
    window: int = 8,
    page_size: int = 50,
    max_rows: int | None = None,
    batch_size: int = 4096,
) -> Path:
    """Write the feature browser of `sae` over the rows of `site` in `store` (an
    ActivationStore: `read`, `token_info`, `context_tokens`) to `out_dir/index.html`, with
    its data in `out_dir/features.json`; return the page's path.

    `tokenizer` names the tokens (convert_ids_to_tokens; token ids otherwise);
    `unembedding` (vocab, d_out), e.g. the model's output embedding weight, adds the tokens
    each latent's decoder direction promotes and suppresses; `latents` restricts the page to
    those latent indices (default: all, which for a large SAE makes a page of many MB);
    `max_rows` reads only the first rows of the store.
    """
    if top_k < 1 or window < 0 or page_size < 1:
        raise AekitError(
            f"top_k and page_size must be at least 1 and window at least 0 (got top_k={top_k}, "
            f"window={window}, page_size={page_size})"
        )
    if site not in getattr(store, "sites", [site]):
        raise AekitError(f"the store has no site {site!r}; its sites are {', '.join(store.sites)}")
    stats = collect_latent_stats(
        sae, store, site, latents=latents, top_k=top_k, max_rows=max_rows, batch_size=batch_size
    )
    data = feature_data(
        sae, store, site, stats, tokenizer=tokenizer, unembedding=unembedding, window=window
    )
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / DATA, json.dumps(data, separators=(",", ":"), allow_nan=False))
    page = out_dir / PAGE
    atomic_write_text(page, render_page(data, page_size))
    return page
