"""Turn a run record into a Markdown report, a PNG chart and ``BENCHMARKS.md``.

Records carry a ``contention`` field (``"quiet"``, or ``"busy"``: timed while the harness ran
competing busy processes); records of runs made before it existed are quiet. A section's
``label`` is its allocator setting, plus the kernels' team size where the run set one.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from benchmarks import mdblocks

PEERS = ("flax", "equinox", "keras", "torch")
GiB = 2**30


def _ceiling(section) -> float | None:
    c = section.get("ceiling_flops") or []
    return statistics.median(c) if c else None


def _label(section) -> str:
    return section.get("label") or section["allocator"]


def _contention(rec) -> str:
    return rec.get("contention", "quiet")


def _config_rows(run, contention="quiet"):
    """Yield (section, label, config name, mode, jaxrnn record, {peer: record}) for the records
    timed under ``contention``."""
    for s in run["sections"]:
        if s["spec"]["kind"] not in ("config", "sweep"):
            continue
        recs = [r for r in s["records"] if _contention(r) == contention]
        for r in recs:
            if r["lib"] != "jaxrnn":
                continue
            peers = {
                p["lib"]: p for p in recs
                if p["lib"] != "jaxrnn" and p["config"]["name"] == r["config"]["name"]
                and p["mode"] == r["mode"] and p["peer_family"] == r["peer_family"]
                and r["peer_family"] is not None
            }
            yield s, _label(s), r["config"]["name"], r["mode"], r, peers


def _k(tps):
    return f"{tps / 1e3:,.0f}k" if tps >= 1e4 else f"{tps / 1e3:,.1f}k"


def _fmt_peer(r, p):
    if p is None:
        return "-"
    return f"{_k(p['tokens_per_s'])} ({r['tokens_per_s'] / p['tokens_per_s']:.2f}x)"


def ratios(run, contention="quiet"):
    """``{(label, config, mode, cell): {"jaxrnn": tok/s, peer: ratio, peer + "_tps": tok/s,
    "frac": share of the FLOP ceiling, "kernel": bool}}`` for one contention condition."""
    out = {}
    for s, label, cfg, mode, r, peers in _config_rows(run, contention):
        ceil = _ceiling(s)
        row = {"jaxrnn": r["tokens_per_s"], "kernel": r.get("kernel", True)}
        for lib, p in peers.items():
            row[lib] = r["tokens_per_s"] / p["tokens_per_s"]
            row[lib + "_tps"] = p["tokens_per_s"]
        if ceil:
            row["frac"] = r["flops"] / r["median_s"] / ceil
        out[(label, cfg, mode, r["cell"])] = row
    return out


def contention_rows(run) -> dict:
    """``{(label, config, mode, cell): row}`` for every jaxrnn record timed both quiet and
    contended in one section: quiet and contended tok/s of jaxrnn and of each peer, and the
    busy processes' CPU use."""
    out = {}
    for s in run["sections"]:
        quiet = {(cfg, mode, r["cell"]): (r, peers)
                 for _, _, cfg, mode, r, peers in _config_rows({"sections": [s]}, "quiet")}
        for _, label, cfg, mode, r, peers in _config_rows({"sections": [s]}, "busy"):
            q = quiet.get((cfg, mode, r["cell"]))
            if q is None:
                continue
            row = {"quiet": q[0]["tokens_per_s"], "busy": r["tokens_per_s"],
                   "kernel": r.get("kernel", True), "busy_cores_used": r.get("busy_cores_used"),
                   "busy_procs": r.get("busy_procs")}
            for lib in PEERS:
                if lib in peers and lib in q[1]:
                    row[lib] = (q[1][lib]["tokens_per_s"], peers[lib]["tokens_per_s"])
            out[(label, cfg, mode, r["cell"])] = row
    return out


def contention_table(run) -> str | None:
    """Quiet and contended side by side: tok/s, ratios to Flax (and PyTorch) in each
    condition, and jaxrnn's (and Flax's) contended throughput as a share of its quiet one."""
    rows = contention_rows(run)
    if not rows:
        return None
    lines = ["| setting | config | mode | cell | jaxrnn quiet tok/s | contended tok/s | "
             "jaxrnn contended / quiet | Flax contended / quiet | vs Flax quiet | "
             "vs Flax contended | vs PyTorch quiet | vs PyTorch contended | busy cores used |",
             "|" + "---|" * 13]
    for (label, cfg, mode, cell), row in rows.items():
        def vs(lib, i, row=row):
            if lib not in row:
                return "-"
            return f"{(row['quiet'], row['busy'])[i] / row[lib][i]:.2f}x"

        fl = f"{100 * row['flax'][1] / row['flax'][0]:.0f}%" if "flax" in row else "-"
        used = row["busy_cores_used"]
        lines.append(
            f"| {label} | {cfg} | {mode} | {cell} | {_k(row['quiet'])} | {_k(row['busy'])} | "
            f"{100 * row['busy'] / row['quiet']:.0f}% | {fl} | {vs('flax', 0)} | "
            f"{vs('flax', 1)} | {vs('torch', 0)} | {vs('torch', 1)} | "
            f"{'-' if used is None else f'{used:.2f}'} |")
    return "\n".join(lines)


def threads_table(run) -> str | None:
    """jaxrnn's throughput per kernel team size (``--kernel-threads``), quiet and contended,
    with the ratio to Flax timed in the same worker: the figures to choose the team size by."""
    settings = []
    cells = {}
    for s in run["sections"]:
        kt = s.get("kernel_threads")
        if kt is None or s["spec"]["kind"] != "config":
            continue
        if kt not in settings:
            settings.append(kt)
        for contention in ("quiet", "busy"):
            for _, _, cfg, mode, r, peers in _config_rows({"sections": [s]}, contention):
                key = (s["allocator"], cfg, mode, r["cell"])
                flax = peers.get("flax")
                vs = f" ({r['tokens_per_s'] / flax['tokens_per_s']:.2f}x Flax)" if flax else ""
                cells.setdefault(key, {})[(kt, contention)] = _k(r["tokens_per_s"]) + vs
    if not settings:
        return None
    cols = [(kt, c) for kt in settings for c in ("quiet", "busy")
            if any((kt, c) in v for v in cells.values())]
    names = {"quiet": "quiet", "busy": "contended"}
    lines = ["| alloc | config | mode | cell | "
             + " | ".join(f"threads={kt} {names[c]}" for kt, c in cols) + " |",
             "|" + "---|" * (4 + len(cols))]
    for key, v in cells.items():
        lines.append("| " + " | ".join(key) + " | "
                     + " | ".join(v.get(col, "-") for col in cols) + " |")
    return "\n".join(lines)


def config_table(run, kind="config", contention="quiet") -> str:
    cols = PEERS + ("jaxrnn-plain-scan", "jaxrnn-xla-fused")
    head = ("| setting | config | mode | cell | jaxrnn tok/s (spread) | compile s | XLA MiB | "
            "% ceiling | " + " | ".join(PEERS) + " | jaxrnn, fused path off | "
            "jaxrnn, kernels off |")
    lines = [head, "|" + "---|" * (8 + len(cols))]
    for s, alloc, cfg, mode, r, peers in _config_rows(run, contention):
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
    lines = ["| setting | contention | config | mode | lib | cell | tok/s (spread) | compile s | "
             "XLA MiB |", "|---|---|---|---|---|---|---|---|---|"]
    seen = set()
    for s in run["sections"]:
        for p in s["records"]:
            if p.get("lib") in (None, "jaxrnn") or "tokens_per_s" not in p:
                continue
            key = (_label(s), _contention(p), p["config"]["name"], p["mode"], p["lib"],
                   p["cell"])
            if key in seen:
                continue
            seen.add(key)
            comp = f"{p['compile_s']:.2f}" if p.get("compile_s") is not None else "eager"
            mem = f"{p['mem_bytes'] / 2**20:,.0f}" if p.get("mem_bytes") else "-"
            lines.append("| " + " | ".join(key) + f" | {_k(p['tokens_per_s'])} "
                         f"(±{100 * p['spread'] / 2:.0f}%) | {comp} | {mem} |")
    return "\n".join(lines)


def targets(run) -> list[tuple[str, str, str]]:
    """The compile-time and long-sequence memory targets of a full run: (target, measured,
    met?). The speed targets (issue 26) are judged by :mod:`benchmarks.summary`."""
    out = []
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


def machine_line(run) -> str:
    """The CPU model, its ISA flags that matter to the kernels, cores, and the load average
    before and after the run (1, 5, 15 minutes)."""
    m = run.get("machine", {})
    isa = m.get("isa") or {}
    have = [f for f, on in isa.items() if on]
    lacks = [f for f, on in isa.items() if not on]
    load = lambda v: "/".join(f"{x:.2f}" for x in v) if v else "?"
    cores = f"{m.get('cores')} cores"
    if m.get("usable_cores") not in (None, m.get("cores")):
        cores += f" ({m['usable_cores']} usable)"
    text = f"{m.get('cpu', '?')}"
    if m.get("vendor"):
        text += f" ({m['vendor']}, family/model/stepping {m.get('cpu_family_model_stepping')})"
    text += f", {cores}"
    if isa:
        text += f"; ISA: {' '.join(have) or 'none of the listed'}"
        if lacks:
            text += f" (not: {' '.join(lacks)})"
    text += (f"; load average before {load(m.get('loadavg_before'))}, "
             f"after {load(m.get('loadavg_after'))}")
    return text


def warnings(run) -> list[str]:
    """Conditions that make this run's figures weak evidence: a machine that was not quiet
    (load average above half the cores before the run), competing processes that got less
    than half a core (the machine was busy anyway), busy processes left running."""
    out = []
    m = run.get("machine", {})
    cores = m.get("usable_cores") or m.get("cores") or 1
    load = m.get("loadavg_before")  # (the load after includes the run's own processes)
    if load and load[0] > 0.5 * cores:
        out.append(f"the 1-minute load average before the run was {load[0]:.1f} on {cores} "
                   "cores (other work, or a run that ended less than a minute before): the "
                   "quiet figures may not be quiet")
    used = [r.get("busy_cores_used") for s in run["sections"] for r in s["records"]
            if _contention(r) == "busy" and r["lib"] == "jaxrnn"]
    weak = [u for u in used if u is not None and u < 0.5]
    if weak:
        out.append(f"in {len(weak)} of {len(used)} contended groups the competing processes got "
                   "less than half a core: the contention was weaker than intended")
    crowded = [w for w in run.get("workers", [])
               if w.get("siblings_start") or w.get("siblings_end")]
    if crowded:
        out.append(f"{len(crowded)} workers found another harness process alive beside them "
                   "(expected none: one library at a time)")
    if run.get("busy_left_running"):
        out.append(f"busy processes still running after the run: {run['busy_left_running']}")
    return out


def markdown(run, level: int = 2, heading: bool = True) -> str:
    """The report of one run; its title at heading ``level`` (left out when ``heading`` is
    false, for a caller that writes its own), its subsections one level below."""
    h = "#" * level
    parts = ([f"{h} jaxrnn benchmark ({run['mode']}, {run['started_utc']}, "
              f"{run['wall_s']:.0f} s)", ""] if heading else [])
    parts += [f"Machine: {machine_line(run)}.", "",
              "tok/s = batch x T / median step time; ratios are jaxrnn / peer (> 1: jaxrnn "
              "faster); spread = ± half the interquartile range; % ceiling = useful FLOP/s over "
              "the 1024^3 matmul rate measured in the same worker."]
    if any(s["spec"]["kind"] == "config" for s in run["sections"]):
        parts += ["", config_table(run, "config")]
    ct = contention_table(run)
    if ct:
        n = max((r.get("busy_procs") or 1 for s in run["sections"] for r in s["records"]),
                default=1)
        parts += ["", f"{h}# Quiet and contended ({n} competing busy process"
                      f"{'es' if n > 1 else ''})", "",
                  "The same compiled programs timed quiet and then while the harness ran "
                  f"{n} pure-Python spin loop{'s' if n > 1 else ''} (started before the timed "
                  "calls, killed by PID after them), every library interleaved in the same "
                  "conditions. `contended / quiet` = throughput kept under contention; `busy "
                  "cores used` = the CPU the competing processes got.", "", ct]
    tt = threads_table(run)
    if tt:
        parts += ["", f"{h}# Kernel team size (`JAXRNN_KERNEL_THREADS`)", "",
                  "jaxrnn tok/s per setting, each in its own worker (a fresh process with the "
                  "variable set), with the ratio to Flax timed in that worker. Where the kernels "
                  "do not read the variable, the columns differ only by noise.", "", tt]
    if any(s["spec"]["kind"] == "sweep" for s in run["sections"]):
        parts += ["", f"{h}# LSTM sequence-length sweep (hidden 256, batch 8, input 64)", "",
                  config_table(run, "sweep")]
    from benchmarks.extras import markdown_parts

    parts += [p.replace("### ", h + "# ", 1) if p.startswith("### ") else p
              for p in markdown_parts(run)]
    if any(s["spec"]["kind"] in ("config", "sweep") for s in run["sections"]):
        parts += ["", f"{h}# Peers", "", peer_table(run)]
    tg = targets(run)
    if tg:
        parts += ["", f"{h}# Targets", "", "| target | measured | met |", "|---|---|---|"]
        parts += [f"| {a} | {b} | {c} |" for a, b, c in tg]
    notes = sorted({n for s in run["sections"] for n in s.get("notes", [])})
    if notes:
        parts += ["", "Notes: " + "; ".join(notes)]
    warn = warnings(run)
    if warn:
        parts += ["", "**Caution:** " + "; ".join(warn) + "."]
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
    labels = sorted({k[0] for k in R})
    first = "default" if "default" in labels else (labels[0] if labels else None)
    keys = [k for k in sorted(R) if k[0] == first and "flax" in R[k]]
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
        ax.set_title(f"jaxrnn vs Flax ({first}, quiet; blue forward, orange train)")
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


BENCHMARKS_INTRO = """\
Produced by the harness in `benchmarks/` (`nox -s bench`, or `python -m benchmarks`). The claims
are per machine, so results are kept per CPU model: one section per model, in which each kind of
run (`full`, `quick`, `quick-contended`, ...) has its own block that the next run of that kind on
that model rewrites; other models' sections and the hand-written notes are left as they are.
The hand-written analysis lives in `benchmarks/NOTES.md`."""


def cpu_key(run) -> str:
    """The block of ``BENCHMARKS.md`` that holds this run's CPU model."""
    return f"cpu {run['machine'].get('cpu') or 'unknown CPU'}"


def ensure_cpu_section(text: str, run) -> str:
    """``text`` with a section for the run's CPU model (heading and a notes block), added at
    the end if missing."""
    key = cpu_key(run)
    if mdblocks.find(text, key) is None:
        model = run["machine"].get("cpu") or "unknown CPU"
        text = mdblocks.merge(text, key, f"## CPU: {model}\n")
        text = mdblocks.merge(text, f"{key} / notes",
                              "(hand-written status of the targets on this CPU goes here; no "
                              "harness run rewrites this block)", parent=key)
    return text


def run_block(run, rel_png, rel_json) -> str:
    v, m = run["versions"], run["machine"]
    lines = [f"### {run['mode']} run ({run['started_utc']})", "",
             f"- command: `{run['command']}` ({run['mode']} run, {run['wall_s'] / 60:.1f} min, "
             f"started {run['started_utc']})",
             f"- memory {(m.get('memory_bytes') or 0) / GiB:.0f} GiB; {m.get('platform')}; "
             "the machine is shared with other jobs, so all libraries are timed interleaved in "
             "the same worker and compared as ratios",
             "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
             "- allocator settings: `default` = glibc defaults; `tuned` = "
             + " ".join(f"`{k}={val}`" for k, val in run["allocators"]["tuned"].items())
             + " (same environment for every library in the worker)"]
    if run.get("kernel_threads"):
        lines.append("- kernel team sizes: every config section once per "
                     "`JAXRNN_KERNEL_THREADS` in " + ", ".join(
                         f"`{t}`" for t in run["kernel_threads"])
                     + " (`threads=N` in the setting column; a fresh worker each)")
    lines += ["- memory: `XLA MiB` is XLA's planned buffers of the compiled step (arguments + "
              "outputs + temporaries, `compiled.memory_analysis()`); the long-sequence check is "
              "the peak RSS (`getrusage` max RSS) of a fresh process running that step", ""]
    if rel_png:
        lines += [f"![ratios and sweep]({rel_png})", ""]
    lines += [markdown(run, level=3, heading=False), "", f"Raw record: `{rel_json}`"]
    return "\n".join(lines)


def write_benchmarks_md(run, path: Path, png, json_path: Path) -> None:
    """Update ``path``'s block for this run's CPU model and run mode; keep everything else."""
    root = Path(path).parent.resolve()

    def rel(p):
        if not p:
            return None
        try:
            return str(Path(p).resolve().relative_to(root))
        except ValueError:
            return str(p)

    text = Path(path).read_text() if Path(path).exists() else (
        "# Benchmarks\n\n" + BENCHMARKS_INTRO + "\n")
    text = ensure_cpu_section(text, run)
    key = cpu_key(run)
    text = mdblocks.merge(text, f"{key} / {run['mode']}", run_block(run, rel(png), rel(json_path)),
                          parent=key)
    Path(path).write_text(text)
