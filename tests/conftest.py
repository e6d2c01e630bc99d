"""Test-suite policy: in CI (CI set in the environment) a skipped test is a failure.

A skip usually hides a missing dataset or dependency; CI must say so instead of passing.
"""

import os

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which is not allowed: {report.longrepr}"


@pytest.fixture(scope="session")
def shared_datasets():
    """Factory: the real datasets folder (``$POSTHOC_VQ_SHARED_DATA``, else ``<repo>/../shared/datasets``) holding ``paths``.

    A missing file fails the test, never skips it: CI must say that data is absent.
    """
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    root = Path(os.environ.get("POSTHOC_VQ_SHARED_DATA") or repo.parent / "shared" / "datasets").resolve()  # absolute: tests symlink its files elsewhere

    def find(*paths: str, what: str) -> Path:
        missing = [p for p in paths if not (root / p).exists()]
        if missing:
            pytest.fail(f"real {what} not found: expected {', '.join(str(root / p) for p in missing)}; "
                        "set POSTHOC_VQ_SHARED_DATA to the folder that holds it")
        return root

    return find
