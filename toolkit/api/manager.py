"""The plugin manager: loads built-in, installed and named plugins and fills a registry.

Built-ins are loaded by module name exactly as a module named in a spec or with ``--plugin``
is; installed plugins come from the ``ablate`` entry-point group unless
``ABLATE_DISABLE_PLUGIN_AUTOLOAD`` is set. A module named in a spec or with ``--plugin`` is
looked for in the current folder too (as ``python -m`` would), and a module reached through
two doors (an entry point and a spec, say) is loaded once. Every error names the door a
plugin came through. This module knows nothing of any concrete component.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from toolkit.api import hookspecs
from toolkit.api.registry import Component, Registry
from toolkit.errors import ComponentError, PluginError, ToolkitError, one_line
from toolkit.files import digest

BUILTIN_PLUGINS = (
    "plugins.attention",
    "plugins.differential",
    "plugins.latent",
    "plugins.normalization",
    "plugins.activations",
    "plugins.moe",
    "plugins.positional",
    "plugins.initialization",
    "plugins.optimizers",
    "plugins.schedule_free",
    "plugins.schedules",
    "plugins.sampling",
    "plugins.tokenizers",
    "plugins.corpora",
    "plugins.datasets",
    "plugins.token_shards",
    "plugins.loggers",
    "plugins.executors",
)
ENTRY_POINT_GROUP = hookspecs.PROJECT
AUTOLOAD_ENV = "ABLATE_DISABLE_PLUGIN_AUTOLOAD"


@dataclass
class PluginInfo:
    """Where a loaded plugin came from and what it registered (for `ablate plugins`)."""

    name: str
    source: str  # "builtin", "entry point <dist>", "spec", "--plugin", "object"
    hooks: list[str] = field(default_factory=list)
    components: list[tuple[str, str]] = field(default_factory=list)


class Plugins:
    """A plugin manager plus the registry its plugins filled.

    >>> plugins = Plugins()                      # built-ins and installed plugins
    >>> plugins.registry.get("normalization", "rmsnorm")
    """

    def __init__(
        self,
        modules: Iterable[str] = (),
        *,
        autoload: bool | None = None,
        source: str = "Plugins(modules)",
    ) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.registry = Registry()
        self.info: dict[str, PluginInfo] = {}
        for name in BUILTIN_PLUGINS:
            self.load_module(name, source="builtin")
        if autoload is None:
            autoload = not os.environ.get(AUTOLOAD_ENV)
        if autoload:
            self._load_entry_points()
        for name in modules:
            self.load_module(name, source=source)

    # -- loading ---------------------------------------------------------------------------
    def load_module(self, module_name: str, *, source: str = "spec") -> None:
        """Import a module by dotted name (from the current folder too) and register it as a
        plugin, once: a module already loaded under this name, or the same file already
        loaded through another door, is not loaded again."""
        if module_name in self.info:
            return
        if source != "builtin":
            _current_folder_importable()
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                raise PluginError(
                    f"plugin module {module_name!r} ({source}) not found in the current folder "
                    f"({os.getcwd()}), on PYTHONPATH or among installed packages; check the "
                    f"name, or run from the folder that holds it"
                ) from None
            raise PluginError(
                f"plugin {module_name!r} ({source}) failed to import: {one_line(exc)}"
            ) from None
        except Exception as exc:
            raise PluginError(
                f"plugin {module_name!r} ({source}) failed to import: {one_line(exc)}"
            ) from None
        same = self._loaded_as(module)
        if same is not None:
            # One module through two doors (an installed entry point and a spec, say): its
            # components and hooks are registered once, by the first.
            self.info[module_name] = PluginInfo(module_name, f"{source}; same as {same!r}")
            return
        self.add(module, name=module_name, source=source)

    def _loaded_as(self, module: types.ModuleType) -> str | None:
        """The name of a loaded plugin that is this module, or its code (the same file, or a
        file with the same bytes) under another name; None if there is none."""
        mine = _file_digest(module)
        for plugin in self.pm.get_plugins():
            name = self.pm.get_name(plugin)
            if plugin is module or getattr(plugin, "__module__", None) == module.__name__:
                return name
            if (
                mine is not None
                and isinstance(plugin, types.ModuleType)
                and _file_digest(plugin) == mine
            ):
                return name
        return None

    def _load_entry_points(self) -> None:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in self.info or ep.value in self.info:
                continue
            dist = ep.dist.name if ep.dist else "?"
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin {ep.name!r} (entry point of {dist}) failed to load: {one_line(exc)}; "
                    f"fix or uninstall it, or set {AUTOLOAD_ENV}=1 to skip installed plugins"
                ) from None
            self.add(
                plugin,
                name=ep.value if isinstance(plugin, types.ModuleType) else ep.name,
                source=f"entry point of {dist}",
            )

    def add(self, plugin: Any, *, name: str | None = None, source: str = "object") -> None:
        """Register a plugin object (a module, class or instance with hook functions) and let it
        register its components. Tests use this to add a throwaway plugin."""
        name = name or getattr(plugin, "__name__", None) or repr(plugin)
        if name in self.info:
            raise PluginError(f"a plugin named {name!r} is already loaded")
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {name!r} ({source}) is invalid: {one_line(exc)}") from None
        info = PluginInfo(name, source)
        info.hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
        self.info[name] = info
        for impl in self.pm.hook.register_components.get_hookimpls():
            if impl.plugin_name == name:
                self._call_register(impl, info)

    def _call_register(self, impl: pluggy.HookImpl, info: PluginInfo) -> None:
        def register(kind: str, name: str, factory: Any, **metadata: Any) -> Component:
            if isinstance(kind, str) and (kind, name) in self.registry:
                other = self.registry.get(kind, name).plugin
                door = self.info[other].source if other in self.info else "?"
                raise ComponentError(
                    f"{kind} {name!r} is registered twice: by plugin {other!r} ({door}) and "
                    f"by plugin {info.name!r} ({info.source}), from different code; rename "
                    f"one, or load only one of them (an installed package needs no entry in "
                    f"a spec's plugins)"
                )
            component = self.registry.register(kind, name, factory, plugin=info.name, **metadata)
            info.components.append((kind, name))
            return component

        try:
            impl.function(register=register)
        except ToolkitError:
            raise
        except Exception as exc:
            raise PluginError(
                f"plugin {info.name!r} raised in register_components: {one_line(exc)}"
            ) from None

    # -- observers -------------------------------------------------------------------------
    @property
    def hook(self) -> Any:
        """The pluggy hook relay: `plugins.hook.on_eval(run=..., step=..., metrics=...)`."""
        return self.pm.hook

    def component(self, kind: str, name: str) -> Component:
        return self.registry.get(kind, name)


_DEFAULT: dict[tuple[str, ...], Plugins] = {}


def load_plugins(modules: Iterable[str] = (), source: str = "--plugin") -> Plugins:
    """A process-wide Plugins for these extra modules (built once, then reused); `source` is
    the door they came through, for messages."""
    key = tuple(modules)
    if key not in _DEFAULT:
        _DEFAULT[key] = Plugins(key, source=source)
    return _DEFAULT[key]


def _current_folder_importable() -> None:
    """Let `import` find modules in the current folder, as `python -m` and `python script.py`
    would; the `ablate` command's own sys.path[0] is its script's folder. Added last, so it
    never shadows an installed package."""
    here = os.getcwd()
    if not any(os.path.abspath(p or os.curdir) == here for p in sys.path):
        sys.path.append(here)


def _file_digest(module: types.ModuleType) -> str | None:
    """The SHA-256 of a module's source file, or None when it has none that can be read."""
    path = getattr(module, "__file__", None)
    try:
        return digest(Path(path)) if path else None
    except OSError:
        return None


__all__ = ["BUILTIN_PLUGINS", "ComponentError", "PluginInfo", "Plugins", "load_plugins"]
