"""The kernels' builds: warning-free, every ISA path (SSE, AVX2, AVX-512) compiled and run here
against the plain scan, the sources compiling for aarch64, and the products' fixed sum order.

Each ISA build is cached separately (``JAXRNN_KERNEL_MARCH``), so only a fresh cache pays its
compile; a shape per build reaches the vector tiles and the scalar tail of every kernel.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrnn import kernels
from jaxrnn.kernels import ops

pytestmark = pytest.mark.skipif(kernels._compiler() is None, reason="no C++ compiler")


def test_the_default_build_is_warning_free():
    # -Wall -Wextra with the XLA headers as system headers: the compiler's whole output is kept
    # beside the library (kernels.build_log); a warning here is a defect, like an error.
    assert "-Wall" in kernels._flags() and "-Wextra" in kernels._flags()
    assert "-w" not in kernels._flags()
    log = kernels.build_log()
    assert "warning" not in log, log[-3000:]


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    match = re.search(r"^flags\s*:(.*)$", text, re.M)
    return set(match.group(1).split()) if match else set()


# -march -> (the CPU flags it needs to run, the vector width it must give)
ISAS = {
    "x86-64-v2": ({"sse4_2", "popcnt"}, 4),
    "x86-64-v3": ({"avx2", "fma", "bmi2"}, 8),
    "x86-64-v4": ({"avx512f", "avx512bw", "avx512vl", "avx512dq"}, 16),
}

# Builds the library for argv[1] (JAXRNN_KERNEL_MARCH), then every kernel cell's forward values
# (with a NaN in one row) and gradients against the plain scan; prints the build's lanes.
_ISA_SCRIPT = r"""
import jax, jax.numpy as jnp, numpy as np
import jaxrnn
from jaxrnn import kernels
assert kernels.available(), kernels.status()
assert "warning" not in kernels.build_log(), kernels.build_log()[-3000:]
B, T, F, H = 9, 7, 3, 40  # 40 units: two-vector tiles, one-vector tiles and a scalar tail
cells = {"lstm": jaxrnn.lstm(H), "gru": jaxrnn.gru(H), "elman": jaxrnn.elman(H),
         "jordan": jaxrnn.jordan(H, 21), "min_gru": jaxrnn.min_gru(H),
         "min_lstm": jaxrnn.min_lstm(H)}
xs = jax.random.normal(jax.random.key(1), (B, T, F))
xs_nan = xs.at[2, 3, 1].set(jnp.nan)
lengths = jnp.array([7, 0, 5, 7, 1, 3, 7, 6, 2])
for name, cell in cells.items():
    p = cell.init(jax.random.key(0), F)
    for impl_xs in (xs, xs_nan):
        got = jax.jit(lambda p, x, c=cell: jaxrnn.run(c, p, x, lengths=lengths, impl="kernel"))(
            p, impl_xs)
        want = jax.jit(lambda p, x, c=cell: jaxrnn.run(c, p, x, lengths=lengths, impl="scan"))(
            p, impl_xs)
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
            a, b = np.asarray(a), np.asarray(b)
            assert np.array_equal(np.isnan(a), np.isnan(b)), name
            np.testing.assert_allclose(a, b, atol=3e-5, rtol=1e-4, err_msg=name)
    def loss(p, impl, c=cell):
        return jnp.sum(jnp.sin(jaxrnn.run(c, p, xs, lengths=lengths, impl=impl)[1]))
    gk = jax.jit(jax.grad(lambda p: loss(p, "kernel")))(p)
    gs = jax.jit(jax.grad(lambda p: loss(p, "scan")))(p)
    for a, b in zip(jax.tree_util.tree_leaves(gk), jax.tree_util.tree_leaves(gs)):
        scale = float(jnp.abs(b).max()) + 1e-6
        np.testing.assert_allclose(a / scale, b / scale, atol=3e-5, err_msg=name)
print("lanes", kernels.build_info()["lanes"])
"""


@pytest.mark.skipif(not kernels._is_x86(), reason="the x86 ISA levels need an x86 CPU")
@pytest.mark.parametrize("march", sorted(ISAS))
def test_each_isa_build_gives_the_plain_scan_values(march):
    needs, lanes = ISAS[march]
    missing = needs - _cpu_flags()
    if missing:
        pytest.skip(f"this CPU lacks {sorted(missing)}: a {march} build cannot run here")
    if lanes == int(kernels.build_info()["lanes"]):
        march = "native"  # the default build is this ISA's: the same library, no extra compile
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAXRNN_KERNEL_MARCH": march}
    env.pop("JAXRNN_KERNEL_THREADS", None)
    run = subprocess.run([sys.executable, "-c", _ISA_SCRIPT], capture_output=True, text=True,
                         timeout=900, env=env)
    assert run.returncode == 0, run.stderr[-4000:]
    assert run.stdout.split()[-2:] == ["lanes", str(lanes)], run.stdout


def test_the_march_names_its_own_cache_entry(monkeypatch):
    cxx = kernels._compiler()
    default = kernels._library_path(cxx)
    monkeypatch.setenv("JAXRNN_KERNEL_MARCH", "x86-64-v2")
    v2 = kernels._library_path(cxx)
    monkeypatch.setenv("JAXRNN_KERNEL_SANITIZE", "thread")
    tsan = kernels._library_path(cxx)
    assert len({default, v2, tsan}) == 3
    assert "x86-64-v2" in v2.name and "tsan" in tsan.name
    assert "-march=x86-64-v2" in kernels._flags() and "-fsanitize=thread" in kernels._flags()
    monkeypatch.setenv("JAXRNN_KERNEL_SANITIZE", "nope")
    with pytest.raises(ValueError, match="JAXRNN_KERNEL_SANITIZE"):
        kernels.sanitizer()


# The apt package that gives it on Debian/Ubuntu: g++-aarch64-linux-gnu (or the whole
# crossbuild-essential-arm64).
_CROSS = "aarch64-linux-gnu-g++"


# outer.cc includes every shared header: the default run compiles it, the slow run every unit.
@pytest.mark.skipif(shutil.which(_CROSS) is None,
                    reason=f"no {_CROSS} (apt-get install -y g++-aarch64-linux-gnu)")
@pytest.mark.parametrize("source", [
    pytest.param(src.name, marks=() if src.name == "outer.cc" else pytest.mark.slow)
    for src in kernels.SOURCES])
def test_the_sources_compile_for_aarch64_warning_free(source):
    # The products and activations are GCC vector extensions, the team code Linux calls
    # aarch64 has too: every unit must compile there, warning-free, as it does here.
    import jax.ffi

    with tempfile.TemporaryDirectory() as tmp:
        run = subprocess.run(
            [_CROSS, *kernels.CXXFLAGS, "-O0", "-Werror", "-isystem", jax.ffi.include_dir(),
             "-c", str(kernels.HERE / source), "-o", str(Path(tmp) / "unit.o")],
            capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and not run.stderr.strip(), run.stderr[-3000:]


# The products around the recurrences (the input gradient, minGRU/minLSTM's projection, the
# bias gradients) against NumPy float64: odd sizes reach the row, column and scalar tails,
# K < Ka the product over a prefix of each row, and the large ones a team.
@pytest.mark.parametrize("M,Ka,K,N", [(1, 3, 3, 5), (13, 40, 24, 37), (70, 96, 96, 64),
                                      (2000, 48, 32, 160)])
@pytest.mark.parametrize("transposed", [False, True])
def test_rows_times_matches_numpy(M, Ka, K, N, transposed):
    rng = np.random.default_rng(M + K)
    a = rng.standard_normal((M, Ka)).astype(np.float32)
    w = rng.standard_normal((N, K) if transposed else (K, N)).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    w64 = (w.T if transposed else w).astype(np.float64)
    want = a[:, :K].astype(np.float64) @ w64
    got = jax.jit(lambda a, w: ops._rows_times(a, w, transposed=transposed))(a, w)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    got_b = jax.jit(lambda a, w, b: ops._rows_times(a, w, b, transposed=transposed))(a, w, bias)
    np.testing.assert_allclose(got_b, want + bias, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("M,N", [(1, 3), (37, 21), (3000, 400)])
def test_column_sums_match_numpy(M, N):
    a = np.random.default_rng(M).standard_normal((M, N)).astype(np.float32)
    a[min(5, M - 1), N // 2] = np.nan
    got = np.asarray(jax.jit(ops._column_sums)(a))
    want = a.astype(np.float64).sum(axis=0)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def test_the_products_refuse_mismatched_shapes_by_name():
    with pytest.raises(jax.errors.JaxRuntimeError,
                       match=r"jaxrnn_rows_times: a must have at least K = 5 columns, got 4"):
        jax.block_until_ready(ops._rows_times(jnp.ones((3, 4)), jnp.ones((5, 2))))
    with pytest.raises(jax.errors.JaxRuntimeError,
                       match=r"jaxrnn_rows_times: bias must be \(N\) = \(2,\), got \(3,\)"):
        jax.block_until_ready(ops._rows_times(jnp.ones((3, 4)), jnp.ones((4, 2)), jnp.ones(3)))
