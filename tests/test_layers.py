"""The layers of docs/architecture.md hold: import-linter's `layers` contract (pyproject.toml) is kept.

Every import counts, including those inside functions (import-linter reads them all), so a lazy
import that points up a layer fails here. A module that belongs to no layer fails too: a contract
silently skips what it does not name.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _contract() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        cfg = tomllib.load(f)["tool"]["importlinter"]
    (contract,) = [c for c in cfg["contracts"] if c["type"] == "layers"]
    return contract


def test_import_linter_contracts_are_kept():
    """`lint-imports` (every contract in pyproject.toml) passes: no import points down the layers."""
    exe = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    assert os.path.exists(exe), "lint-imports is missing: install the test extras (pip install -e '.[test]')"
    # the graphad under test is this checkout's, whatever the environment's install points at
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    r = subprocess.run([exe, "--no-cache"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert r.returncode == 0, f"an import breaks the layers of docs/architecture.md:\n{r.stdout}{r.stderr}"
    assert "0 broken" in r.stdout, r.stdout


def test_every_module_is_in_a_layer():
    """Each module of graphad/ (but the package's __init__, which re-exports the API) is in a layer."""
    names = [n for layer in _contract()["layers"] for n in re.split(r"\s*[|:]\s*", layer.strip())]
    missing = []
    for dirpath, _, files in os.walk(os.path.join(ROOT, "graphad")):
        for fn in files:
            if not fn.endswith(".py"):
                continue
            mod = os.path.relpath(os.path.join(dirpath, fn), ROOT)[:-3].replace(os.sep, ".")
            mod = mod.removesuffix(".__init__")
            if mod != "graphad" and not any(mod == n or mod.startswith(n + ".") for n in names):
                missing.append(mod)
    assert not missing, f"modules in no layer of the contract (add them to pyproject.toml and docs/architecture.md): {missing}"
