"""The OpenMP wait-policy default: passive on a busy CPU, the runtime's spin on a quiet one; set before torch loads,
never over a user's setting, inherited by child processes, recorded in provenance."""

import json
import os
import subprocess
import sys

import pytest

from posthoc_vq import waitpolicy
from posthoc_vq.waitpolicy import BUSY_OTHERS, MARKER_ENV, OFF_ENV, USER_VARIABLES, apply_default

PROBE = """
import json, os, sys
{first}
import posthoc_vq
from posthoc_vq.provenance import provenance
print(json.dumps({{"env": {{k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")}},
                  "record": provenance()["wait_policy"]}}))
"""


def _probe(extra_env: dict[str, str], first: str = "") -> dict:
    env = {k: v for k, v in os.environ.items() if k not in (*USER_VARIABLES, OFF_ENV, MARKER_ENV)}
    env |= {"OMP_NUM_THREADS": "1", **extra_env}
    out = subprocess.run([sys.executable, "-c", PROBE.format(first=first)], env=env, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_default_is_set_when_the_user_set_nothing():
    got = _probe({})
    rec = got["record"]
    assert rec["source"] == "default" and rec["effective"] is True
    busy = rec["other_running_tasks"] is not None and rec["other_running_tasks"] >= BUSY_OTHERS
    if rec["openmp_runtime"] in (None, "libgomp"):
        assert got["env"]["OMP_WAIT_POLICY"] == ("PASSIVE" if busy else None) and got["env"]["GOMP_SPINCOUNT"] is None
    assert rec["variables"] == {k: v for k, v in got["env"].items() if v is not None}


@pytest.mark.parametrize("others, passive", [(0, False), (BUSY_OTHERS - 1, False), (BUSY_OTHERS, True), (3, True), (None, False)])
def test_passive_on_a_busy_cpu_the_runtimes_spin_on_a_quiet_one(others, passive):
    env = {}
    rec = apply_default(env, others=others)
    assert rec["source"] == "default" and rec["other_running_tasks"] == others
    expected = waitpolicy.default_variables(rec["openmp_runtime"]) if passive else {}
    assert rec["variables"] == expected and {k: v for k, v in env.items() if k != MARKER_ENV} == expected
    assert env[MARKER_ENV] == (",".join(f"{k}={v}" for k, v in expected.items()) if passive else "runtime")


def test_passive_can_be_asked_for_whatever_the_load():
    env = {OFF_ENV: "passive"}
    rec = apply_default(env, others=0)
    assert rec["variables"] == waitpolicy.default_variables(rec["openmp_runtime"]) and "asked for" in rec["reason"]


def test_other_running_tasks_reads_proc_loadavg():
    n = waitpolicy.other_running_tasks(samples=3)
    try:
        total = int(open("/proc/loadavg").read().split()[3].split("/")[1])
    except OSError:
        pytest.fail("this test runs on Linux (CI): /proc/loadavg is missing")
    assert n is not None and 0 <= n < total


@pytest.mark.parametrize("user", [{"OMP_WAIT_POLICY": "ACTIVE"}, {"OMP_WAIT_POLICY": "PASSIVE"}, {"GOMP_SPINCOUNT": "123"}, {"KMP_BLOCKTIME": "5"}])
def test_a_users_setting_is_never_overridden(user):
    got = _probe(user)
    assert {k: v for k, v in got["env"].items() if v is not None} == user  # nothing added, nothing changed
    assert got["record"]["source"] == "user" and got["record"]["variables"] == user


def test_off_switch_leaves_the_runtime_default():
    got = _probe({OFF_ENV: "off"})
    assert all(v is None for v in got["env"].values()) and got["record"]["source"] == "off"


def test_torch_imported_first_is_an_honest_no_op():
    got = _probe({}, first="import torch")
    assert all(v is None for v in got["env"].values())  # not set: it could not take effect, and children must not differ
    assert got["record"]["source"] == "runtime" and got["record"]["effective"] is False


@pytest.mark.parametrize("others", [0, 3])
def test_a_child_process_inherits_the_parents_decision(others):
    parent = {}
    decided = apply_default(parent, others=others)
    got = _probe(parent)  # whatever the load is now, the child keeps the parent's decision
    assert got["record"]["source"] == "default" and got["record"].get("inherited") is True
    assert got["record"]["variables"] == decided["variables"]


def test_cli_entry_point_applies_the_default_before_torch(tmp_path):
    # the command's module is inside the package, so the package's __init__ (the default) runs before any torch import
    code = "import sys; from posthoc_vq import cli; import posthoc_vq.waitpolicy as w; print(w.wait_policy_record()['effective'])"
    env = {k: v for k, v in os.environ.items() if k not in (*USER_VARIABLES, OFF_ENV, MARKER_ENV)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "True"


def test_apply_default_on_a_mapping():
    env = {"OMP_WAIT_POLICY": "active"}
    assert apply_default(env)["source"] == "user" and env == {"OMP_WAIT_POLICY": "active"}
    env = {OFF_ENV: "0"}
    assert apply_default(env)["source"] == "off" and set(env) == {OFF_ENV}


def test_default_variables_follow_the_runtime():
    assert waitpolicy.default_variables("libgomp") == waitpolicy.default_variables(None) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert waitpolicy.default_variables("libiomp") == waitpolicy.default_variables("libomp") == {"KMP_BLOCKTIME": "0"}
