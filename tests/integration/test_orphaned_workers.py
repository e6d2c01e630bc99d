"""A sweep driver killed with SIGKILL leaves no process-pool worker running on (it would hold run locks and keep training)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

DRIVER = textwrap.dedent("""\
    import sys, time
    from posthoc_vq.experiments.executors import ProcessExecutor

    def task(t):
        import os, time
        open(t["pidfile"], "w").write(str(os.getpid()))
        time.sleep(120)

    if __name__ == "__main__":
        ex = ProcessExecutor(1)
        for _ in ex.run(task, [{"pidfile": sys.argv[1]}]):
            pass
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead too
        return f.read().split(")")[-1].split()[0] != "Z"


def test_pool_workers_exit_when_the_driver_is_killed(tmp_path):
    script, pidfile = tmp_path / "driver.py", tmp_path / "worker.pid"
    script.write_text(DRIVER)
    driver = subprocess.Popen([sys.executable, str(script), str(pidfile)])
    deadline = time.time() + 60
    while not (pidfile.exists() and pidfile.read_text()) and time.time() < deadline:
        time.sleep(0.1)
    worker = int(pidfile.read_text())
    assert _alive(worker)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    deadline = time.time() + 15
    while _alive(worker) and time.time() < deadline:
        time.sleep(0.2)
    assert not _alive(worker), "the worker outlived its killed driver"
