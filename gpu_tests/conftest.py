"""The GPU checks reuse the CPU suite's small models and fixtures (tests/integration) instead of copies."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
