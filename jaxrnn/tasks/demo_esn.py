"""Echo state network on Mackey-Glass (tau = 17): one-step prediction and 84-step free run.

Setup after Jaeger & Haas (2004): the series is sampled once per time unit and squashed by
``tanh(x - 1)``; the reservoir is driven by ``d(n)`` and the ridge readout predicts ``d(n+1)``.
For the free run the readout's prediction is fed back as the next input for 84 steps, from many
starting points in the held-out part; NRMSE84 is the normalised error at the 84th step over
those runs (Jaeger's definition). Jaeger & Haas report NRMSE84 ~ 10^-4.2 with 1000 units in
double precision; this demo uses float32 and fewer units.
"""

import time

import numpy as np

DESCRIPTION = "echo state network: Mackey-Glass one-step and 84-step free-run NRMSE, with a plot"

PUBLISHED_LOG10_NRMSE84 = -4.2  # Jaeger & Haas, Science 2004 (1000 units, float64)


def add_arguments(parser):
    parser.add_argument("--units", type=int, default=500, help="reservoir size")
    parser.add_argument("--spectral-radius", type=float, default=0.95)
    parser.add_argument("--leak-rate", type=float, default=0.5)
    parser.add_argument("--density", type=float, default=0.02)
    parser.add_argument("--input-scaling", type=float, default=1.0)
    parser.add_argument("--bias-scaling", type=float, default=0.2)
    parser.add_argument("--ridge", type=float, default=1e-9)
    parser.add_argument("--train", type=int, default=3000, help="training steps")
    parser.add_argument("--washout", type=int, default=200)
    parser.add_argument("--test", type=int, default=1000, help="held-out steps")
    parser.add_argument("--runs", type=int, default=50, help="free runs for NRMSE84")
    parser.add_argument("--horizon", type=int, default=84)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default="esn_mackey_glass.png", help="PNG path ('' for none)")


def main(args):
    import jax
    import jax.numpy as jnp

    from jaxrnn.classic import esn
    from jaxrnn.classic.mackey_glass import mackey_glass

    t_start = time.perf_counter()
    n = args.train + args.test + args.horizon + 2
    d = np.tanh(mackey_glass(n, tau=17.0, seed=args.seed) - 1.0).astype(np.float32)
    u = jnp.asarray(d[:-1, None])  # input d(n)
    y = jnp.asarray(d[1:, None])  # target d(n+1)

    cell = esn.reservoir(
        args.units,
        density=args.density,
        spectral_radius=args.spectral_radius,
        input_scaling=args.input_scaling,
        leak_rate=args.leak_rate,
        bias_scaling=args.bias_scaling,
    )
    params = cell.init(jax.random.key(args.seed), 1)
    radius = float(esn.spectral_radius(params.w))

    _, states = jax.jit(lambda p, u: esn.drive(cell, p, u))(params, u)
    feats = esn.features(states, u)
    tr = args.train
    readout = esn.fit_readout(feats[:tr], y[:tr], ridge=args.ridge, washout=args.washout)
    pred = esn.predict(readout, feats)
    train_nrmse = float(esn.nrmse(pred[args.washout : tr], y[args.washout : tr]))
    test_end = tr + args.test
    one_step = float(esn.nrmse(pred[tr:test_end], y[tr:test_end]))

    # Free runs: start k sees d(0..s_k) through teacher forcing, then generates d(s_k+2 ...).
    H = args.horizon
    starts = tr + np.linspace(0, args.test - 1, args.runs).astype(int)
    carry = esn.ReservoirState(states[starts])
    gen = jax.jit(lambda p, c, u0: esn.generate(cell, p, readout, c, u0, H))
    free = np.asarray(gen(params, carry, y[starts]))[..., 0]  # (runs, H)
    truth = np.stack([d[s + 2 : s + 2 + H] for s in starts])
    sigma2 = float(np.var(d))
    nrmse_h = float(np.sqrt(np.mean((free[:, -1] - truth[:, -1]) ** 2) / sigma2))
    nrmse_curve = np.sqrt(np.mean((free - truth) ** 2, axis=0) / sigma2)
    elapsed = time.perf_counter() - t_start

    print(
        f"reservoir: {args.units} units, density {args.density}, spectral radius "
        f"{radius:.4f} (target {args.spectral_radius}), leak {args.leak_rate}, ridge {args.ridge}"
    )
    print(f"train NRMSE (one step)          {train_nrmse:.2e}")
    print(
        f"test  NRMSE (one step, {args.test} held-out steps) {one_step:.2e}  "
        f"(log10 {np.log10(one_step):.2f})"
    )
    print(
        f"test  NRMSE{H} (free run, {args.runs} runs) {nrmse_h:.2e}  (log10 "
        f"{np.log10(nrmse_h):.2f}); published order: 10^{PUBLISHED_LOG10_NRMSE84} "
        f"(Jaeger & Haas 2004, 1000 units, float64)"
    )
    print(f"time {elapsed:.1f} s")

    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        long = 300
        s0 = int(starts[0])
        free_long = np.asarray(
            jax.jit(lambda p, c, u0: esn.generate(cell, p, readout, c, u0, long))(
                params, esn.ReservoirState(states[s0]), y[s0]
            )
        )[:, 0]
        t_axis = np.arange(s0 + 2, s0 + 2 + long)
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6))
        ax1.plot(t_axis, d[s0 + 2 : s0 + 2 + long], label="truth", lw=2)
        ax1.plot(t_axis, free_long, "--", label="ESN free run (closed loop)")
        ax1.axvline(s0 + 2 + H - 1, color="gray", lw=0.8, ls=":")
        ax1.set_title(f"Mackey-Glass tau=17: free-running ESN ({args.units} units)")
        ax1.set_xlabel("time step")
        ax1.legend()
        ax2.semilogy(np.arange(1, H + 1), nrmse_curve, label="free-run NRMSE")
        ax2.axhline(one_step, color="C1", ls="--", label="one-step NRMSE")
        ax2.axhline(
            10**PUBLISHED_LOG10_NRMSE84,
            color="gray",
            ls=":",
            label="published NRMSE84 (Jaeger & Haas 2004)",
        )
        ax2.set_xlabel("steps ahead")
        ax2.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)
        plt.close(fig)
        print(f"plot written to {args.plot}")

    return {
        "spectral_radius": radius,
        "nrmse_one_step": one_step,
        f"nrmse{H}": nrmse_h,
        "seconds": elapsed,
    }
