"""The report of a run: medians over its repeats, issue 26's targets, the small per-CPU summary
kept in git (``benchmarks/summaries/``) and the CPU model's section of ``BENCHMARKS.md``.

Ratios are jaxrnn / peer tokens/s taken within one repeat (the two libraries timed minutes
apart, not hours), and the median over the repeats is reported; so are jaxrnn's per-call spread
(interquartile range over median), its contended / quiet throughput and its share of the matmul
ceiling (measured by the same jaxrnn worker). Each peer row's solo check compares its
in-harness time (median over the repeats) with a run of the same step alone in a fresh process.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

from benchmarks import mdblocks

PEERS = ("flax", "torch", "equinox", "keras")
# jaxrnn's own variants a full run times (libworker.JAXRNN_LIBS): shown as jaxrnn / variant
VARIANTS = {"jaxrnn-plain-scan": "fused path off", "jaxrnn-xla-fused": "kernels off"}
PEER_TITLES = {"flax": "Flax", "torch": "PyTorch", "equinox": "Equinox", "keras": "Keras"}
# issue 26's targets
QUIET_VS_FLAX = {"A": 1.5, "B": 1.5, "C": 1.2}
LSTM_VS_TORCH = 1.0
BUSY_VS_FLAX = 1.2
BUSY_OF_QUIET = 0.5
SPREAD_MAX = 0.10
SOLO_WITHIN = 0.10
CEILING_TRAIN_A = 0.70
MAX_SECTION_LINES = 150


def base_config(name: str) -> str:
    """A smoke run's ``smoke-A`` is judged as ``A`` (plumbing only: it measures nothing)."""
    return name[len("smoke-"):] if name.startswith("smoke-") else name


def _median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def _config_sections(run):
    return [s for s in run["sections"] if s["spec"]["kind"] == "config"]


def _collect(run) -> tuple[dict, dict]:
    """Per-repeat figures: ``jax[(label, cfg, mode, cell)][contention][repeat]`` = {tps,
    spread, frac, peers: {lib: tps}} and ``peer[(label, cfg, mode, family, lib)][contention]``
    = [record, ...] over the repeats."""
    jax, peer, variants = {}, {}, {}
    for s in _config_sections(run):
        rep = s["spec"].get("repeat", 0)
        label = s.get("label") or s.get("allocator", "default")
        ceils = s.get("ceiling_flops") or []
        ceil = statistics.median(ceils) if ceils else None
        recs = s["records"]
        for r in recs:
            cond = r.get("contention", "quiet")
            cfg = r["config"]["name"]
            if r["lib"] in PEERS:
                key = (label, cfg, r["mode"], r["peer_family"], r["lib"])
                peer.setdefault(key, {}).setdefault(cond, []).append(r)
                continue
            if r["lib"] in VARIANTS:
                variants.setdefault((label, cfg, r["mode"], r["cell"], cond, rep), {})[
                    r["lib"]] = r["tokens_per_s"]
                continue
            if r["lib"] != "jaxrnn":
                continue
            peers = {p["lib"]: p["tokens_per_s"] for p in recs
                     if p["lib"] in PEERS and p["config"]["name"] == cfg
                     and p["mode"] == r["mode"] and p.get("contention", "quiet") == cond
                     and r.get("peer_family") and p["peer_family"] == r["peer_family"]}
            frac = (r["flops"] / r["median_s"] / ceil) if ceil and r.get("flops") else None
            jax.setdefault((label, cfg, r["mode"], r["cell"]), {"kernel": r.get("kernel", True),
                                                                "family": r.get("peer_family")}
                           ).setdefault(cond, {})[rep] = {
                "tps": r["tokens_per_s"], "spread": r["spread"], "frac": frac, "peers": peers}
    for (label, cfg, mode, cell, cond, rep), v in variants.items():
        entry = jax.get((label, cfg, mode, cell), {}).get(cond, {}).get(rep)
        if entry is not None:
            entry["variants"] = v
    return jax, peer


def _rows(jax) -> list[dict]:
    rows = []
    for (label, cfg, mode, cell), d in jax.items():
        q, b = d.get("quiet", {}), d.get("busy", {})
        row = {"setting": label, "config": cfg, "mode": mode, "cell": cell,
               "kernel": d["kernel"], "peer_family": d["family"], "repeats": len(q),
               "busy_repeats": len(b),
               "tokens_per_s": _median([v["tps"] for v in q.values()]),
               "spread": _median([v["spread"] for v in q.values()]),
               "ceiling_share": _median([v["frac"] for v in q.values()]),
               "busy_tokens_per_s": _median([v["tps"] for v in b.values()]),
               "busy_over_quiet": _median([b[r]["tps"] / q[r]["tps"] for r in b if r in q]),
               "vs": {}, "busy_vs": {}}
        for lib in PEERS:
            qv = [v["tps"] / v["peers"][lib] for v in q.values() if lib in v["peers"]]
            bv = [v["tps"] / v["peers"][lib] for v in b.values() if lib in v["peers"]]
            if qv:
                row["vs"][lib] = _median(qv)
            if bv:
                row["busy_vs"][lib] = _median(bv)
        for lib in VARIANTS:
            vv = [v["tps"] / v["variants"][lib] for v in q.values() if lib in v.get("variants", {})]
            if vv:
                row.setdefault("vs_variant", {})[lib] = _median(vv)
        rows.append(row)
    return rows


def _peer_rows(peer, solo) -> list[dict]:
    solo_by = {}
    for r in solo:
        key = (r.get("label", "default"), r["config"]["name"], r["mode"], r["peer_family"],
               r["lib"])
        solo_by.setdefault(key, []).append(r["median_s"])
    out = []
    for (label, cfg, mode, fam, lib), d in peer.items():
        q, b = d.get("quiet", []), d.get("busy", [])
        med = _median([r["median_s"] for r in q])
        row = {"setting": label, "config": cfg, "mode": mode, "family": fam, "lib": lib,
               "repeats": len(q), "median_s": med,
               "tokens_per_s": _median([r["tokens_per_s"] for r in q]),
               "spread": _median([r["spread"] for r in q]),
               "busy_tokens_per_s": _median([r["tokens_per_s"] for r in b])}
        s = solo_by.get((label, cfg, mode, fam, lib))
        if s and med:
            row["solo_s"] = _median(s)
            row["harness_over_solo"] = med / row["solo_s"]  # > 1: slower in the harness
        out.append(row)
    return out


def _judge(name, items, threshold, *, at_most=False, fmt="x"):
    """One target over ``items`` = [(row name, value)]: met when every value meets it; the
    worst value and the misses are kept."""
    items = [(n, v) for n, v in items if v is not None]
    if not items:
        return {"target": name, "rows": 0, "met_rows": 0, "met": None, "worst": None,
                "misses": [], "threshold": threshold, "unit": fmt}
    ok = (lambda v: v <= threshold) if at_most else (lambda v: v >= threshold)
    worst = (max if at_most else min)(items, key=lambda nv: nv[1])
    misses = [(n, v) for n, v in items if not ok(v)]
    return {"target": name, "rows": len(items), "met_rows": len(items) - len(misses),
            "met": not misses, "worst": list(worst), "misses": [list(m) for m in misses],
            "threshold": threshold, "unit": fmt}


def targets(rows, peer_rows) -> list[dict]:
    """Issue 26's targets, judged on the medians of the repeats, per setting."""
    out = []
    for label in dict.fromkeys(r["setting"] for r in rows):
        R = [r for r in rows if r["setting"] == label]
        pre = "" if label == "default" else f"[{label}] "
        name = lambda r: f"{r['cell']} {base_config(r['config'])} {r['mode']}"  # noqa: E731
        kern = [r for r in R if r["kernel"]]
        for cfgs, lim in (("AB", QUIET_VS_FLAX["A"]), ("C", QUIET_VS_FLAX["C"])):
            out.append(_judge(f"{pre}quiet, every kernel cell >= {lim}x Flax at "
                              f"{' and '.join(cfgs)}",
                              [(name(r), r["vs"].get("flax")) for r in kern
                               if base_config(r["config"]) in cfgs], lim))
        out.append(_judge(f"{pre}quiet, LSTM >= {LSTM_VS_TORCH}x PyTorch at A, B and C",
                          [(name(r), r["vs"].get("torch")) for r in R if r["cell"] == "lstm"
                           and base_config(r["config"]) in "ABC"], LSTM_VS_TORCH))
        out.append(_judge(f"{pre}one busy process, every kernel cell >= {BUSY_VS_FLAX}x Flax",
                          [(name(r), r["busy_vs"].get("flax")) for r in kern], BUSY_VS_FLAX))
        out.append(_judge(f"{pre}one busy process, every kernel cell >= "
                          f"{100 * BUSY_OF_QUIET:.0f}% of its quiet throughput",
                          [(name(r), r["busy_over_quiet"]) for r in kern], BUSY_OF_QUIET,
                          fmt="%"))
        out.append(_judge(f"{pre}quiet per-call spread (IQR / median) <= "
                          f"{100 * SPREAD_MAX:.0f}%, every kernel cell",
                          [(name(r), r["spread"]) for r in kern], SPREAD_MAX, at_most=True,
                          fmt="%"))
        out.append(_judge(f"{pre}LSTM and GRU training at A >= {100 * CEILING_TRAIN_A:.0f}% of "
                          "the matmul ceiling",
                          [(name(r), r["ceiling_share"]) for r in R if r["cell"] in
                           ("lstm", "gru") and base_config(r["config"]) == "A"
                           and r["mode"] == "train"], CEILING_TRAIN_A, fmt="%"))
        P = [p for p in peer_rows if p["setting"] == label]
        out.append(_judge(f"{pre}peers' in-harness time within {100 * SOLO_WITHIN:.0f}% of "
                          "their solo time",
                          [(f"{PEER_TITLES[p['lib']]} {p['family']} {base_config(p['config'])} "
                            f"{p['mode']}", abs(p["harness_over_solo"] - 1))
                           for p in P if "harness_over_solo" in p], SOLO_WITHIN, at_most=True,
                          fmt="%"))
    return out


def cpu_name(machine: dict) -> str:
    """The CPU model as reports name it: its model name and, where known, family and model
    (one model name has stood for several CPUs on this machine class)."""
    fms = (machine.get("cpu_family_model_stepping") or "").split("/")
    name = machine.get("cpu") or "unknown CPU"
    if len(fms) >= 2 and "?" not in fms[:2]:
        name += f" (family {fms[0]} model {fms[1]})"
    return name


def summarise_run(run) -> dict:
    """The machine-readable summary of a run (no per-call times)."""
    jax, peer = _collect(run)
    rows = _rows(jax)
    prow = _peer_rows(peer, run.get("solo") or [])
    ceils = [c for s in _config_sections(run) for c in s.get("ceiling_flops") or []]
    from benchmarks.report import machine_line, warnings

    return {"cpu": cpu_name(run["machine"]), "machine_line": machine_line(run),
            "started_utc": run["started_utc"], "wall_s": run["wall_s"], "mode": run["mode"],
            "command": run["command"], "versions": run.get("versions", {}),
            "repeats": max((r["repeats"] for r in rows), default=0),
            "busy_repeats": max((r["busy_repeats"] for r in rows), default=0),
            "calls": _median([r["reps"] for s in _config_sections(run) for r in s["records"]
                              if r["lib"] == "jaxrnn" and r.get("contention") == "quiet"]),
            "tune_calls": run.get("tune_calls"),
            "ceiling_gflops": _median(ceils) / 1e9 if ceils else None,
            "rows": rows, "peer_rows": prow, "targets": targets(rows, prow),
            "skipped": run.get("skipped", []), "warnings": warnings(run),
            "notes": sorted({n for s in _config_sections(run) for n in s.get("notes", [])})}


# --------------------------------------------------------------------------- Markdown

def _k(tps):
    if tps is None:
        return "-"
    if tps < 100:
        return f"{tps:.1f}"
    return f"{tps / 1e3:,.0f}k" if tps >= 1e4 else f"{tps / 1e3:,.1f}k"


def _x(v):
    return "-" if v is None else f"{v:.2f}x"


def _pct(v):
    return "-" if v is None else f"{100 * v:.0f}%"


def _value(t, v):
    return _pct(v) if t["unit"] == "%" else _x(v)


def _target_line(t) -> str:
    if t["met"] is None:
        return f"| {t['target']} | not measured | - | - |"
    worst = f"{_value(t, t['worst'][1])} ({t['worst'][0]})"
    misses = ", ".join(f"{n} {_value(t, v)}" for n, v in t["misses"][:6])
    if len(t["misses"]) > 6:
        misses += f", +{len(t['misses']) - 6} more"
    met = "yes" if t["met"] else f"**no**: {misses}"
    return f"| {t['target']} | {worst} | {t['met_rows']} of {t['rows']} | {met} |"


def _cell_order(rows):
    cfgs = {"A": 0, "B": 1, "C": 2}
    return sorted(rows, key=lambda r: (r["setting"], cfgs.get(base_config(r["config"]), 9),
                                       r["config"], r["mode"] != "forward"))


def markdown(summ: dict, level: int = 2) -> str:
    """This CPU model's section: the targets, jaxrnn against each peer (quiet and contended),
    the peers' own figures with their solo check; at most ``MAX_SECTION_LINES`` lines."""
    h = "#" * level
    reps = summ["repeats"]
    nb = summ.get("busy_repeats") or 0
    busy_runs = f", {nb} contended" if nb and nb != reps else ""
    peers = [p for p in PEERS if any(p in r["vs"] or p in r["busy_vs"] for r in summ["rows"])]
    busy_peers = [p for p in PEERS if any(p in r["busy_vs"] for r in summ["rows"])]
    variants = [v for v in VARIANTS if any(v in r.get("vs_variant", {}) for r in summ["rows"])]
    settings = list(dict.fromkeys(r["setting"] for r in summ["rows"]))
    many = len(settings) > 1
    v = summ["versions"]
    lines = [
        f"{h} CPU: {summ['cpu']}", "",
        f"Report of {summ['started_utc'][:16].replace('T', ' ')} UTC, `{summ['command']}` "
        f"({summ['mode']} run, {summ['wall_s'] / 60:.1f} min; median of {reps} run"
        f"{'s' if reps != 1 else ''} per row{busy_runs}). Machine: {summ['machine_line']}.",
        "",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val) + ".",
        "",
        "Each library ran in its own fresh process, one after another, nothing else of the "
        f"harness awake beside it; a row was timed quiet ({summ.get('calls') or 0:.0f} calls; "
        "half as many for a row whose calls reach its time limit) and then beside one "
        "`while True: pass` process (busy). tok/s = batch x T / median call; ratios are jaxrnn / "
        "peer within one run, then the median over the runs; spread = interquartile range / "
        "median of the quiet calls; % ceiling = useful FLOP/s over a 1024^3 float32 matmul "
        f"timed by the jaxrnn worker ({summ['ceiling_gflops'] or 0:.0f} GFLOP/s).",
        "", f"{h}# Targets (issue 26)", "", "| target | worst row | rows met | met |",
        "|---|---|---|---|"]
    lines += [_target_line(t) for t in summ["targets"]]
    head = (("| setting " if many else "") + "| config | mode | cell | jaxrnn tok/s | spread | "
            + " | ".join(f"/ {PEER_TITLES[p]}" for p in peers)
            + "".join(f" | busy / {PEER_TITLES[p]}" for p in busy_peers)
            + " | busy / quiet | % ceiling |"
            + "".join(f" / {VARIANTS[v]} |" for v in variants))
    lines += ["", f"{h}# jaxrnn against its peers (quiet; busy = one busy process)", "", head,
              "|" + "---|" * (head.count("|") - 1)]
    for r in _cell_order(summ["rows"]):
        lines.append(("| " + r["setting"] + " " if many else "")
                     + f"| {r['config']} | {r['mode']} | {r['cell']} | {_k(r['tokens_per_s'])} "
                     f"| {_pct(r['spread'])} | "
                     + " | ".join(_x(r["vs"].get(p)) for p in peers)
                     + "".join(f" | {_x(r['busy_vs'].get(p))}" for p in busy_peers)
                     + f" | {_pct(r['busy_over_quiet'])} | {_pct(r['ceiling_share'])} |"
                     + "".join(f" {_x(r.get('vs_variant', {}).get(v))} |" for v in variants))
    prow = summ["peer_rows"]
    if prow:
        libs = [p for p in PEERS if any(q["lib"] == p for q in prow)]
        lines += ["", f"{h}# Peers and their solo check", "",
                  "Quiet tok/s (median over the runs that timed it: "
                  + ", ".join(f"{PEER_TITLES[p]} {max(q['repeats'] for q in prow if q['lib'] == p)}"
                              for p in libs)
                  + "), spread, and in-harness time / solo time (the same step alone in a "
                  f"fresh process; **bold** beyond {100 * SOLO_WITHIN:.0f}%, `-`: not checked).",
                  "", "| config | mode | cell | " + " | ".join(PEER_TITLES[p] for p in libs)
                  + " |", "|" + "---|" * (3 + len(libs))]
        by = {}
        for q in prow:
            by.setdefault((q["setting"], q["config"], q["mode"], q["family"]), {})[q["lib"]] = q
        order = {"A": 0, "B": 1, "C": 2}
        for key in sorted(by, key=lambda k: (k[0], order.get(base_config(k[1]), 9), k[1],
                                             k[2] != "forward", k[3])):
            cells = []
            for p in libs:
                q = by[key].get(p)
                if q is None:
                    cells.append("-")
                    continue
                solo = q.get("harness_over_solo")
                chk = "-" if solo is None else (f"{solo:.2f}" if abs(solo - 1) <= SOLO_WITHIN
                                                else f"**{solo:.2f}**")
                cells.append(f"{_k(q['tokens_per_s'])} ±{_pct(q['spread'])} {chk}")
            lines.append(f"| {key[1]} | {key[2]} | {key[3]} | " + " | ".join(cells) + " |")
    notes = list(summ.get("notes") or [])
    if summ.get("skipped"):
        notes.append(f"time budget: {len(summ['skipped'])} optional jobs skipped ("
                     + "; ".join(summ["skipped"][:4])
                     + (", ..." if len(summ["skipped"]) > 4 else "") + ")")
    if summ.get("tune_calls"):
        notes.append(f"the kernels' plans were tuned before each jaxrnn row's timed calls, by at "
                     f"most {summ['tune_calls']} untimed calls (`python -m jaxrnn.kernels plans`)")
    if notes:
        lines += ["", "Notes: " + "; ".join(notes) + "."]
    if summ.get("warnings"):
        lines += ["", "**Caution:** " + "; ".join(summ["warnings"]) + "."]
    return "\n".join(lines)


def cpu_key(summ: dict) -> str:
    return f"cpu {summ['cpu']}"


def write_benchmarks_md(summ: dict, path: Path) -> str:
    """Replace ``path``'s section for this CPU model by this report (other sections are kept
    byte for byte); returns the block's key."""
    path = Path(path)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    body = markdown(summ)
    n = body.count("\n") + 1
    if n > MAX_SECTION_LINES:
        raise ValueError(f"report section: {n} lines, expected at most {MAX_SECTION_LINES}")
    key = cpu_key(summ)
    path.write_text(mdblocks.merge(text, key, body))
    return key


def slug(cpu: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", cpu.lower()).strip("-")


def write_summary(summ: dict, folder: Path) -> Path:
    """The latest summary of this CPU model (one small JSON file per model, kept in git)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{slug(summ['cpu'])}.json"
    path.write_text(json.dumps(summ, indent=1) + "\n")
    return path
