"""Sessions: ``nox -s tests``, ``nox -s lint``, ``nox -s bench [-- --quick] [-- --contended]``."""

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


@nox.session
def bench(session):
    """The benchmark harness; ``nox -s bench -- --quick`` for the two-minute version,
    ``-- --contended`` to time every cell also beside one competing busy process,
    ``-- --kernel-threads 1,auto`` to repeat the jaxrnn rows per kernel team size."""
    session.install("-e", ".[bench]")
    session.run("python", "-m", "benchmarks", *session.posargs, env={"KERAS_BACKEND": "jax"})
