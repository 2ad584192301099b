"""Turn a run record into a Markdown report, a PNG chart and ``BENCHMARKS.md``."""

from __future__ import annotations

import statistics
from pathlib import Path

PEERS = ("flax", "equinox", "keras", "torch")
GiB = 2**30


def _ceiling(section) -> float | None:
    c = section.get("ceiling_flops") or []
    return statistics.median(c) if c else None


def _config_rows(run):
    """Yield (section, allocator, config name, mode, jaxrnn record, {peer: record})."""
    for s in run["sections"]:
        if s["spec"]["kind"] not in ("config", "sweep"):
            continue
        recs = s["records"]
        for r in recs:
            if r["lib"] != "jaxrnn":
                continue
            peers = {
                p["lib"]: p for p in recs
                if p["lib"] != "jaxrnn" and p["config"]["name"] == r["config"]["name"]
                and p["mode"] == r["mode"] and p["peer_family"] == r["peer_family"]
                and r["peer_family"] is not None
            }
            yield s, s["allocator"], r["config"]["name"], r["mode"], r, peers


def _k(tps):
    return f"{tps / 1e3:,.0f}k" if tps >= 1e4 else f"{tps / 1e3:,.1f}k"


def _fmt_peer(r, p):
    if p is None:
        return "-"
    return f"{_k(p['tokens_per_s'])} ({r['tokens_per_s'] / p['tokens_per_s']:.2f}x)"


def ratios(run):
    """``{(allocator, config, mode, cell): {"jaxrnn": tok/s, peer: ratio, "frac": ...}}``."""
    out = {}
    for s, alloc, cfg, mode, r, peers in _config_rows(run):
        ceil = _ceiling(s)
        row = {"jaxrnn": r["tokens_per_s"]}
        for lib, p in peers.items():
            row[lib] = r["tokens_per_s"] / p["tokens_per_s"]
            row[lib + "_tps"] = p["tokens_per_s"]
        if ceil:
            row["frac"] = r["flops"] / r["median_s"] / ceil
        out[(alloc, cfg, mode, r["cell"])] = row
    return out


def config_table(run, kind="config") -> str:
    cols = PEERS + ("jaxrnn-plain-scan", "jaxrnn-xla-fused")
    head = ("| alloc | config | mode | cell | jaxrnn tok/s (spread) | compile s | XLA MiB | "
            "% ceiling | " + " | ".join(PEERS) + " | jaxrnn, fused path off | "
            "jaxrnn, kernels off |")
    lines = [head, "|" + "---|" * (8 + len(cols))]
    for s, alloc, cfg, mode, r, peers in _config_rows(run):
        if s["spec"]["kind"] != kind:
            continue
        ceil = _ceiling(s)
        frac = f"{100 * r['flops'] / r['median_s'] / ceil:.0f}%" if ceil else "-"
        mem = f"{r['mem_bytes'] / 2**20:,.0f}" if r.get("mem_bytes") else "-"
        remat = " remat" if "remat" in r.get("run_kwargs", {}) else ""
        lines.append(
            f"| {alloc} | {cfg} | {mode}{remat} | {r['cell']} | {_k(r['tokens_per_s'])} "
            f"(±{100 * r['spread'] / 2:.0f}%) | {r['compile_s']:.2f} | {mem} | {frac} | "
            + " | ".join(_fmt_peer(r, peers.get(p)) for p in cols) + " |"
        )
    return "\n".join(lines)


def peer_table(run) -> str:
    """Peers' own figures (compile time and planned memory) for reference."""
    lines = ["| alloc | config | mode | lib | cell | tok/s (spread) | compile s | XLA MiB |",
             "|---|---|---|---|---|---|---|---|"]
    seen = set()
    for s in run["sections"]:
        for p in s["records"]:
            if p.get("lib") in (None, "jaxrnn") or "tokens_per_s" not in p:
                continue
            key = (s["allocator"], p["config"]["name"], p["mode"], p["lib"], p["cell"])
            if key in seen:
                continue
            seen.add(key)
            comp = f"{p['compile_s']:.2f}" if p.get("compile_s") is not None else "eager"
            mem = f"{p['mem_bytes'] / 2**20:,.0f}" if p.get("mem_bytes") else "-"
            lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {key[4]} | "
                         f"{_k(p['tokens_per_s'])} (±{100 * p['spread'] / 2:.0f}%) | "
                         f"{comp} | {mem} |")
    return "\n".join(lines)


def targets(run) -> list[tuple[str, str, str]]:
    """The issue's targets checked against this run: (target, measured, met?)."""
    R = ratios(run)
    out = []
    allocs = sorted({k[0] for k in R})
    for alloc in allocs:
        for (a, cfg, mode, cell), row in sorted(R.items()):
            if a != alloc or cfg not in ("A", "B"):
                continue
            if "flax" in row:
                out.append((f"[{alloc}] {cell} {cfg} {mode} >= 1.5x Flax", f"{row['flax']:.2f}x",
                            "yes" if row["flax"] >= 1.5 else "no"))
            if cell in ("gru", "elman"):
                peers = [row[p] for p in PEERS if p in row]
                if peers:
                    worst = min(peers)
                    out.append((f"[{alloc}] {cell} {cfg} {mode} >= 1.2x best peer",
                                f"{worst:.2f}x", "yes" if worst >= 1.2 else "no"))
        lstm_tr = R.get((alloc, "A", "train", "lstm"), {})
        lstm_fw = R.get((alloc, "A", "forward", "lstm"), {})
        if "torch" in lstm_tr:
            out.append((f"[{alloc}] LSTM A train >= PyTorch", f"{lstm_tr['torch']:.2f}x",
                        "yes" if lstm_tr["torch"] >= 1.0 else "no"))
        if "torch" in lstm_fw:
            out.append((f"[{alloc}] LSTM A forward >= 0.8x PyTorch", f"{lstm_fw['torch']:.2f}x",
                        "yes" if lstm_fw["torch"] >= 0.8 else "no"))
        for cell in ("lstm", "gru"):
            row = R.get((alloc, "A", "train", cell), {})
            if "frac" in row:
                out.append((f"[{alloc}] {cell} A train >= 50% of FLOP ceiling",
                            f"{100 * row['frac']:.0f}%", "yes" if row["frac"] >= 0.5 else "no"))
    for s in run["sections"]:
        if s["spec"]["kind"] == "compile" and s["records"]:
            cs = {r["T"]: r["compile_s"] for r in s["records"]}
            worst = max(cs.values())
            out.append(("2-layer LSTM train compile < 2 s",
                        ", ".join(f"T={t}: {v:.2f} s" for t, v in cs.items()),
                        "yes" if worst < 2.0 else "no"))
            if len(cs) >= 2:
                ts = sorted(cs)
                rr = cs[ts[-1]] / cs[ts[0]]
                out.append((f"compile T={ts[-1]} within 1.3x of T={ts[0]}", f"{rr:.2f}x",
                            "yes" if rr <= 1.3 else "no"))
        if s["spec"]["kind"] == "rss":
            for r in s["records"]:
                speed = f", {_k(r['tokens_per_s'])} tok/s" if "tokens_per_s" in r else ""
                out.append((f"LSTM train T={r['T']} (remat chunks of "
                            f"{r['run_kwargs'].get('remat')}) peak memory <= 2 GiB",
                            f"{r['peak_rss_bytes'] / GiB:.2f} GiB peak RSS (process), "
                            f"{r['baseline_rss_bytes'] / GiB:.2f} GiB after imports{speed}",
                            "yes" if r["peak_rss_bytes"] <= 2 * GiB else "no"))
                if r.get("xla_planned_bytes_no_remat"):
                    out.append((f"LSTM train T={r['T']} memory without remat (compiled only)",
                                f"{r['xla_planned_bytes_no_remat'] / GiB:.2f} GiB planned by XLA"
                                f" (with remat: {r['xla_planned_bytes'] / GiB:.2f} GiB planned)",
                                "-"))
    return out


def markdown(run) -> str:
    parts = [f"## jaxrnn benchmark ({run['mode']}, {run['started_utc']}, {run['wall_s']:.0f} s)",
             "", "tok/s = batch x T / median step time; ratios are jaxrnn / peer (> 1: jaxrnn "
             "faster); spread = ± half the interquartile range; % ceiling = useful FLOP/s over "
             "the 1024^3 matmul rate measured in the same worker."]
    if any(s["spec"]["kind"] == "config" for s in run["sections"]):
        parts += ["", config_table(run, "config")]
    if any(s["spec"]["kind"] == "sweep" for s in run["sections"]):
        parts += ["", "### LSTM sequence-length sweep (hidden 256, batch 8, input 64)", "",
                  config_table(run, "sweep")]
    from benchmarks.extras import markdown_parts

    parts += markdown_parts(run)
    if any(s["spec"]["kind"] in ("config", "sweep") for s in run["sections"]):
        parts += ["", "### Peers", "", peer_table(run)]
    tg = targets(run)
    if tg:
        parts += ["", "### Targets", "", "| target | measured | met |", "|---|---|---|"]
        parts += [f"| {a} | {b} | {c} |" for a, b, c in tg]
    notes = sorted({n for s in run["sections"] for n in s.get("notes", [])})
    if notes:
        parts += ["", "Notes: " + "; ".join(notes)]
    ceils = [c for s in run["sections"] for c in s.get("ceiling_flops", [])]
    if ceils:
        parts += ["", f"FLOP ceiling (1024^3 float32 matmul under jit, fastest of 15 runs; median "
                      f"over the measurements at the start and end of every worker): "
                      f"{statistics.median(ceils) / 1e9:.1f} GFLOP/s (range "
                      f"{min(ceils) / 1e9:.1f}-{max(ceils) / 1e9:.1f})"]
    return "\n".join(parts)


def chart(run, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    R = ratios(run)
    keys = [k for k in sorted(R) if k[0] == "default" and "flax" in R[k]]
    sweep = [(r["config"]["T"], r["mode"], r["lib"], r["tokens_per_s"])
             for s in run["sections"] if s["spec"]["kind"] == "sweep" for r in s["records"]]
    fig, axes = plt.subplots(1, 2 if sweep else 1, figsize=(14 if sweep else 9, 5), squeeze=False)
    ax = axes[0][0]
    if keys:
        ax.bar(range(len(keys)), [R[k]["flax"] for k in keys],
               color=["tab:blue" if k[2] == "forward" else "tab:orange" for k in keys])
        ax.set_xticks(range(len(keys)), [f"{k[1]} {k[2][:5]} {k[3]}" for k in keys],
                      rotation=75, fontsize=7)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.axhline(1.5, color="g", ls="--", lw=0.8, label="target 1.5x")
        ax.set_ylabel("jaxrnn / Flax tokens/s")
        ax.set_title("jaxrnn vs Flax (default allocator; blue forward, orange train)")
        ax.legend()
    if sweep:
        ax = axes[0][1]
        for lib in sorted({s[2] for s in sweep}):
            for mode, ls in (("forward", "-"), ("train", "--")):
                pts = sorted((t, v) for t, m, l, v in sweep if l == lib and m == mode)
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], ls, marker="o",
                            label=f"{lib} {mode}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("T")
        ax.set_ylabel("tokens/s")
        ax.set_title("LSTM, hidden 256, batch 8")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_benchmarks_md(run, path: Path, png, json_path: Path, preamble: str = "") -> None:
    v, m = run["versions"], run["machine"]
    root = path.parent
    rel = lambda p: str(Path(p).resolve().relative_to(root.resolve())) if p else None
    lines = ["# Benchmarks", "",
             "Produced by the harness in `benchmarks/` (`nox -s bench`, or "
             "`python -m benchmarks`); this file is rewritten by every full run. "
             "The hand-written analysis lives in `benchmarks/NOTES.md`.", "",
             f"- command: `{run['command']}` ({run['mode']} run, {run['wall_s'] / 60:.1f} min, "
             f"started {run['started_utc']})",
             f"- machine: {m['cpu']}, {m['cores']} cores, "
             f"{(m['memory_bytes'] or 0) / GiB:.0f} GiB; {m['platform']}; shared with other jobs, "
             "so all libraries are timed interleaved in the same worker and compared as ratios",
             "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
             "- allocator settings: `default` = glibc defaults; `tuned` = "
             + " ".join(f"`{k}={val}`" for k, val in run["allocators"]["tuned"].items())
             + " (same environment for every library in the worker)",
             "- memory: `XLA MiB` is XLA's planned buffers of the compiled step "
             "(arguments + outputs "
             "+ temporaries, `compiled.memory_analysis()`); the long-sequence check is the peak "
             "RSS (`getrusage` max RSS) of a fresh process running that step",
             ""]
    if preamble:
        lines += [preamble, ""]
    if png:
        lines += [f"![ratios and sweep]({rel(png)})", ""]
    lines += [markdown(run), "", f"Raw record: `{rel(json_path)}`", ""]
    path.write_text("\n".join(lines))


def append_extras_md(run, path: Path, json_path: Path) -> None:
    """Append the ConvLSTM and minimal-cell sweep sections of an ``--extras`` run to ``path``,
    keeping what is there."""
    from benchmarks.extras import markdown_parts

    m = run["machine"]
    try:
        rel = str(Path(json_path).resolve().relative_to(path.parent.resolve()))
    except ValueError:
        rel = str(json_path)
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = ["", f"## ConvLSTM and minimal cells ({run['started_utc']}, "
                 f"{run['wall_s']:.0f} s)", "",
             f"- command: `{run['command']}`",
             f"- machine: {m['cpu']}, {m['cores']} cores; shared with other jobs",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in run["versions"].items() if v)]
    lines += markdown_parts(run) + ["", f"Raw record: `{rel}`", ""]
    path.write_text(old.rstrip("\n") + "\n" + "\n".join(lines))
