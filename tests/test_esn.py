"""Echo state network: reservoir construction, the step equations, the echo-state property,
the ridge readout against NumPy float64 normal equations, closed-loop generation, Mackey-Glass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxrnn.classic import esn
from jaxrnn.classic.mackey_glass import mackey_glass


def init(cell, key, F):
    """``cell.init`` compiled once (eager init would compile each small op separately)."""
    return jax.jit(cell.init, static_argnums=1)(key, F)


@pytest.mark.parametrize("H,density,rho", [(50, 0.2, 0.9), (30, 1.0, 1.25)])
def test_spectral_radius_within_one_percent(H, density, rho):
    cell = esn.reservoir(H, density=density, spectral_radius=rho)
    params = cell.init(jax.random.key(3), 2)
    got = np.max(np.abs(np.linalg.eigvals(np.asarray(params.w, np.float64))))
    assert abs(got - rho) / rho < 0.01
    nonzero = np.mean(np.asarray(params.w) != 0)
    assert abs(nonzero - density) < 0.1  # the requested sparsity, up to sampling noise
    if H != 50:
        return
    # also under jit (the radius is computed through a host callback)
    params_j = jax.jit(cell.init, static_argnums=1)(jax.random.key(3), 2)
    np.testing.assert_allclose(params_j.w, params.w, rtol=1e-6, atol=1e-7)


def test_step_matches_numpy_equations(rng):
    H, F, O, a = 12, 3, 2, 0.3
    cell = esn.reservoir(
        H,
        density=0.5,
        spectral_radius=0.8,
        leak_rate=a,
        bias_scaling=0.5,
        feedback_size=O,
        input_scaling=0.7,
    )
    p = init(cell, jax.random.key(0), F)
    T = 7
    u = rng.normal(size=(T, F)).astype(np.float32)
    teach = rng.normal(size=(T, O)).astype(np.float32)
    _, states = jax.jit(lambda p, u, y: esn.drive(cell, p, u, teacher=y))(p, u, teach)

    w_in, w, b, w_fb = (np.asarray(t, np.float64) for t in (p.w_in, p.w, p.b, p.w_fb))
    x = np.zeros(H)
    y_prev = np.zeros(O)
    ref = []
    for t in range(T):
        x = (1 - a) * x + a * np.tanh(u[t] @ w_in + y_prev @ w_fb + x @ w + b)
        y_prev = teach[t]
        ref.append(x)
    np.testing.assert_allclose(states, np.stack(ref), rtol=1e-5, atol=1e-5)
    assert p.w_in.shape == (F, H) and p.w_fb.shape == (O, H)
    assert np.all(np.abs(p.w_in) <= 0.7) and np.all(np.abs(p.b) <= 0.5)


def test_reservoir_is_a_cell_on_the_common_engine(rng):
    cell = esn.reservoir(16, density=0.3)
    p = init(cell, jax.random.key(1), 2)
    xs = jnp.asarray(rng.normal(size=(3, 9, 2)).astype(np.float32))
    carry, ys = jaxrnn.run(cell, p, xs, lengths=jnp.array([9, 4, 0]))
    assert ys.shape == (3, 9, 16)
    np.testing.assert_allclose(ys[1, 4:], 0)
    np.testing.assert_allclose(carry.h[1], ys[1, 3], rtol=1e-6)


def test_echo_state_property_forgets_initial_state(rng):
    cell = esn.reservoir(60, density=0.2, spectral_radius=0.8, input_scaling=0.5)
    p = init(cell, jax.random.key(2), 1)
    u = jnp.asarray(rng.uniform(-1, 1, size=(300, 1)).astype(np.float32))
    c1 = esn.ReservoirState(jnp.asarray(rng.uniform(-1, 1, 60).astype(np.float32)))
    c2 = esn.ReservoirState(jnp.asarray(rng.uniform(-1, 1, 60).astype(np.float32)))
    run = jax.jit(lambda p, u, c: esn.drive(cell, p, u, carry=c)[1])
    s1, s2 = run(p, u, c1), run(p, u, c2)
    gap = np.linalg.norm(np.asarray(s1 - s2), axis=-1)
    assert gap[0] > 0.1
    assert np.max(gap[-100:]) < 1e-5 * gap[0]  # converged to float32 round-off
    # the distance shrinks over windows of 20 steps until it reaches round-off
    assert np.all(np.diff(gap[:61:20]) < 0)


def _normal_equations_np(phi, y, lam):
    phi = np.asarray(phi, np.float64).reshape(-1, phi.shape[-1])
    y = np.asarray(y, np.float64).reshape(-1, y.shape[-1])
    aug = np.concatenate([phi, np.ones((len(phi), 1))], axis=1)
    pen = np.diag(np.r_[np.full(phi.shape[1], lam), 0.0])
    sol = np.linalg.solve(aug.T @ aug + pen, aug.T @ y)
    return sol[:-1], sol[-1]


@pytest.mark.parametrize("solver", ["qr", "normal"])
def test_ridge_readout_equals_numpy_normal_equations(rng, solver):
    B, T, D, O, wash, lam = 2, 60, 8, 3, 5, 0.3
    phi = rng.normal(size=(B, T, D)).astype(np.float32) + 2.0
    y = (phi @ rng.normal(size=(D, O)) + 0.1 * rng.normal(size=(B, T, O)) + 1.5).astype(np.float32)
    fit = jax.jit(lambda a, b: esn.fit_readout(a, b, ridge=lam, washout=wash, solver=solver))
    ro = fit(phi, y)
    w_ref, b_ref = _normal_equations_np(phi[:, wash:], y[:, wash:], lam)
    np.testing.assert_allclose(ro.w, w_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ro.b, b_ref, rtol=1e-4, atol=1e-4)
    # stationarity of the ridge objective: the gradient at the solution is ~0
    aug = np.concatenate([phi[:, wash:].reshape(-1, D), np.ones(((T - wash) * B, 1))], 1)
    sol = np.r_[np.asarray(ro.w, np.float64), np.asarray(ro.b, np.float64)[None]]
    grad = aug.T @ (aug @ sol - y[:, wash:].reshape(-1, O)) + np.r_[lam * sol[:-1], 0 * sol[-1:]]
    assert np.max(np.abs(grad)) < 1e-2


def test_generate_matches_python_closed_loop(rng):
    cell = esn.reservoir(20, density=0.3, spectral_radius=0.7, bias_scaling=0.2)
    p = init(cell, jax.random.key(4), 1)
    ro = esn.Readout(
        jnp.asarray(rng.normal(size=(21, 1)).astype(np.float32) * 0.1),
        jnp.asarray([0.05], jnp.float32),
    )
    c = esn.ReservoirState(jnp.asarray(rng.uniform(-0.5, 0.5, 20).astype(np.float32)))
    u0 = jnp.asarray([0.3], jnp.float32)
    ys = jax.jit(lambda p, c, u0: esn.generate(cell, p, ro, c, u0, 6))(p, c, u0)
    w_in, w, b = (np.asarray(t, np.float64) for t in (p.w_in, p.w, p.b))
    x, u, ref = np.asarray(c.h, np.float64), np.array([0.3]), []
    for _ in range(6):
        x = np.tanh(u @ w_in + x @ w + b)
        out = np.r_[x, u] @ np.asarray(ro.w, np.float64) + float(ro.b[0])
        ref.append(out)
        u = out
    np.testing.assert_allclose(ys, np.stack(ref), rtol=1e-4, atol=1e-5)


def test_generate_with_output_feedback_matches_python_loop(rng):
    # Jaeger's setting: constant input, the loop closed only through the feedback weights
    H, O = 15, 2
    cell = esn.reservoir(H, density=0.4, spectral_radius=0.6, feedback_size=O, leak_rate=0.7)
    p = init(cell, jax.random.key(6), 1)
    ro = esn.Readout(
        jnp.asarray(rng.normal(size=(H, O)).astype(np.float32) * 0.2),
        jnp.asarray([0.1, -0.1], jnp.float32),
    )
    c = esn.ReservoirState(jnp.asarray(rng.uniform(-0.5, 0.5, H).astype(np.float32)))
    u, y0 = jnp.asarray([0.2], jnp.float32), jnp.asarray([0.3, -0.4], jnp.float32)
    ys = esn.generate(cell, p, ro, c, u, 5, y=y0, include_input=False, feed_input=False)
    w_in, w, b, w_fb = (np.asarray(t, np.float64) for t in (p.w_in, p.w, p.b, p.w_fb))
    x, y, ref = np.asarray(c.h, np.float64), np.asarray(y0, np.float64), []
    for _ in range(5):
        x = 0.3 * x + 0.7 * np.tanh(0.2 * w_in[0] + y @ w_fb + x @ w + b)
        y = x @ np.asarray(ro.w, np.float64) + np.asarray(ro.b, np.float64)
        ref.append(y)
    np.testing.assert_allclose(ys, np.stack(ref), rtol=1e-4, atol=1e-5)


def test_mackey_glass_series_properties():
    s = mackey_glass(600)
    assert s.shape == (600,) and s.dtype == np.float64
    # the tau=17 attractor stays within about [0.2, 1.4] and is not periodic at lag 17 or 50
    assert 0.2 < s.min() < 0.6 and 1.1 < s.max() < 1.45
    assert not np.allclose(s[50:], s[:-50], atol=0.05)
    # the series satisfies the delay equation: finite-difference derivative vs right-hand side
    fine = mackey_glass(400, sample_every=0.1, discard=300)
    deriv = (fine[2:] - fine[:-2]) / 0.2
    x, xd = fine[171:-1], fine[1:-171]
    rhs = 0.2 * xd / (1 + xd**10) - 0.1 * x
    np.testing.assert_allclose(deriv[170:], rhs, atol=1e-4)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="density"):
        esn.reservoir(10, density=0.0)
    with pytest.raises(ValueError, match="spectral_radius"):
        esn.reservoir(10, spectral_radius=-1.0)
    with pytest.raises(ValueError, match="leak_rate"):
        esn.reservoir(10, leak_rate=1.5)
    with pytest.raises(TypeError, match="input_scaling"):
        esn.reservoir(10, input_scaling="big")
    with pytest.raises(ValueError, match="feedback_size"):
        esn.reservoir(10, feedback_size=-1)
    with pytest.raises(ValueError, match="hidden_size"):
        esn.reservoir(0)
    with pytest.raises(ValueError, match="spectral radius 0"):
        esn.reservoir(1, density=1e-6).init(jax.random.key(0), 1)
    cell = esn.reservoir(8, feedback_size=1)
    p = cell.init(jax.random.key(0), 1)
    with pytest.raises(ValueError, match="teacher"):
        esn.drive(cell, p, jnp.zeros((5, 1)))
    with pytest.raises(ValueError, match="teacher: expected shape"):
        esn.drive(cell, p, jnp.zeros((5, 1)), teacher=jnp.zeros((4, 1)))
    with pytest.raises(TypeError, match="inputs"):
        esn.drive(cell, p, np.zeros((5, 1), np.int32))
    with pytest.raises(ValueError, match="washout"):
        esn.fit_readout(jnp.zeros((5, 3)), jnp.zeros((5, 1)), washout=5)
    with pytest.raises(ValueError, match="targets"):
        esn.fit_readout(jnp.zeros((5, 3)), jnp.zeros((4, 1)))
    with pytest.raises(ValueError, match="ridge"):
        esn.fit_readout(jnp.zeros((5, 3)), jnp.zeros((5, 1)), ridge=-1.0)
    with pytest.raises(ValueError, match="solver"):
        esn.fit_readout(jnp.zeros((5, 3)), jnp.zeros((5, 1)), solver="svd")
    with pytest.raises(ValueError, match="w: expected a square"):
        esn.spectral_radius(jnp.zeros((3, 4)))
    with pytest.raises(ValueError, match="tau"):
        mackey_glass(10, tau=17.05)
    with pytest.raises(ValueError, match="length"):
        mackey_glass(0)
    plain = esn.reservoir(8)
    pp = plain.init(jax.random.key(0), 1)
    ro = esn.Readout(jnp.zeros((9, 2)), jnp.zeros((2,)))
    with pytest.raises(ValueError, match="O must equal"):
        esn.generate(plain, pp, ro, plain.initial_carry(pp), jnp.zeros((1,)), 3)
    with pytest.raises(ValueError, match="y: the last output"):
        esn.generate(plain, pp, ro, plain.initial_carry(pp), jnp.zeros((1,)), 3, feed_input=False)
    with pytest.raises(ValueError, match="u: expected shape"):
        esn.generate(plain, pp, ro, plain.initial_carry(pp), jnp.zeros((2,)), 3)
    with pytest.raises(ValueError, match="steps"):
        esn.generate(plain, pp, ro, plain.initial_carry(pp), jnp.zeros((1,)), 0)
