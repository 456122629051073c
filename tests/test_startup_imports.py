"""The light commands start fast: they never import llama.cpp, sympy, numpy or huggingface_hub.

Checked for real with `python -X importtime -m mathsolve ...`, which lists every module
the process imported (bench/startup.py reads the same report for the benchmark).
"""

from __future__ import annotations

import pytest

from bench.startup import HEAVY, imported_modules


@pytest.mark.parametrize("args", [("--help",), ("models",)], ids=["help", "models"])
def test_light_commands_import_no_heavy_module(args: tuple[str, ...]) -> None:
    names = imported_modules(*args)
    assert "mathsolve.cli" in names  # the report was read
    assert [module for module in HEAVY if module in names] == []
