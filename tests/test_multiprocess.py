"""Several processes on localhost as one JAX program (jax.distributed + gloo), started by
jaxrnn.launch: the data-parallel run must compute what one process computes over the same global
batches, and a failure of any process must end the whole run quickly with a message naming it.

Every subprocess run is bounded (launch(timeout=...)); ports are chosen free by the launcher."""

import io
import os
import sys
import time

import jax
import numpy as np
import pytest

from jaxrnn import launch as launch_cli
from jaxrnn import parallel
from jaxrnn.parallel import launch as launcher

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "_multiprocess_worker.py")
ENV = {"PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
       "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
TIMEOUT = 90


def run(command, n, timeout=TIMEOUT):
    out = io.StringIO()
    result = launcher.launch(command, n, timeout=timeout, env=ENV, output=out, grace=2.0)
    return result, out.getvalue()


def load(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def reference():
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    try:
        import _multiprocess_worker as worker
    finally:
        sys.path.pop(0)
    return worker.train_single(4)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``{n: (out_dir, log)}`` of the worker's 4-step run on n processes, started on first use;
    the 2-process run also saves a sharded checkpoint after step 2 (``out_dir / "ck"``)."""
    done = {}

    def get(n):
        if n not in done:
            out = tmp_path_factory.mktemp(f"run{n}")
            extra = ["--checkpoint-dir", str(out / "ck"), "--save-at", "2"] if n == 2 else []
            result, log = run([sys.executable, WORKER, str(out), "--steps", "4", *extra], n)
            assert result.returncode == 0, log
            done[n] = (out, log)
        return done[n]

    return get


@pytest.mark.parametrize("n", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_processes_train_as_one_program(runs, reference, n):
    tmp_path, log = runs(n)
    ref_losses, ref_params = reference
    rows = []
    for rank in range(n):
        got = load(tmp_path / f"rank{rank}.npz")
        assert int(got["process_count"]) == n and int(got["device_count"]) == n
        rows.append(tuple(got["local_rows"]))
        assert bool(got["same_feed"])  # shard_batch of the local part == of the global batch
        # Every process sees the global loss and ends with the same (replicated) parameters.
        np.testing.assert_allclose(got["losses"], ref_losses, rtol=0, atol=1e-5)
        for name, value in ref_params.items():
            np.testing.assert_allclose(got["param" + name], value, rtol=0, atol=1e-5,
                                       err_msg=f"rank {rank} {name}")
    # ... while each fed a different block of the global batch of 8.
    per = 8 // n
    assert rows == [(r * per, (r + 1) * per) for r in range(n)]
    assert f"[rank {n - 1}] rank {n - 1} done" in log


@pytest.mark.parametrize("how", [pytest.param("raise", marks=pytest.mark.slow), "exit"])
def test_one_failing_process_ends_the_run(tmp_path, how):
    result, log = run([sys.executable, WORKER, str(tmp_path), "--steps", "50",
                       "--fail-rank", "1", "--fail-how", how], 2)
    assert result.returncode != 0 and result.returncode != launcher.TIMEOUT_STATUS, log
    assert result.failed_rank == 1
    assert "rank 1 of 2 exited with status" in result.message
    if how == "raise":
        assert "[rank 1] RuntimeError: deliberate failure in rank 1" in log
    else:
        assert result.returncodes[1] == 3
    # The healthy process was stopped (it would otherwise wait for its peer in a collective).
    assert result.returncodes[0] is not None and not (tmp_path / "rank0.npz").exists()


def test_launcher_stops_the_others_and_names_the_failed_rank(tmp_path):
    # Rank 2 fails only once its peers have said hello (each then leaves a file in DIR): the
    # launcher stops the peers as soon as rank 2 has exited, before a peer started late could
    # print.
    code = ("import os, sys, time\n"
            "d, rank = sys.argv[1], int(os.environ['JAXRNN_PROCESS_ID'])\n"
            "print('hello from', rank, os.environ['JAXRNN_NUM_PROCESSES'],"
            " os.environ['JAXRNN_COORDINATOR'].startswith('127.0.0.1:'))\n"
            "open(os.path.join(d, str(rank)), 'w').close()\n"
            "deadline = time.monotonic() + 25\n"
            "while rank == 2 and not all(os.path.exists(os.path.join(d, str(r))) for r in (0, 1))"
            " and time.monotonic() < deadline:\n"
            "    time.sleep(0.01)\n"
            "sys.exit(5) if rank == 2 else time.sleep(60)\n")
    result, log = run([sys.executable, "-c", code, str(tmp_path)], 3, timeout=30)
    assert result.returncode == 5 and result.failed_rank == 2, log
    assert "rank 2 of 3 exited with status 5; stopping the 2 other" in result.message
    assert result.returncodes[0] < 0 and result.returncodes[1] < 0  # terminated by a signal
    for rank in range(3):
        assert f"[rank {rank}] hello from {rank} 3 True" in log


# Rank 2 fails; ranks 0 and 1 fail too, at once after it (as a peer does whose collective lost
# it): each publishes its pid in DIR, and the peers spin until rank 2 is dead, then exit 7.
ECHO_FAILURE = (
    "import os, sys, time\n"
    "d, rank = sys.argv[1], int(os.environ['JAXRNN_PROCESS_ID'])\n"
    "open(os.path.join(d, f'{rank}.tmp'), 'w').write(str(os.getpid()))\n"
    "os.replace(os.path.join(d, f'{rank}.tmp'), os.path.join(d, f'{rank}.pid'))\n"
    "deadline = time.monotonic() + 60\n"
    "def pid(r):\n"
    "    try:\n"
    "        return int(open(os.path.join(d, f'{r}.pid')).read())\n"
    "    except FileNotFoundError:\n"
    "        return None\n"
    "def dead(p):\n"
    "    try:\n"
    "        return open(f'/proc/{p}/stat').read().rpartition(')')[2].split()[0] in 'ZX'\n"
    "    except FileNotFoundError:\n"
    "        return True\n"
    "if rank == 2:\n"
    "    while (pid(0) is None or pid(1) is None) and time.monotonic() < deadline:\n"
    "        time.sleep(0.001)\n"
    "    os._exit(5)\n"
    "while (pid(2) is None or not dead(pid(2))) and time.monotonic() < deadline:\n"
    "    time.sleep(0.0002)\n"
    "os._exit(7 if time.monotonic() < deadline else 9)\n")


def _all_zombies(directory, n):
    for rank in range(n):
        try:
            pid = int((directory / f"{rank}.pid").read_text())
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rpartition(")")[2].split()[0]
        except (FileNotFoundError, ValueError):
            return False
        if state != "Z":
            return False
    return True


@pytest.mark.skipif(not os.path.isdir("/proc/self") or not hasattr(os, "pidfd_open"),
                    reason="the children watch each other through /proc (Linux)")
@pytest.mark.parametrize("launcher_looks", ["at once", "after all have died"])
def test_the_failed_rank_is_the_one_that_exited_first(tmp_path, monkeypatch, launcher_looks):
    """The peers' echo failures come a moment after the first; the launcher must name the
    first by when it exited, also when it looks only after all have died (a loaded machine:
    its waiter ran late). Naming whichever exit the launcher happened to see first named rank 0
    once here when rank 1 had failed (issue 25)."""
    if launcher_looks == "after all have died":
        real = launcher._epoll_wait

        def late(poller, timeout):
            deadline = time.monotonic() + 60
            while not _all_zombies(tmp_path, 3) and time.monotonic() < deadline:
                time.sleep(0.01)
            return real(poller, timeout)

        monkeypatch.setattr(launcher, "_epoll_wait", late)
    result, log = run([sys.executable, "-c", ECHO_FAILURE, str(tmp_path)], 3, timeout=60)
    assert result.failed_rank == 2 and result.returncode == 5, (result, log)
    assert "rank 2 of 3 exited with status 5" in result.message
    if launcher_looks == "after all have died":
        assert result.returncodes == [7, 7, 5]  # the peers failed too, before anyone looked


def test_launcher_timeout_stops_everything():
    result, _ = run([sys.executable, "-c", "import time; time.sleep(60)"], 2, timeout=1)
    assert result.returncode == launcher.TIMEOUT_STATUS and result.failed_rank is None
    assert "timed out after 1 s" in result.message
    assert all(c is not None and c < 0 for c in result.returncodes)


def test_launcher_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_processes"):
        launcher.launch(["true"], 0)
    with pytest.raises(ValueError, match="command"):
        launcher.launch([], 2)
    with pytest.raises(ValueError, match="timeout"):
        launcher.launch(["true"], 2, timeout=0)
    with pytest.raises(SystemExit):
        launch_cli.main(["-n", "2"])  # no command after --
    assert launcher._resolve(["jaxrnn", "train"]) == [sys.executable, "-m", "jaxrnn", "train"]


CLI_ARGS = ["--task", "digits", "--limit", "120", "--batch-size", "16", "--hidden", "16",
            "--no-progress"]


# ``jaxrnn ARGS...`` with every os.rename / os.replace of the process recorded (its destination)
# in WRITES/rank{i}: how a file or directory is committed, so it shows who wrote what.
RECORD_MOVES = (
    "import os, sys\n"
    "log = open(os.path.join(sys.argv[1], 'rank' + os.environ['JAXRNN_PROCESS_ID']), 'a')\n"
    "def recorded(real):\n"
    "    def move(src, dst, *args, **kwargs):\n"
    "        log.write(os.path.abspath(os.fspath(dst)) + '\\n')\n"
    "        log.flush()\n"
    "        return real(src, dst, *args, **kwargs)\n"
    "    return move\n"
    "os.rename, os.replace = recorded(os.rename), recorded(os.replace)\n"
    "from jaxrnn.cli import main\n"
    "sys.exit(main(sys.argv[2:]))\n"
)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """One epoch of ``jaxrnn train`` under ``jaxrnn.launch -n 2``: ``(out_dir, log, moves)``,
    ``moves[i]`` the destinations of every rename process ``i`` made."""
    root = tmp_path_factory.mktemp("cli")
    out, writes = root / "run", root / "writes"
    writes.mkdir()
    result, log = run([sys.executable, "-c", RECORD_MOVES, str(writes), "train", *CLI_ARGS,
                       "--epochs", "1", "--out", str(out)], 2)
    # a clean exit of both processes: status 0 and no native stack from either at shutdown
    assert result.returncode == 0 and result.returncodes == [0, 0], log
    assert "Traceback" not in log and "*** Check failure" not in log, log
    moves = [(writes / f"rank{i}").read_text().split() if (writes / f"rank{i}").exists()
             else [] for i in range(2)]
    return out, log, moves


@pytest.mark.slow
def test_cli_train_with_two_processes(cli_run):
    out, log, _ = cli_run
    assert "[rank 0] distributed: 2 processes, 2 devices" in log
    assert "[rank 0] test accuracy:" in log
    assert "[rank 1] test accuracy" not in log and "[rank 1] epoch" not in log
    # Only process 0 writes into --out (the model, the curves, the checkpoint).
    assert (out / "model" / "model.json").is_file() and (out / "digits_curves.png").is_file()
    assert (out / "checkpoints").is_dir()


def test_two_processes_leave_one_model_directory_written_by_process_0(cli_run, tmp_path,
                                                                      capsys):
    """Issue 27: both processes used to save OUT/model (one run in two left a directory that
    did not load). Process 0 alone commits anything into --out; the one model directory left
    there loads and scores what the training run printed."""
    from jaxrnn.cli import main

    out, log, moves = cli_run
    inside = lambda path: os.path.commonpath([path, str(out)]) == str(out)  # noqa: E731
    assert not [m for m in moves[1] if inside(m)], moves[1]
    assert str(out / "model" / "model.json") in moves[0]  # the commit of a model directory
    assert [p.name for p in out.iterdir() if "model" in p.name] == ["model"]  # no temporaries
    trained = [ln.split("] ", 1)[1] for ln in log.splitlines() if "] test accuracy:" in ln]
    assert main(["evaluate", *CLI_ARGS, "--model", str(out / "model"),
                 "--out", str(tmp_path)]) == 0
    evaluated = [ln for ln in capsys.readouterr().out.splitlines()
                 if ln.startswith("test accuracy:")]
    assert len(trained) == 1 and len(evaluated) == 1
    assert evaluated[0].split(" (")[0] == trained[0].split(" (")[0]


def test_a_coordinator_port_in_use_is_one_line_naming_it(tmp_path):
    """Issue 27: process 0 died of SIGSEGV when its coordinator port was taken. Now the port is
    checked first: one line naming it and the option, status 2, for the CLI's process 0 and for
    the launcher's --port."""
    import socket
    import subprocess

    env = {**os.environ, **ENV}
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "jaxrnn", "train", *CLI_ARGS, "--epochs", "1",
             "--num-processes", "2", "--process-id", "0", "--coordinator", f"127.0.0.1:{port}",
             "--out", str(tmp_path / "run")], env=env, capture_output=True, text=True,
            timeout=TIMEOUT)
        launched = subprocess.run(
            [sys.executable, "-m", "jaxrnn.launch", "-n", "2", "--port", str(port), "--",
             sys.executable, "-c", "pass"], env=env, capture_output=True, text=True,
            timeout=TIMEOUT)
    for p, option in ((proc, "--coordinator"), (launched, "--port")):
        assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1, p.stderr
        assert f"port {port} is already in use" in lines[0] or \
            f"port: {port} is already in use" in lines[0], lines[0]
        assert option in lines[0], lines[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_cli_resume_with_two_processes_continues_like_one_process(cli_run, tmp_path, capsys):
    from jaxrnn.cli import main

    out, _, _ = cli_run
    result, log = run(["jaxrnn", "train", *CLI_ARGS, "--epochs", "2", "--resume",
                       "--out", str(out)], 2)
    assert result.returncode == 0, log
    assert "[rank 0] resumed from" in log and "(epoch 2, batch 0)" in log
    resumed = [ln.split("] ", 1)[1] for ln in log.splitlines() if "] epoch 2/2" in ln]
    # The reference: two epochs without interruption in this single process.
    assert main(["train", *CLI_ARGS, "--epochs", "2", "--out", str(tmp_path / "one")]) == 0
    single = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch 2/2")]
    assert len(resumed) == 1 and len(single) == 1
    strip = lambda line: line.split("  epoch_time")[0]  # noqa: E731 -- the timing differs
    assert strip(resumed[0]) == strip(single[0])


# ``jaxrnn ARGS...`` interrupted (KeyboardInterrupt, as from Ctrl-C) just before training update
# number STOP (1-based) in every process: each compiled train step (one that donates its state)
# counts its calls.
INTERRUPT_AT = (
    "import sys\n"
    "from jaxrnn import parallel\n"
    "stop, real, calls = int(sys.argv[1]), parallel.data_parallel_jit, [0]\n"
    "def counted(fn, mesh, **kwargs):\n"
    "    call = real(fn, mesh, **kwargs)\n"
    "    if not kwargs.get('donate_argnums'):\n"
    "        return call\n"
    "    def step(*args):\n"
    "        calls[0] += 1\n"
    "        if calls[0] == stop:\n"
    "            raise KeyboardInterrupt\n"
    "        return call(*args)\n"
    "    step.mesh = mesh\n"
    "    return step\n"
    "parallel.data_parallel_jit = counted\n"
    "from jaxrnn.cli import main\n"
    "sys.exit(main(sys.argv[2:]))\n"
)


def _leaves(model_dir):
    from jaxrnn.tasks import modeldir

    return [np.asarray(x) for x in jax.tree_util.tree_leaves(
        modeldir.load(str(model_dir), task="digits").params)]


@pytest.mark.slow
def test_an_interrupted_two_process_run_resumes_to_the_uninterrupted_one(tmp_path):
    """Issue 27: a two-process run interrupted in the middle of its second epoch (update 9 of
    12: 81 examples, batches of 16) and resumed ends with the weights of the same run
    uninterrupted, bit for bit; every run's processes exit cleanly (0, or 130 when
    interrupted), no traceback or native stack."""
    args = [*CLI_ARGS, "--epochs", "2"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    result, log = run(["jaxrnn", "train", *args, "--out", str(whole)], 2)
    assert result.returncode == 0 and result.returncodes == [0, 0], log
    result, log = run([sys.executable, "-c", INTERRUPT_AT, "9", "train", *args,
                       "--out", str(cut)], 2)
    assert result.returncode == 130 and set(result.returncodes) <= {130, None, -15}, log
    assert not (cut / "model").exists()  # it stopped before the end
    result, resumed = run(["jaxrnn", "train", *args, "--resume", "--out", str(cut)], 2)
    assert result.returncode == 0 and result.returncodes == [0, 0], resumed
    assert "[rank 0] resumed from" in resumed and "(epoch 2, batch 2)" in resumed, resumed
    for text in (log, resumed):
        assert "Traceback" not in text and "*** Check failure" not in text, text
    for a, b in zip(_leaves(whole / "model"), _leaves(cut / "model"), strict=True):
        np.testing.assert_array_equal(a, b)


def test_settings_from_env():
    env = {parallel.ENV_COORDINATOR: "127.0.0.1:5", parallel.ENV_NUM_PROCESSES: "2",
           parallel.ENV_PROCESS_ID: "1"}
    assert parallel.settings_from_env(env) == {"coordinator": "127.0.0.1:5", "num_processes": "2",
                                           "process_id": "1"}
    assert parallel.settings_from_env({}) is None
    with pytest.raises(ValueError, match="JAXRNN_PROCESS_ID"):
        parallel.settings_from_env({parallel.ENV_COORDINATOR: "127.0.0.1:5",
                                parallel.ENV_NUM_PROCESSES: "2"})


@pytest.mark.parametrize("kwargs, match", [
    ({"coordinator": "127.0.0.1:1", "num_processes": 2}, "give all three"),
    ({"coordinator": "no-port", "num_processes": 2, "process_id": 0}, "HOST:PORT"),
    ({"coordinator": "127.0.0.1:1", "num_processes": 2, "process_id": 2}, r"0 \.\. 1"),
    ({"coordinator": "127.0.0.1:1", "num_processes": 0, "process_id": 0}, "num_processes"),
])
def test_initialize_rejects_bad_arguments_before_connecting(kwargs, match):
    with pytest.raises(ValueError, match=match):
        parallel.initialize(**kwargs)


def test_local_rows_of_a_single_process_mesh():
    mesh = parallel.make_mesh()
    n = mesh.devices.size
    assert parallel.local_rows(4 * n, mesh) == slice(0, 4 * n)
    if n > 1:
        with pytest.raises(ValueError, match="divide evenly"):
            parallel.local_rows(4 * n + 1, mesh)
    batch = {"x": np.arange(4 * n)}
    np.testing.assert_array_equal(parallel.local_shard(batch, mesh)["x"], batch["x"])


@pytest.mark.slow
def test_sharded_checkpoint_resumes_bit_exact_and_restores_into_one_process(
        tmp_path, runs, reference):
    from jaxrnn.io.sharded_store import latest_step, restore_state

    a, _ = runs(2)  # saved its state after step 2 from both processes
    ck, b = a / "ck", tmp_path / "b"
    b.mkdir()
    assert latest_step(ck) == 2
    result, log = run([sys.executable, WORKER, str(b), "--steps", "4", "--checkpoint-dir",
                       str(ck), "--resume"], 2)
    assert result.returncode == 0, log
    for rank in range(2):
        whole, resumed = load(a / f"rank{rank}.npz"), load(b / f"rank{rank}.npz")
        # The resumed run continues exactly where the uninterrupted one was after step 2.
        np.testing.assert_array_equal(resumed["losses"], whole["losses"][2:])
        for name in whole:
            if name.startswith("param"):
                np.testing.assert_array_equal(resumed[name], whole[name], err_msg=name)

    # The checkpoint of the 2-process run restores into this single process and continues
    # there: the same final parameters as the uninterrupted runs (up to summation order).
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    try:
        import _multiprocess_worker as worker
    finally:
        sys.path.pop(0)
    fresh, step = worker.setup(None)
    state = restore_state(ck, fresh)
    assert int(state.step) == 2 and state.params is not fresh.params
    for batch in worker.global_batches(4)[2:]:
        state, _ = step(state, batch)
    ref_params = reference[1]
    got = worker.flat_params(state.params)
    whole = load(a / "rank0.npz")
    for name, value in ref_params.items():
        np.testing.assert_allclose(got[name], value, rtol=0, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(got[name], whole["param" + name], rtol=0, atol=1e-5)


def test_sharded_checkpoint_errors(tmp_path, reference):
    from jaxrnn.io.sharded_store import restore_state, save_state

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    try:
        import _multiprocess_worker as worker
    finally:
        sys.path.pop(0)
    state, _ = worker.setup(None)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        restore_state(tmp_path / "none", state)
    with pytest.raises(TypeError, match="state: expected a TrainState"):
        save_state(tmp_path / "ck", {"params": 1})
    assert save_state(tmp_path / "ck", state) == 0
    with pytest.raises(FileNotFoundError, match="no step 7"):
        restore_state(tmp_path / "ck", state, step=7)
    other = state._replace(params=jax.tree_util.tree_map(
        lambda x: np.zeros((*x.shape, 2), x.dtype), state.params))
    with pytest.raises(ValueError, match="in the target but"):
        restore_state(tmp_path / "ck", other)


EXPLICIT = (
    "import os, sys\n"
    "i, n, c = (os.environ.pop(k) for k in ('JAXRNN_PROCESS_ID', 'JAXRNN_NUM_PROCESSES',"
    " 'JAXRNN_COORDINATOR'))\n"
    "from jaxrnn.cli import main\n"
    "sys.exit(main(sys.argv[1:] + ['--num-processes', n, '--process-id', i,"
    " '--coordinator', c]))\n"
)


@pytest.mark.slow
def test_cli_options_name_the_processes(tmp_path, cli_run):
    """The multi-host form (--num-processes/--process-id/--coordinator, no JAXRNN_* variables)
    trains the same as the launcher's environment variables do."""
    result, log = run([sys.executable, "-c", EXPLICIT, "train", *CLI_ARGS, "--epochs", "1",
                       "--out", str(tmp_path / "run")], 2)
    assert result.returncode == 0, log
    assert "[rank 0] distributed: 2 processes, 2 devices" in log
    epoch = [ln.split("epoch_time")[0] for ln in log.splitlines() if "] epoch 1/1" in ln]
    assert epoch == [ln.split("epoch_time")[0] for ln in cli_run[1].splitlines()
                     if "] epoch 1/1" in ln]


def test_cli_rejects_an_incomplete_process_group(capsys):
    from jaxrnn.cli import main

    assert main(["train", "--task", "digits", "--num-processes", "2", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "--num-processes, --process-id, --coordinator: give all three" in err
