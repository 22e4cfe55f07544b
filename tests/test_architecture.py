"""The import rules of DESIGN.md, and the promise that importing llmfti is cheap."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "sentence_transformers", "vllm", "ragas", "peft", "lancedb")
FORBIDDEN_IN_LIBRARY = ("agents", "pipelines", "evals", "fastapi", "starlette", "typer", "click", "uvicorn")


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def _library_files() -> list[Path]:
    cli = REPO / "llmfti" / "cli"
    return [p for p in (REPO / "llmfti").rglob("*.py") if cli not in p.parents]


def test_library_never_imports_a_layer_above_it() -> None:
    offenders = {
        str(p.relative_to(REPO)): sorted(_imported_roots(p) & set(FORBIDDEN_IN_LIBRARY))
        for p in _library_files()
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_nothing_in_the_library_imports_the_cli() -> None:
    for path in _library_files():
        source = path.read_text()
        assert "llmfti.cli" not in source, path


@pytest.mark.parametrize("layer", ["pipelines", "agents"])
def test_programs_do_not_call_each_other(layer: str) -> None:
    others = {"pipelines", "agents", "evals"} - {layer}
    for path in (REPO / layer).rglob("*.py"):
        assert not (_imported_roots(path) & others), path


def test_evals_use_the_agent_pipeline_not_its_http_layer() -> None:
    for path in (REPO / "evals").rglob("*.py"):
        source = path.read_text()
        assert "agents.api" not in source and "fastapi" not in _imported_roots(path), path


def test_import_llmfti_loads_nothing_heavy() -> None:
    code = (
        "import sys, llmfti, llmfti.config, llmfti.errors, llmfti.cli.main;"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_cli_help_loads_nothing_heavy() -> None:
    """`llmfti --help` stays instant because it imports no model or storage library (a deterministic check;
    its wall-clock time is measured by benchmarks/cli_latency.py, never asserted in a test)."""
    code = (
        "import sys\n"
        "from llmfti.cli.main import app\n"
        "try:\n    app(['--help'], prog_name='llmfti')\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "index" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "HEAVY:", out.stdout[-500:]
