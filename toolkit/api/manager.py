"""The plugin manager: loads built-in, installed and named plugins and fills a registry.

Built-ins are loaded by module name exactly as a module named in a spec or with ``--plugin``
is; installed plugins come from the ``ablate`` entry-point group unless
``ABLATE_DISABLE_PLUGIN_AUTOLOAD`` is set. A module named in a spec or with ``--plugin`` is
looked for in the current folder first (as ``python -m`` would), and a module reached through
two doors (an entry point and a spec, say) is loaded once. A plugin must implement at least one
hook and no hook that does not exist, so a misspelt hook or a forgotten ``@hookimpl`` is an
error rather than a plugin that silently registers nothing. Every error names the door a plugin
came through. This module knows nothing of any concrete component.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import os
import sys
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from toolkit.api import hookspecs
from toolkit.api.registry import Component, Registry, suggest
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
OWN_PACKAGE = BUILTIN_PLUGINS[0].split(".")[0]  # "plugins": a user's ./plugins cannot be imported


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
            _check_not_a_path(module_name, source)
        try:
            with _current_folder_first(source != "builtin"):
                module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and _is_module_or_parent(exc.name, module_name):
                raise PluginError(_not_found(module_name, source)) from None
            if exc.name:
                # The plugin is there, but something it imports is not (import flash_attn).
                raise PluginError(
                    f"plugin {module_name!r} ({source}) failed to import: it needs module "
                    f"{exc.name!r}, which is not installed; install the package that provides "
                    f"it (e.g. `pip install {exc.name.split('.')[0]}`) and run again"
                ) from None
            raise PluginError(
                f"plugin {module_name!r} ({source}) failed to import: {one_line(exc)}"
            ) from None
        except Exception as exc:
            raise PluginError(
                f"plugin {module_name!r} ({source}) failed to import: {one_line(exc)}"
            ) from None
        if source != "builtin":
            _check_not_shadowed(module_name, module, source)
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
            try:
                self.add(
                    plugin,
                    name=ep.value if isinstance(plugin, types.ModuleType) else ep.name,
                    source=f"entry point of {dist}",
                )
            except PluginError as exc:  # no hook: the user may not be its author
                raise PluginError(
                    f"{exc}; fix or uninstall it, or set {AUTOLOAD_ENV}=1 to skip installed plugins"
                ) from None

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
        hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
        problem = self._hook_problem(plugin, hooks)
        if problem:
            self.pm.unregister(plugin)
            raise PluginError(f"plugin {name!r} ({source}) {problem}")
        info = PluginInfo(name, source)
        info.hooks = hooks
        self.info[name] = info
        for impl in self.pm.hook.register_components.get_hookimpls():
            if impl.plugin_name == name:
                self._call_register(impl, info)

    def _hook_problem(self, plugin: Any, hooks: list[str]) -> str | None:
        """What is wrong with a plugin's hooks, as the end of a sentence about the plugin; None
        when it implements at least one hook and none that does not exist. pluggy itself
        accepts both mistakes and the plugin then silently does nothing."""
        known = sorted(
            n
            for n, h in vars(self.pm.hook).items()
            if isinstance(h, pluggy.HookCaller) and h.has_spec()
        )
        unknown = [h for h in hooks if h not in known]
        if unknown:
            return (
                f"implements {unknown[0]!r}, which is no hook{suggest(unknown[0], known)}; "
                f"the hooks: {', '.join(known)}"
            )
        if hooks:
            return None
        unmarked = [n for n in known if callable(getattr(plugin, n, None))]
        if unmarked:
            return (
                f"defines {unmarked[0]}() without @hookimpl, so it implements no hook; mark it "
                f"(from toolkit import hookimpl, then @hookimpl on the line above)"
            )
        return (
            f"implements no hook; a plugin defines at least one of {', '.join(known)}, "
            f"marked @hookimpl (from toolkit import hookimpl)"
        )

    def _call_register(self, impl: pluggy.HookImpl, info: PluginInfo) -> None:
        def register(kind: str, name: str, factory: Any, **metadata: Any) -> Component:
            if isinstance(kind, str) and (kind, name) in info.components:
                raise ComponentError(
                    f"plugin {info.name!r} ({info.source}) registers {kind} {name!r} twice; "
                    f"give each its own name, or register it once"
                )
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


@contextlib.contextmanager
def _current_folder_first(wanted: bool = True) -> Iterator[None]:
    """While a plugin imports, look for modules in the current folder before anywhere else, as
    `python -m` does (the `ablate` command's own sys.path[0] is its script's folder): the user's
    own my_components.py wins over an installed copy of it, and a local code.py over the
    standard library's (a module imported already stays: _check_not_shadowed says so).
    Afterwards the folder stays on sys.path, last, for what the plugin imports later: first,
    it would shadow installed packages for the whole process and for the sweep workers that
    inherit its sys.path (a ./plugins folder over the toolkit's own built-ins)."""
    if not wanted:
        yield
        return
    here = os.getcwd()
    sys.path.insert(0, here)
    try:
        yield
    finally:
        mine = next((i for i, p in enumerate(sys.path) if p is here), None)
        if mine is not None:
            del sys.path[mine]
        if not any(os.path.abspath(p or os.curdir) == here for p in sys.path):
            sys.path.append(here)


def _check_not_a_path(module_name: str, source: str) -> None:
    """A plugin is named as a module (my_components), not as a file (./my_components.py),
    because sweep workers in other processes load it again by that name."""
    if not (module_name.endswith(".py") or "/" in module_name or os.sep in module_name):
        return
    path = Path(module_name)
    folder = "the folder that holds it" if path.parent == Path(".") else str(path.parent)
    raise PluginError(
        f"plugin {module_name!r} ({source}) is a file path, but a plugin is named as a module: "
        f"give {path.stem!r} instead, and run from {folder}"
    )


def _is_module_or_parent(missing: str, module_name: str) -> bool:
    """Whether `missing` (a ModuleNotFoundError's name) is the module or a package above it,
    rather than something the module imports: ('a', 'a.b') -> True;
    ('flash_attn', 'flash_attn_plugin') -> False."""
    return module_name == missing or module_name.startswith(missing + ".")


def _not_found(module_name: str, source: str) -> str:
    """The message for a plugin module that import cannot find."""
    top, _, rest = module_name.partition(".")
    if top == OWN_PACKAGE and rest:
        return (
            f"plugin module {module_name!r} ({source}) not found: {OWN_PACKAGE!r} is the "
            f"toolkit's own package (its built-in plugins), so a folder of that name cannot be "
            f"imported; rename your folder (e.g. to my_{OWN_PACKAGE}) and name the module "
            f"my_{module_name}, or run from inside it and name the module {rest}"
        )
    return (
        f"plugin module {module_name!r} ({source}) not found in the current folder "
        f"({os.getcwd()}), on PYTHONPATH or among installed packages; check the name, or "
        f"run from the folder that holds it"
    )


def _check_not_shadowed(module_name: str, module: types.ModuleType, source: str) -> None:
    """A module of the plugin's name imported before (json, or an older copy of the plugin)
    wins over the file in the current folder, whatever sys.path says: refuse rather than
    load the wrong code."""
    local = Path(os.getcwd(), *module_name.split("."))
    for path in (local.with_name(local.name + ".py"), local / "__init__.py"):
        if not path.is_file():
            continue
        loaded = getattr(module, "__file__", None)
        if loaded and Path(loaded).resolve() == path.resolve():
            return
        raise PluginError(
            f"plugin {module_name!r} ({source}): the current folder's "
            f"{path.relative_to(os.getcwd())} cannot load under that name, which is already "
            f"imported from {loaded or 'Python itself'}; rename your file (and the plugin)"
        )


def _file_digest(module: types.ModuleType) -> str | None:
    """The SHA-256 of a module's source file, or None when it has none that can be read."""
    path = getattr(module, "__file__", None)
    try:
        return digest(Path(path)) if path else None
    except OSError:
        return None


__all__ = ["BUILTIN_PLUGINS", "ComponentError", "PluginInfo", "Plugins", "load_plugins"]
