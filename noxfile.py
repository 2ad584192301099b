"""Sessions: ``nox -s tests``, ``nox -s lint``, ``nox -s bench [-- --quick] [-- --contended]``,
``nox -s report`` (issue 26's report for this CPU: ``benchmarks/run_report.sh``)."""

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session):
    session.install("-e", ".[test]")
    session.run("pytest", "-q", "-n", "2", *session.posargs)


@nox.session
def lint(session):
    session.install("ruff>=0.4")
    session.run("ruff", "check", "jaxrnn", "tests", "benchmarks", "noxfile.py")


def _install_bench(session):
    """The bench extras, except under ``--no-venv`` (``nox -s bench --no-venv -- --quick``: this
    environment as it is, for a machine that cannot download the packages)."""
    if session.venv_backend != "none":
        session.install("-e", ".[bench]")


@nox.session
def bench(session):
    """The benchmark harness; ``nox -s bench -- --quick`` for A and B against Flax and PyTorch
    (a few minutes), ``-- --contended`` to time every row also beside one competing busy
    process, ``-- --kernel-threads 1,auto`` to repeat the jaxrnn worker per kernel team size,
    ``-- --repeat 3`` for medians of three runs. Raw results go to ``bench-results/``."""
    _install_bench(session)
    session.run("python", "-m", "benchmarks", *session.posargs, env={"KERAS_BACKEND": "jax"})


@nox.session
def report(session):
    """Issue 26's report (about 15 minutes on 2 cores): rewrites this CPU's section of
    BENCHMARKS.md and ``benchmarks/summaries/``; ``-- --smoke`` checks the plumbing only."""
    _install_bench(session)
    session.run("python", "-m", "benchmarks", "--report", *session.posargs,
                env={"KERAS_BACKEND": "jax"})
