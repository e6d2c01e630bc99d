"""Executors never oversubscribe the CPUs: workers x threads <= CPUs, workers lowered first, the budget recorded."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from posthoc_vq.errors import ConfigError
from posthoc_vq.experiments.executors import available_cpus, make_budgeted_executor, thread_budget
from posthoc_vq.waitpolicy import MARKER_ENV, OFF_ENV, USER_VARIABLES


@pytest.mark.parametrize("cpus,workers,threads,want", [
    (2, 2, 1, (2, 1)), (2, 2, 2, (1, 2)), (2, 4, 1, (2, 1)), (2, 1, 4, (1, 2)), (8, 3, 2, (3, 2)), (8, 8, 3, (2, 3)), (1, 2, 2, (1, 1)),
])
def test_budget_never_exceeds_the_cpus(cpus, workers, threads, want):
    b = thread_budget(workers, threads, cpus)
    assert (b.workers, b.threads) == want and b.workers * b.threads <= cpus
    assert b.as_dict()["asked_workers"] == workers and b.as_dict()["asked_threads"] == threads
    assert bool(b.notes) == ((b.workers, b.threads) != (workers, threads))


def test_budget_lowers_workers_before_threads():
    b = thread_budget(4, 2, 2)
    assert b.threads == 2 and b.workers == 1  # the spec's threads (and so its numbers) are kept


def test_budget_rejects_nonsense():
    with pytest.raises(ConfigError):
        thread_budget(0, 1, 2)
    with pytest.raises(ConfigError):
        thread_budget(1, 0, 2)


def test_local_executor_budget():
    ex, b = make_budgeted_executor("local", workers=5, threads=1, cpus=2)
    ex.close()
    assert b.workers == 1 and b.threads == 1
    assert available_cpus() >= 1


DRIVER = textwrap.dedent("""\
    import json, sys
    from posthoc_vq.experiments.executors import make_budgeted_executor

    def job(task):
        import os, time, torch
        from posthoc_vq.waitpolicy import wait_policy_record
        torch.set_num_threads(task["threads"])  # as run_job does
        time.sleep(0.5)  # overlap: so that parallel workers are seen
        return {"pid": os.getpid(), "threads": torch.get_num_threads(), "start": time.time() - 0.5, "end": time.time(),
                "env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}, "wait_policy": wait_policy_record()}

    if __name__ == "__main__":
        ex, budget = make_budgeted_executor(sys.argv[4], workers=int(sys.argv[1]), threads=int(sys.argv[2]), cpus=int(sys.argv[3]))
        tasks = [{"i": i, "threads": budget.threads} for i in range(4)]
        try:
            out = [r for _, r, err in ex.run(job, tasks)]
        finally:
            ex.close()
        print(json.dumps({"budget": budget.as_dict(), "jobs": out}))
""")


def _drive(tmp_path, workers, threads, cpus, extra_env, executor="process"):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {k: v for k, v in os.environ.items() if k not in (*USER_VARIABLES, OFF_ENV, MARKER_ENV)} | {"OMP_NUM_THREADS": "1"} | extra_env
    out = subprocess.run([sys.executable, str(script), str(workers), str(threads), str(cpus), executor], env=env, capture_output=True, text=True,
                         timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _max_parallel(jobs):
    events = sorted([(j["start"], 1) for j in jobs] + [(j["end"], -1) for j in jobs])
    now = peak = 0
    for _, d in events:
        now += d
        peak = max(peak, now)
    return peak


@pytest.mark.parametrize("user", [{}, {"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "777"}])
def test_process_executor_sets_budgeted_threads_and_keeps_the_users_wait_policy(tmp_path, user):
    got = _drive(tmp_path, workers=4, threads=2, cpus=2, extra_env=user)
    assert got["budget"]["workers"] == 1 and got["budget"]["threads"] == 2
    assert len({j["pid"] for j in got["jobs"]}) == 1  # one worker: 1 x 2 threads on 2 CPUs
    assert all(j["threads"] == 2 for j in got["jobs"])
    for j in got["jobs"]:
        if user:
            assert {k: v for k, v in j["env"].items() if v is not None} == user and j["wait_policy"]["source"] == "user"
        else:
            assert j["wait_policy"]["source"] == "default" and j["wait_policy"]["effective"] is True


def test_process_executor_parallel_workers_within_the_cpus(tmp_path):
    got = _drive(tmp_path, workers=2, threads=1, cpus=2, extra_env={})
    assert got["budget"]["workers"] == 2 and all(j["threads"] == 1 for j in got["jobs"])
    assert _max_parallel(got["jobs"]) * 1 <= 2


def test_ray_executor_sets_budgeted_threads_and_never_oversubscribes(tmp_path):
    got = _drive(tmp_path, workers=4, threads=2, cpus=2, extra_env={}, executor="ray")
    assert got["budget"]["workers"] == 1 and got["budget"]["threads"] == 2  # a local cluster of 1 x 2 CPUs
    assert all(j["threads"] == 2 for j in got["jobs"]) and len(got["jobs"]) == 4
    assert _max_parallel(got["jobs"]) * 2 <= 2
