"""The plugin manager: loads built-in, installed and named plugins and fills a registry.

Built-ins are loaded by module name exactly as a module named in a spec or with ``--plugin``
is; installed plugins come from the ``ablate`` entry-point group unless
``ABLATE_DISABLE_PLUGIN_AUTOLOAD`` is set. This module knows nothing of any concrete component.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from toolkit.api import hookspecs
from toolkit.api.registry import Component, Registry
from toolkit.errors import ComponentError, PluginError, ToolkitError, one_line

BUILTIN_PLUGINS = (
    "plugins.attention",
    "plugins.normalization",
    "plugins.activations",
    "plugins.positional",
    "plugins.initialization",
    "plugins.sampling",
    "plugins.tokenizers",
    "plugins.corpora",
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

    def __init__(self, modules: Iterable[str] = (), *, autoload: bool | None = None) -> None:
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
            self.load_module(name, source="--plugin")

    # -- loading ---------------------------------------------------------------------------
    def load_module(self, module_name: str, *, source: str = "spec") -> None:
        """Import a module by dotted name and register it as a plugin (once)."""
        if module_name in self.info:
            return
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                raise PluginError(
                    f"plugin module {module_name!r} ({source}) not found; check the name and "
                    f"that its folder is on PYTHONPATH or its package is installed"
                ) from None
            raise PluginError(
                f"plugin {module_name!r} ({source}) failed to import: {one_line(exc)}"
            ) from None
        except Exception as exc:
            raise PluginError(
                f"plugin {module_name!r} ({source}) failed to import: {one_line(exc)}"
            ) from None
        self.add(module, name=module_name, source=source)

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


def load_plugins(modules: Iterable[str] = ()) -> Plugins:
    """A process-wide Plugins for these extra modules (built once, then reused)."""
    key = tuple(modules)
    if key not in _DEFAULT:
        _DEFAULT[key] = Plugins(key)
    return _DEFAULT[key]


__all__ = ["BUILTIN_PLUGINS", "ComponentError", "PluginInfo", "Plugins", "load_plugins"]
