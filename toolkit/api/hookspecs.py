"""The plugin author's manual: every hook a plugin may implement.

The contract has three parts, all in toolkit/api/: the hooks (here), what each kind of
component must be (`registry.KINDS`, in words, with the objects some kinds return written as
Protocols in `contracts.py`), and how plugins are found and loaded (`manager.py`).

A plugin is any module (or object) with functions named after these hooks, marked with
`toolkit.hookimpl`: at least one of them, and none of another name (a misspelt hook, or a hook
function without the mark, is an error when the plugin loads, not a plugin that does nothing).
The built-in components in `plugins/` are ordinary plugins that use exactly these hooks. A
plugin is loaded in one of four ways:

- built in: the modules listed in `toolkit.api.manager.BUILTIN_PLUGINS`;
- installed: a distribution declares an entry point in the group ``ablate``, e.g.
  ``[project.entry-points.ablate] my_components = "my_pkg.components"``
  (set ``ABLATE_DISABLE_PLUGIN_AUTOLOAD=1`` to skip these);
- named in a spec: ``plugins = ["my_pkg.components"]`` at the top of the TOML file;
- named on the command line: ``ablate run spec.toml --plugin my_pkg.components``.

A spec and ``--plugin`` name a module, not a file (``my_components``, not
``./my_components.py``), and it is looked for in the current folder first, then on
``PYTHONPATH`` and among installed packages.

Components are resolved once, when a model is built: no hook is ever called per training step.
Observer hooks (`on_run_start`, `on_eval`, `on_run_end`) are called at evaluation intervals
only, so a logger plugin costs nothing between evaluations.

Minimal plugin::

    from toolkit import hookimpl

    @hookimpl
    def register_components(register):
        register("activation", "my-act", MyFeedForward, description="...")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from toolkit.api.contracts import RunInfo

PROJECT = "ablate"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_components(register: Any) -> None:
    """Register components by calling ``register(kind, name, factory, **metadata)``.

    Called once, when plugins are loaded. Arguments of ``register``:

    - ``kind``: one of the kinds in ``toolkit.api.registry.KINDS`` (``ablate list`` shows them with
      the contract each factory must honour).
    - ``name``: the string a spec uses to choose this component; unique within its kind
      (registering a taken name is an error naming both plugins, or the one plugin that
      registers it twice).
    - ``factory``: a callable building the component. Its keyword-only parameters are the
      component's options, with their defaults and type annotations (``*, eps: float = 1e-5``);
      a spec sets them with ``norm = {name = "rmsnorm", eps = 1e-6}``.
    - ``description``: one line for listings (defaults to the factory's docstring's first line).
    - any other keyword is a *fact* reports and validation use, e.g. ``causal=True`` (required
      for attention: a non-causal attention lets a language model see the tokens it predicts).
      The facts the engine reads are in ``toolkit.api.registry.FACTS`` with their types
      (``causal``, ``kv_cache``, ``any_length``, ``needs_training`` ... are True or False);
      one of another type is an error, and any other fact (a misspelling, usually) warns and
      is only shown by ``ablate list``.

    The return value is ignored.
    """


@hookspec
def on_run_start(run: RunInfo) -> None:
    """A training run is about to start.

    ``run`` holds the experiment and variant names, the seed, the resolved config (a plain
    dict), the run folder, and the model's parameter counts. Use it to open a logger.
    The return value is ignored; an exception fails the run.
    """


@hookspec
def on_eval(run: RunInfo, step: int, metrics: dict[str, float]) -> None:
    """An evaluation finished at optimizer step ``step``.

    ``metrics`` holds ``tokens`` (training tokens seen), ``train_loss``, ``val_loss``,
    ``val_perplexity``, ``val_bpb``, ``lr`` and ``elapsed_s``: the same record written as one
    line of the run's ``metrics.jsonl``. Called every ``train.eval_interval`` steps and at the
    end of training, never per step. The return value is ignored.
    """


@hookspec
def on_run_end(run: RunInfo, summary: dict[str, Any]) -> None:
    """A training run ended; ``summary`` is what was written to its ``summary.json``
    (``status`` is ``"ok"`` when it finished). Use it to close a logger."""
