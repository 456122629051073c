"""mathsolve: solve math problems locally with tool-integrated open models on llama.cpp."""

__version__ = "0.1.0"

__all__ = ["__version__", "solve", "Solver"]


def __getattr__(name: str):
    # Lazy: `import mathsolve` (and the CLI's start-up) must not import llama.cpp.
    if name in ("solve", "Solver"):
        from mathsolve import api

        return getattr(api, name)
    raise AttributeError(name)
