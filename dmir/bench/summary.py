"""Summaries of a ``dmir bench`` run: means per (dataset, task, method) → ``summary.csv`` and
``summary.md`` (our numbers next to the paper's), FID/KID, and plots (PSNR vs NFE, comparison
grids).

Works from the files of an output folder only (``plan.json``, the merged ``results.jsonl``,
the saved PNGs), so ``dmir bench --out DIR --summarize`` rebuilds everything after shards ran
separately. Every file is written atomically.
"""
from __future__ import annotations

import csv
import glob
import io
import math
import os

from .. import io as dio
from .. import metrics
from ..errors import DmirError
from . import results as res
from .results import PLAN_FILE, image_path, safe_name

__all__ = ["write", "aggregate", "METRIC_ORDER", "METRIC_TITLES", "TOLERANCES", "compare",
           "paper_text"]

METRIC_ORDER = ["psnr", "ssim", "ssim_uniform", "lpips_alex", "lpips_vgg", "lpips_vgg_01",
                "cons", "cons_8bit", "fid", "kid", "nfe", "time"]
METRIC_TITLES = {"psnr": "PSNR ↑", "ssim": "SSIM ↑", "ssim_uniform": "SSIM 7×7 ↑",
                 "lpips_alex": "LPIPS-alex ↓", "lpips_vgg": "LPIPS-vgg ↓",
                 "lpips_vgg_01": "LPIPS-vgg [0,1] ↓", "cons": "Cons ↓",
                 "cons_8bit": "Cons 8-bit ↓", "fid": "FID ↓", "kid": "KID ↓", "nfe": "NFE",
                 "time": "s / image"}
_FMT = {"psnr": "{:.2f}", "ssim": "{:.4f}", "ssim_uniform": "{:.4f}", "lpips_alex": "{:.4f}",
        "lpips_vgg": "{:.4f}", "lpips_vgg_01": "{:.4f}", "cons": "{:.4g}", "cons_8bit": "{:.4g}",
        "fid": "{:.2f}", "kid": "{:.4f}", "nfe": "{:.4g}", "time": "{:.3g}"}
#: when ours differs from the paper's number by more than this, the cell is flagged (⚠):
#: (absolute, relative) — flagged when |Δ| > max(absolute, relative·|paper|). PSNR 0.3 dB;
#: SSIM 0.01 and LPIPS 0.02 (about what 0.3 dB moves them on these tables); Cons and FID 10 %
#: of the paper's value (their scale depends on the image set; FID on small sets is noisy)
#: with a floor (Cons 1, FID 1). NFE is flagged when it differs from the paper's count at all
#: (a different count is a different protocol or unit: DeqIR's published 15 counts Anderson
#: iterations of the batched map, dmir's nfe single-image evaluations, 25 × 15 = 375); time is
#: shown with Δ but never flagged.
TOLERANCES = {"psnr": (0.3, 0.0), "ssim": (0.01, 0.0), "ssim_uniform": (0.01, 0.0),
              "lpips_alex": (0.02, 0.0), "lpips_vgg": (0.02, 0.0), "lpips_vgg_01": (0.02, 0.0),
              "cons": (1.0, 0.1), "cons_8bit": (1.0, 0.1), "fid": (1.0, 0.1),
              "kid": (0.005, 0.1), "nfe": (0.5, 0.0)}
FLAG = "⚠"


def compare(metric: str, ours, paper):
    """(Δ = ours − paper, flagged) for one cell; (None, False) when either is missing."""
    if ours is None or paper is None:
        return None, False
    try:
        d = float(ours) - float(paper)
    except (TypeError, ValueError):
        return None, False
    if not math.isfinite(d):
        return d, metric in TOLERANCES
    tol = TOLERANCES.get(metric)
    if tol is None:
        return d, False
    return d, abs(d) > max(tol[0], tol[1] * abs(float(paper)))


def _fmt_delta(metric, d):
    if d is None:
        return "—"
    if not math.isfinite(d):
        return "inf"
    return ("+" if d >= 0 else "−") + _fmt(metric, abs(d))


def paper_text(plan: dict, row: dict, metrics=("psnr",)) -> str:
    """"PSNR 27.41 (paper 27.45, Δ −0.04)"-style text of a summary row (for the console)."""
    parts = []
    for m in metrics:
        ours = row.get(m)
        pv = _paper_value(plan, row.get("paper"), m)
        if ours is None and pv is None:
            continue
        t = f"{METRIC_TITLES.get(m, m).rstrip(' ↑↓')} {_fmt(m, ours)}"
        if pv is not None:
            d, bad = compare(m, ours, pv)
            t += f" (paper {_fmt(m, pv)}, Δ {_fmt_delta(m, d)}{' ' + FLAG if bad else ''})"
        parts.append(t)
    return ", ".join(parts)


def _fmt(metric, v):
    if v is None:
        return "—"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return _FMT.get(metric, "{:.4g}").format(v)


def _log(log, msg):
    if log:
        log(msg)


def _paper_value(plan, values, metric):
    if values is None:
        return None
    if metric in values:
        return values[metric]
    lp = [m for m in plan["preset"]["metrics"] if m.startswith("lpips")]
    if "lpips" in values and lp and metric == lp[0]:
        return values["lpips"]      # the paper's one LPIPS column is the preset's first variant
    return None


def aggregate(plan: dict, rows: list) -> list[dict]:
    """One summary row per (dataset, task, method) of the plan, in plan order: status, n of N,
    means of the per-image metrics, the paper's values. ``n_<metric>`` is the number of images
    a metric's mean is over: a metric measured on only some of the n images (an LPIPS network
    needing ≥ 32×32, results from a run without it) is reported with its own count, never
    under the row's n."""
    paper = {(p["dataset"], p["task"], p["method"]): p["values"]
             for p in plan["preset"].get("paper", [])}
    protocol_n = plan["preset"].get("protocol_limit") or {}
    by_key: dict = {}
    for r in rows:
        by_key.setdefault((r.get("dataset"), r.get("task"), r.get("method")), []).append(r)
    out = []
    for d in plan["datasets"]:
        for t in plan["tasks"]:
            for m in plan["methods"]:
                key = (d["name"], t["name"], m["name"])
                rs = by_key.get(key, [])
                ok = [r for r in rs if "error" not in r]
                errs = [r for r in rs if "error" in r]
                row = {"dataset": d["name"], "task": t["name"], "method": m["name"],
                       "solver": m["method"], "model": None if m["method"] == "apy"
                       else d.get("model"), "n": len(ok), "n_expected": d.get("n") or 0,
                       "errors": len(errs), "paper": paper.get(key)}
                if d.get("missing"):
                    row["status"] = d["missing"]
                elif m.get("status"):
                    row["status"] = m["status"]
                elif errs and not ok:
                    row["status"] = "error: " + errs[0]["error"]
                elif row["n"] < row["n_expected"]:
                    row["status"] = f"partial ({row['n']} of {row['n_expected']} images)"
                elif protocol_n.get(d["name"]) and row["n"] < protocol_n[d["name"]]:
                    row["status"] = (f"partial ({row['n']} of the protocol's "
                                     f"{protocol_n[d['name']]} images)")
                else:
                    row["status"] = "ok"
                row["protocol_n"] = protocol_n.get(d["name"])
                for k in METRIC_ORDER:
                    vals = [r[k] for r in ok if isinstance(r.get(k), (int, float))
                            and not isinstance(r.get(k), bool)]
                    row[k] = sum(vals) / len(vals) if vals else None
                    row["n_" + k] = len(vals)     # images this mean is over (may be < n)
                out.append(row)
    return out


# ----------------------------------------------------------------------------- FID
def _fid(out_dir, plan, summary, device, log):
    """Fill row["fid"] / row["kid"] from the saved PNGs and the ground-truth datasets."""
    from ..data import ImageDataset
    from .fid import compare, features

    try:
        net = metrics.FIDInception(device=device)
    except metrics.WeightsNotSetUpError as e:
        return [f"FID/KID not computed: {' '.join(str(e).split())}"]
    with_kid = bool(plan["run"].get("kid"))
    notes, real = [], {}
    rows, _ = res.read_jsonl(os.path.join(out_dir, res.RESULTS))
    ids: dict = {}
    for r in rows:
        if "error" not in r:
            ids.setdefault((r["dataset"], r["task"], r["method"]), []).append(r["image"])
    dspecs = {d["name"]: d for d in plan["datasets"]}
    for row in summary:
        key = (row["dataset"], row["task"], row["method"])
        d = dspecs[row["dataset"]]
        if d.get("missing") or not ids.get(key):
            continue
        if row["dataset"] not in real:
            ds = ImageDataset(d["path"], size=d["size"], crop=d.get("crop", "center"),
                              list_file=d.get("list_file"), limit=d.get("limit"),
                              channels=d.get("channels", 3), name=d["name"])
            _log(log, f"FID: ground-truth features of {d['name']} ({len(ds)} images)")
            real[row["dataset"]] = features(net, (metrics.to_unit(x) for x in ds), with_kid)
        paths = []
        for img in ids[key]:
            p = image_path(out_dir, *key, img)
            if os.path.exists(p):
                paths.append(p)
        try:
            st = features(net, (metrics.to_unit(dio.read_image(p)) for p in paths), with_kid)
            v = compare(real[row["dataset"]], st, with_kid)
        except DmirError as e:
            notes.append(f"FID of {'/'.join(key)} not computed: {' '.join(str(e).split())}")
            continue
        row["fid"] = v["fid"]
        row["fid_n"] = v["n2"]
        if with_kid:
            row["kid"] = v["kid"]
        if v["n2"] < row["n"]:
            notes.append(f"FID of {'/'.join(key)} uses the {v['n2']} of {row['n']} restored "
                         f"images saved as PNG (the others ran without --save-images/--fid)")
    return notes


# ----------------------------------------------------------------------------- tables
def _columns(plan, summary):
    wanted = set(plan["preset"]["metrics"]) | {"psnr", "ssim", "nfe", "time"}
    if plan["run"].get("fid"):
        wanted |= {"fid", "kid"} if plan["run"].get("kid") else {"fid"}
    has_paper = {k for r in summary if r["paper"] for k in METRIC_ORDER
                 if _paper_value(plan, r["paper"], k) is not None}
    return [k for k in METRIC_ORDER if k in wanted or k in has_paper]


def _csv(plan, summary) -> str:
    buf = io.StringIO()
    cols = ["dataset", "task", "method", "solver", "model", "status", "n", "n_expected",
            "errors"] + METRIC_ORDER + ["paper_" + k for k in METRIC_ORDER] \
        + ["delta_" + k for k in METRIC_ORDER] + ["flagged"] \
        + ["n_" + k for k in METRIC_ORDER]
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in summary:
        vals = [r.get(c) for c in cols[:9 + len(METRIC_ORDER)]]
        pvs = [_paper_value(plan, r["paper"], k) for k in METRIC_ORDER]
        cmp = [compare(k, r.get(k), pv) for k, pv in zip(METRIC_ORDER, pvs)]
        vals += pvs + [d for d, _ in cmp]
        vals.append(" ".join(k for k, (_, bad) in zip(METRIC_ORDER, cmp) if bad))
        vals += [r.get("n_" + k) for k in METRIC_ORDER]    # images each mean is over
        w.writerow(["" if v is None else (repr(v) if isinstance(v, float) else v)
                    for v in vals])
    return buf.getvalue()


def _md(plan, summary, notes, plots) -> str:
    p = plan["preset"]
    lines = [f"# {p.get('title') or p['name']}", ""]
    if p.get("source"):
        lines += [f"Source: {p['source']}", ""]
    if p.get("protocol"):
        lines += ["Protocol: " + " ".join(p["protocol"].split()), ""]
    run = plan["run"]
    models = ", ".join(f"{d['name']}: {d.get('model')}" for d in plan["datasets"])
    lines += [f"Run: seed {run['seed']}, steps {run['steps'] or 'per method'}, models "
              f"({models}). Values: mean over images. Where the paper reports a number, the "
              f"cell's 'paper' and 'Δ' (ours − paper) columns follow ours; {FLAG} marks |Δ| "
              f"above the metric's tolerance (PSNR 0.3 dB, SSIM 0.01, LPIPS 0.02, Cons/FID "
              f"10 %; NFE whenever it differs, time never). The paper's numbers were "
              f"measured with its checkpoints and full test sets — comparable only with the "
              f"same model and images.", ""]
    partial = [f"{d['name']}: {d.get('n') or 0} of the protocol's "
               f"{(p.get('protocol_limit') or {}).get(d['name'])} images"
               for d in plan["datasets"] if not d.get("missing")
               and (p.get("protocol_limit") or {}).get(d["name"])
               and (d.get("n") or 0) < p["protocol_limit"][d["name"]]]
    if partial:
        lines += [f"**{FLAG} Partial run** ({'; '.join(partial)}; --limit or a smaller "
                  f"folder): the averages are not comparable with the paper's.", ""]
    cols = _columns(plan, summary)
    tasks = {t["name"]: t for t in plan["tasks"]}
    partial_metric = False
    for d in plan["datasets"]:
        if d.get("missing"):
            lines += [f"## {d['name']}", "", f"*{d['missing']}*", ""]
            continue
        for t in plan["tasks"]:
            tt = tasks[t["name"]]
            params = ", ".join(f"{k}={v}" for k, v in tt.get("params", {}).items())
            lines += [f"## {d['name']} · {t['name']}", "",
                      f"`{tt['operator']}`" + (f" ({params})" if params else "")
                      + f", σ_y = {tt.get('sigma_y', 0):g} ([0, 1] pixel units)"
                      + (f". {tt['note']}" if tt.get("note") else ""), ""]
            rows = [r for r in summary
                    if r["dataset"] == d["name"] and r["task"] == t["name"]]
            with_paper = {c for c in cols for r in rows
                          if _paper_value(plan, r["paper"], c) is not None}
            head = ["method", "images"]
            for c in cols:
                head += [METRIC_TITLES[c]] + (["paper", "Δ"] if c in with_paper else [])
            lines += ["| " + " | ".join(head) + " |",
                      "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
            for r in rows:
                n = f"{r['n']}/{r['n_expected']}"
                if r["status"] not in ("ok",) and not r["status"].startswith("partial"):
                    n = r["status"].replace("|", "/")
                cells = []
                for c in cols:
                    ours = _fmt(c, r.get(c))
                    k = r.get("n_" + c)
                    if r.get(c) is not None and k is not None and k < r["n"]:
                        ours += f" [{k}/{r['n']}]"       # a mean over fewer images than n
                        partial_metric = True
                    cells.append(ours)
                    if c in with_paper:
                        pv = _paper_value(plan, r["paper"], c)
                        dlt, bad = compare(c, r.get(c), pv)
                        cells += [_fmt(c, pv) if pv is not None else "",
                                  _fmt_delta(c, dlt) + (f" {FLAG}" if bad else "")
                                  if dlt is not None else ""]
                lines.append(f"| {r['method']} | {n} | " + " | ".join(cells) + " |")
            lines.append("")
            for kind in ("psnr_nfe", "grid"):
                f = plots.get((kind, d["name"], t["name"]))
                if f:
                    lines += [f"![{kind}]({f})", ""]
    if partial_metric:
        notes = list(notes) + ["A value marked [k/n] is the mean over the k of the row's n "
                               "images on which that metric was measured."]
    if notes:
        lines += ["## Notes", ""] + [f"* {n}" for n in notes] + [""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- plots
def _plots(out_dir, plan, summary, log) -> dict:
    from ..plot import image_grid, line_plot

    made = {}
    grid_n = int(plan["run"].get("grid", 4))
    for d in plan["datasets"]:
        if d.get("missing"):
            continue
        for t in plan["tasks"]:
            rows = [r for r in summary if r["dataset"] == d["name"] and r["task"] == t["name"]]
            series = {r["method"]: [(r["nfe"], r["psnr"])] for r in rows
                      if r["psnr"] is not None and r["nfe"] is not None}
            tag = f"{safe_name(d['name'])}_{safe_name(t['name'])}"
            if series:
                rel = f"plots/psnr_nfe_{tag}.png"
                line_plot(series, os.path.join(out_dir, rel), xlabel="NFE per image",
                          ylabel="PSNR [dB]", title=f"{d['name']} / {t['name']}", markers=True)
                made[("psnr_nfe", d["name"], t["name"])] = rel
            gdirs = sorted(glob.glob(os.path.join(glob.escape(out_dir), "grid",
                                                  safe_name(d["name"]), safe_name(t["name"]),
                                                  "*")))[:grid_n]
            if not gdirs or grid_n == 0:
                continue
            methods = [m for m in plan["methods"] if m["method"] != "apy" and not m.get("status")]
            cols = ([("input.png", "input y"), ("apy.png", "A+y")]
                    + [(f"m_{safe_name(m['name'])}.png", m["name"]) for m in methods]
                    + [("gt.png", "ground truth")])
            grid = []
            for g in gdirs:
                row = []
                for f, _ in cols:
                    p = os.path.join(g, f)
                    row.append(metrics.to_unit(dio.read_image(p))[0] if os.path.exists(p)
                               else None)
                grid.append(row)
            rel = f"plots/grid_{tag}.png"
            image_grid(grid, os.path.join(out_dir, rel), col_titles=[c for _, c in cols],
                       row_titles=[os.path.basename(g).split("_", 1)[-1] for g in gdirs])
            made[("grid", d["name"], t["name"])] = rel
    return made


# ----------------------------------------------------------------------------- entry
def write(out_dir, plan: dict, rows: list, log=None, device=None) -> str:
    """Write summary.csv, summary.md and the plots for ``rows`` (the merged results) under
    ``out_dir``; returns the path of summary.md."""
    summary = aggregate(plan, rows)
    notes = []
    wanted = plan["preset"]["metrics"]
    from ..metrics import weights
    st = weights.status()
    for m in ("lpips_alex", "lpips_vgg", "lpips_vgg_01"):
        if m in wanted and all(r.get(m) is None for r in summary if r["n"]):
            net = "lpips-alex" if m == "lpips_alex" else "lpips-vgg"
            why = ("its weights are not set up: run `dmir metrics setup`"
                   if not st.get(net, {}).get("ok") else "no image large enough (≥ 32×32)")
            notes.append(f"{m} not measured: {why}")
    if plan["run"].get("fid"):
        notes += _fid(out_dir, plan, summary, device, log)
    elif "fid" in wanted or "kid" in wanted:
        notes.append("FID/KID not computed: run with --fid (restored images are saved and "
                     "compared with the ground-truth set)")
    for r in summary:
        if r["status"].startswith("missing") and r["dataset"] == summary[0]["dataset"] \
                and r["task"] == summary[0]["task"]:
            notes.append(f"{r['method']}: {r['status']}")
    plots = _plots(out_dir, plan, summary, log)
    res.atomic_write(os.path.join(out_dir, "summary.csv"), _csv(plan, summary))
    path = os.path.join(out_dir, "summary.md")
    res.atomic_write(path, _md(plan, summary, notes, plots))
    return path


def load_plan(out_dir) -> dict:
    import json
    p = os.path.join(out_dir, PLAN_FILE)
    if not os.path.exists(p):
        raise DmirError(f"'{out_dir}' holds no {PLAN_FILE}: it is not a dmir bench output folder")
    with open(p, encoding="utf-8") as f:
        return json.load(f)
