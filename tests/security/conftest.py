"""The security tests (docs/security.md names the claim each one proves): what a tenant, a box,
a web page and a second installation can and cannot do, against real servers and real boxes.

They share the end-to-end tests' helpers (tests/e2e): the CLI runner, the server, the raw API
client that checks every response against the OpenAPI document, and the test internet."""

import importlib.util
import sys
from pathlib import Path

E2E = Path(__file__).resolve().parents[1] / "e2e"
sys.path.insert(0, str(E2E))

# The end-to-end fixtures (up, own_up, lab, box, ...), under a module name of their own.
_spec = importlib.util.spec_from_file_location("e2e_conftest", E2E / "conftest.py")
_e2e = importlib.util.module_from_spec(_spec)
sys.modules["e2e_conftest"] = _e2e
_spec.loader.exec_module(_e2e)
for _name in dir(_e2e):
    _value = getattr(_e2e, _name)
    if hasattr(_value, "_pytestfixturefunction") or type(_value).__name__ == "FixtureFunctionDefinition":
        globals()[_name] = _value
