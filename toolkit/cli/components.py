"""`ablate list` and `ablate plugins`: what components and plugins are loaded."""

from __future__ import annotations

import argparse
from typing import Any

from toolkit.api.registry import KINDS, suggest
from toolkit.cli.common import add_plugin_option, plugins_of
from toolkit.errors import ToolkitError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("list", help="list registered components, by kind")
    p.add_argument("kind", nargs="?", help="only this kind (attention, normalization, ...)")
    add_plugin_option(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "plugins", help="list loaded plugins, where each came from, what it registers"
    )
    add_plugin_option(p)
    p.set_defaults(func=cmd_plugins)


def cmd_list(args: argparse.Namespace) -> int:
    plugins = plugins_of(args)
    kinds = list(KINDS)
    if args.kind:
        if args.kind not in KINDS:
            raise ToolkitError(
                f"unknown kind {args.kind!r}{suggest(args.kind, KINDS)}; kinds: {', '.join(KINDS)}"
            )
        kinds = [args.kind]
    width = max(len(c.name) for c in plugins.registry)
    for kind in kinds:
        print(f"{kind}:")
        for name in plugins.registry.names(kind):
            c = plugins.registry.get(kind, name)
            facts = "".join(f" [{k}={v}]" for k, v in c.facts.items())
            print(f"  {name:<{width}}  {c.description}{facts}")
            if c.options:
                options = ", ".join(o.describe() for o in c.options.values())
                print(f"  {'':<{width}}  options: {options}")
        print()
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    plugins = plugins_of(args)
    for info in plugins.info.values():
        print(f"{info.name}  ({info.source}; hooks: {', '.join(info.hooks) or 'none'})")
        for kind, name in info.components:
            print(f"    {kind}: {name}")
    return 0
