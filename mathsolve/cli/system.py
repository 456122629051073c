"""What this installation is and holds: `config`, `doctor` and `plugins`."""

from __future__ import annotations

from mathsolve.cli import failures
from mathsolve.cli.program import app


@app.command()
@failures.reports_errors
def config() -> None:
    """Show every effective setting and where it came from (flag, env, config file, default)."""
    from mathsolve.cli.views.system import print_settings
    from mathsolve.settings import Settings, config_path

    print_settings(Settings(), config_path())


@app.command()
@failures.reports_errors
def doctor() -> None:
    """What this installation can do: llama.cpp build, GPU, CPU, cache, plugins, sandbox."""
    from mathsolve.cli.views.doctor import print_report

    print_report()


@app.command()
@failures.reports_errors
def plugins() -> None:
    """Installed plugins and what each registers; broken ones with their error."""
    from mathsolve import registry
    from mathsolve.cli.views.system import print_plugins
    from mathsolve.plugins import get_plugin_manager

    registry.load_all()
    print_plugins(get_plugin_manager().infos.values())
