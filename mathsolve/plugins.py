"""Loading plugins: built-in defaults plus every entry point in the `mathsolve` group.

- `MATHSOLVE_LOAD_PLUGINS=a,b` loads only the named entry-point plugins (empty: none).
- `MATHSOLVE_TRACE_PLUGINS=1` prints every hook call and its result on stderr.
- A plugin that fails to import or register is reported, never fatal: the rest load.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

import pluggy

from mathsolve import hookspecs
from mathsolve.hookspecs import hookimpl

__all__ = ["hookimpl", "PluginManager", "get_plugin_manager", "PluginInfo"]

ENTRY_POINT_GROUP = "mathsolve"
DEFAULT_PLUGINS = ("mathsolve.default_plugins",)


@dataclass
class PluginInfo:
    name: str
    source: str  # "built-in" or the distribution providing the entry point
    error: str | None = None
    registers: dict[str, list[str]] = field(default_factory=dict)


class PluginManager:
    """A pluggy manager that records what loaded, what failed, and why."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("mathsolve")
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        if os.environ.get("MATHSOLVE_TRACE_PLUGINS"):
            self._trace()

    @property
    def hook(self):
        return self.pm.hook

    def _trace(self) -> None:
        def before(hook_name, hook_impls, kwargs):
            names = [impl.plugin_name for impl in hook_impls]
            print(f"[plugins] call {hook_name} -> {names}", file=sys.stderr)

        def after(outcome, hook_name, hook_impls, kwargs):
            exc = outcome.exception
            status = f"raised {type(exc).__name__}: {exc}" if exc else "ok"
            print(f"[plugins] done {hook_name}: {status}", file=sys.stderr)

        self.pm.add_hookcall_monitoring(before, after)

    def load(self) -> None:
        for module_name in DEFAULT_PLUGINS:
            module = __import__(module_name, fromlist=["_"])
            self.pm.register(module, name=module_name)
            self.infos[module_name] = PluginInfo(module_name, "built-in")
        allowed = os.environ.get("MATHSOLVE_LOAD_PLUGINS")
        allow = None if allowed is None else {n.strip() for n in allowed.split(",") if n.strip()}
        for ep in entry_points(ENTRY_POINT_GROUP):
            if allow is not None and ep.name not in allow:
                continue
            info = PluginInfo(ep.name, ep.dist)
            self.infos[ep.name] = info
            try:
                plugin = ep.load()
                if self.pm.get_plugin(ep.name) is None:
                    self.pm.register(plugin, name=ep.name)
            except Exception as exc:  # a broken plugin must not take the CLI down
                info.error = f"{type(exc).__name__}: {exc}"

    def collect(self, hook_name: str) -> list[tuple[str, Any]]:
        """Call one `register_*` hook plugin by plugin; return (plugin name, item) pairs.

        Each plugin is called on its own so that one raising is reported against it
        and does not hide what the others register.
        """
        items: list[tuple[str, Any]] = []
        impls = getattr(self.pm.hook, hook_name).get_hookimpls()
        for impl in impls:
            name = impl.plugin_name
            others = [i.plugin for i in impls if i is not impl]
            got: list[Any] = []

            def register(*args: Any, **options: Any) -> None:
                got.append(args[0] if len(args) == 1 and not options else (*args, options))

            info = self.infos.setdefault(name, PluginInfo(name, "?"))
            try:
                # subset_hook_caller keeps pluggy's argument handling and tracing.
                self.pm.subset_hook_caller(hook_name, remove_plugins=others)(register=register)
            except Exception as exc:
                info.error = f"{hook_name}: {type(exc).__name__}: {exc}"
                continue
            kind = hook_name.removeprefix("register_")
            info.registers.setdefault(kind, []).extend(_label(item) for item in got)
            items.extend((name, item) for item in got)
        return items

    def failed(self) -> list[PluginInfo]:
        return [i for i in self.infos.values() if i.error]


@dataclass(frozen=True)
class EntryPoint:
    name: str
    value: str  # "module" or "module:attribute"
    dist: str  # the distribution that declares it

    def load(self) -> Any:
        import importlib

        module, _, attribute = self.value.partition(":")
        loaded = importlib.import_module(module.strip())
        for part in filter(None, attribute.strip().split(".")):
            loaded = getattr(loaded, part)
        return loaded


def entry_points(group: str) -> list[EntryPoint]:
    """The entry points of `group` declared by the distributions on sys.path, read from
    their `entry_points.txt` (what pip installs, editable installs included): the first
    distribution of a name on sys.path wins, as in importlib.metadata. Read directly because
    importing importlib.metadata costs ~20 ms, a sixth of `mathsolve --help`."""
    found: dict[str, EntryPoint] = {}
    seen: set[str] = set()
    for directory in sys.path:
        try:
            names = sorted(os.listdir(directory or "."))
        except OSError:
            continue
        for name in names:
            if not name.endswith((".dist-info", ".egg-info")):
                continue
            dist = name.rsplit(".", 1)[0].split("-")[0].lower().replace("_", "-").replace(".", "-")
            if dist in seen:
                continue
            seen.add(dist)
            for ep_name, value in _section(os.path.join(directory or ".", name, "entry_points.txt"), group):
                found.setdefault(ep_name, EntryPoint(ep_name, value, dist))
    return sorted(found.values(), key=lambda ep: ep.name)


def _section(path: str, group: str) -> list[tuple[str, str]]:
    """The `name = value` lines of one [group] of an entry_points.txt (an INI file)."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError):
        return []
    items, inside = [], False
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            inside = line == f"[{group}]"
        elif inside and "=" in line and not line.startswith(("#", ";")):
            name, _, value = line.partition("=")
            items.append((name.strip(), value.strip()))
    return items


def _label(item: Any) -> str:
    if isinstance(item, tuple):
        return str(item[0])
    return str(getattr(item, "name", item))


_manager: PluginManager | None = None


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, loaded on first use."""
    global _manager
    if _manager is None:
        _manager = PluginManager()
        _manager.load()
    return _manager


def reset_plugin_manager() -> None:
    """Forget the loaded plugins (tests change MATHSOLVE_LOAD_PLUGINS between runs)."""
    global _manager
    _manager = None
