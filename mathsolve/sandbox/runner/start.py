"""Entry script of the sandbox runner, the one file the parent starts, by path:
``python -I -B -X utf8 start.py JOB_FILE STATUS_FD`` (see this folder's ``__init__``).

``-I`` puts no folder of ours on ``sys.path`` (nor the user's site, nor PYTHONPATH),
so this script loads its sibling modules itself: their folder is imported as a
package under a private name, from this file's own location, whatever the install
layout. Before the job runs, that package goes again, and every way to mathsolve
with it, so that the untrusted code can import neither: the runner's modules leave
``sys.modules`` (their functions keep working through their globals), no folder of
mathsolve stays on ``sys.path``, and ``import mathsolve`` is refused (an editable
install reaches it through a finder, a regular one through site-packages, which the
code needs for its own libraries, so it cannot simply leave ``sys.path``). Hygiene, not a boundary: the kernel's
confinement is that.

Standard library only, Python 3.8+, like every module of the runner.
"""

from __future__ import annotations

import os
import sys

# Never "runner" or another name the code might import by chance.
_PACKAGE = "_mathsolve_sandbox_runner"
_HERE = os.path.dirname(os.path.abspath(__file__))
# The mathsolve package this runner belongs to (mathsolve/sandbox/runner/start.py).
_MATHSOLVE = os.path.realpath(os.path.dirname(os.path.dirname(_HERE)))


def _load_runner():
    """The runner's ``main`` module, every module of the runner imported with it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        _PACKAGE, os.path.join(_HERE, "__init__.py"), submodule_search_locations=[_HERE])
    package = importlib.util.module_from_spec(spec)
    sys.modules[_PACKAGE] = package
    spec.loader.exec_module(package)
    return importlib.import_module(_PACKAGE + ".main")


def _of_mathsolve(entry: str) -> bool:
    """A ``sys.path`` entry inside mathsolve, or the checkout that holds it; never a
    site directory, which holds the code's own libraries too."""
    path = os.path.realpath(entry or os.curdir)
    if path == _MATHSOLVE or path.startswith(_MATHSOLVE + os.sep):
        return True
    if path != os.path.dirname(_MATHSOLVE):
        return False
    import site

    getsitepackages = getattr(site, "getsitepackages", None)
    site_dirs = getsitepackages() if getsitepackages is not None else []
    return path not in {os.path.realpath(d) for d in site_dirs}


def _forget_runner() -> None:
    """Take the runner and mathsolve out of the code's reach (see the module docstring)."""
    for name in [name for name in sys.modules if name == _PACKAGE or name.startswith(_PACKAGE + ".")]:
        del sys.modules[name]
    sys.path_importer_cache.pop(_HERE, None)
    sys.path[:] = [entry for entry in sys.path if not _of_mathsolve(entry)]
    # The import system's own way to refuse a module: `import mathsolve` (or any of its
    # submodules) raises ModuleNotFoundError however mathsolve is installed, and
    # importlib.util.find_spec("mathsolve") answers None, as for a missing module.
    sys.modules["mathsolve"] = None  # type: ignore[assignment]


if __name__ == "__main__":
    _main = _load_runner().main
    _forget_runner()
    _main(sys.argv)
