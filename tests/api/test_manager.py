from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from torch import nn

from tests.conftest import TINY_TOML
from toolkit import hookimpl
from toolkit.api.manager import BUILTIN_PLUGINS, Plugins
from toolkit.errors import ComponentError, PluginError, SpecError


class Identity(nn.Module):
    def __init__(self, dim, *, gain: float = 1.0):
        super().__init__()

    def forward(self, x):
        return x


class ThirdParty:
    @hookimpl
    def register_components(self, register):
        register("normalization", "identity", Identity, description="no normalization")


def test_builtins_are_ordinary_plugins_with_sources(plugins):
    for module in BUILTIN_PLUGINS:
        assert plugins.info[module].source == "builtin"
        observer = ["on_eval", "on_run_end", "on_run_start"]
        hooks = observer if module == "plugins.loggers" else ["register_components"]
        assert plugins.info[module].hooks == hooks
    assert ("normalization", "rmsnorm") in plugins.info["plugins.normalization"].components


def test_a_plugin_object_registers_components():
    p = Plugins(autoload=False)
    p.add(ThirdParty(), name="third")
    c = p.registry.get("normalization", "identity")
    assert c.plugin == "third" and c.description == "no normalization"
    assert list(c.options) == ["gain"]


def test_duplicate_registration_across_plugins_names_both():
    p = Plugins(autoload=False)

    class Clash:
        @hookimpl
        def register_components(self, register):
            register("normalization", "rmsnorm", Identity)

    with pytest.raises(
        ComponentError,
        match=r"'plugins\.normalization' \(builtin\) and by plugin 'clash' \(object\)",
    ):
        p.add(Clash(), name="clash")


def test_plugin_raising_in_hook_is_named():
    class Broken:
        @hookimpl
        def register_components(self, register):
            raise RuntimeError("boom")

    with pytest.raises(
        PluginError, match="plugin 'broken' raised in register_components: RuntimeError: boom"
    ):
        Plugins(autoload=False).add(Broken(), name="broken")


def test_module_named_plugin_loads_from_path(tmp_path, monkeypatch):
    (tmp_path / "my_components.py").write_text(
        textwrap.dedent("""
        from torch import nn
        from toolkit import hookimpl

        @hookimpl
        def register_components(register):
            register("activation", "zero", lambda config: nn.Identity(), description="nothing")
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    p = Plugins(["my_components"], autoload=False)
    assert p.info["my_components"].source == "Plugins(modules)"
    assert p.registry.get("activation", "zero").plugin == "my_components"
    sys.modules.pop("my_components", None)


def test_missing_and_failing_plugin_modules(tmp_path, monkeypatch):
    with pytest.raises(PluginError, match=r"plugin module 'no_such_plugin_xyz' .* not found"):
        Plugins(["no_such_plugin_xyz"], autoload=False)
    (tmp_path / "bad_plugin_xyz.py").write_text("raise ValueError('broken on import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match="failed to import: ValueError: broken on import"):
        Plugins(["bad_plugin_xyz"], autoload=False)


def test_entry_points_load_unless_disabled(monkeypatch, tmp_path):
    # A real distribution on sys.path: a dist-info folder with entry_points.txt, as pip installs it.
    dist = tmp_path / "demo_ablate_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: demo-ablate-plugin\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text("[ablate]\ndemo = demo_ablate_plugin\n")
    (tmp_path / "demo_ablate_plugin.py").write_text(
        textwrap.dedent("""
        from torch import nn
        from toolkit import hookimpl

        @hookimpl
        def register_components(register):
            register("activation", "demo-act", lambda config: nn.Identity())
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = Plugins(autoload=True)
    assert loaded.registry.get("activation", "demo-act").plugin == "demo_ablate_plugin"
    assert loaded.info["demo_ablate_plugin"].source == "entry point of demo-ablate-plugin"
    monkeypatch.setenv("ABLATE_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert ("activation", "demo-act") not in Plugins().registry
    sys.modules.pop("demo_ablate_plugin", None)


def test_a_factory_that_raises_is_named_with_its_plugin(tiny_doc):
    from toolkit.spec.parse import parse_spec

    class Faulty:
        @hookimpl
        def register_components(self, register):
            def broken(config):
                raise ZeroDivisionError("division by zero")

            register("activation", "faulty", broken)

    p = Plugins(autoload=False)
    p.add(Faulty(), name="faulty-plugin")
    tiny_doc["model"]["activation"] = "faulty"
    with pytest.raises(
        SpecError,
        match=r"activation 'faulty' \(plugin 'faulty-plugin'\) failed to build: ZeroDivisionError",
    ):
        parse_spec(tiny_doc, plugins=p)


@pytest.mark.slow
def test_an_installed_plugin_shows_in_ablate_list_and_runs_from_a_spec(tmp_path):
    # A real installed distribution (dist-info with an entry point) on the path of a fresh
    # `ablate` process: the plugin is found without being named anywhere.
    site = tmp_path / "site"
    dist = site / "demo_ff_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-ff-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[ablate]\ndemo = demo_ff_plugin\n")
    (site / "demo_ff_plugin.py").write_text(
        textwrap.dedent("""
        from torch import nn
        from toolkit import hookimpl

        class Tanh(nn.Module):
            \"\"\"Feed-forward with tanh, installed from a package\"\"\"
            def __init__(self, config):
                super().__init__()
                self.up = nn.Linear(config.emb_dim, 4 * config.emb_dim)
                self.down = nn.Linear(4 * config.emb_dim, config.emb_dim)
            def forward(self, x):
                return self.down(self.up(x).tanh())

        @hookimpl
        def register_components(register):
            register("activation", "tanh-ff", Tanh)
    """)
    )
    spec = tmp_path / "spec.toml"
    spec.write_text(
        TINY_TOML.replace(
            '[grid]\n"model.norm" = ["layernorm", "rmsnorm"]',
            '[grid]\n"model.activation" = ["gelu", "tanh-ff"]',
        )
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{root}"}
    env.pop("ABLATE_DISABLE_PLUGIN_AUTOLOAD", None)

    def ablate(*args):
        return subprocess.run(
            [sys.executable, "-m", "toolkit", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=300,
        )

    listing = ablate("list", "activation")
    assert "tanh-ff" in listing.stdout and "installed from a package" in listing.stdout
    plugins_out = ablate("plugins").stdout
    assert "demo_ff_plugin  (entry point of demo-ff-plugin" in plugins_out
    result = ablate("run", str(spec), "--out", str(tmp_path / "out"), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "activation=tanh-ff" in result.stdout
    env["ABLATE_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    assert "tanh-ff" not in ablate("list", "activation").stdout


NORM_PLUGIN = textwrap.dedent("""
    from torch import nn
    from toolkit import hookimpl

    @hookimpl
    def register_components(register):
        register("normalization", "door-norm", lambda dim: nn.LayerNorm(dim), description="x")
""")


def _installed(tmp_path: Path, module: str, text: str) -> None:
    """A distribution whose `ablate` entry point is `module`, as pip installs one."""
    dist = tmp_path / f"{module}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[ablate]\nnorm = {module}\n")
    (tmp_path / f"{module}.py").write_text(text)


def test_one_module_through_two_doors_is_loaded_once(tmp_path, monkeypatch):
    # Packaged as door_pkg (an installed entry point), while an older spec still names the
    # module file it started as: the same code, loaded once.
    _installed(tmp_path, "door_pkg", NORM_PLUGIN)
    (tmp_path / "door_old.py").write_text(NORM_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins = Plugins(autoload=True)
    plugins.load_module("door_old", source="spec x.toml")
    assert plugins.registry.get("normalization", "door-norm").plugin == "door_pkg"
    assert plugins.info["door_old"].source == "spec x.toml; same as 'door_pkg'"
    assert plugins.info["door_old"].components == []
    for name in ("door_pkg", "door_old"):
        sys.modules.pop(name, None)


def test_two_plugins_registering_one_name_are_named_with_their_doors(tmp_path, monkeypatch):
    _installed(tmp_path, "door_pkg2", NORM_PLUGIN)
    (tmp_path / "door_other.py").write_text(NORM_PLUGIN + "\n# another version\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins = Plugins(autoload=True)
    with pytest.raises(ComponentError) as info:
        plugins.load_module("door_other", source="spec x.toml")
    assert str(info.value).startswith(
        "normalization 'door-norm' is registered twice: by plugin 'door_pkg2' (entry point of "
        "door_pkg2) and by plugin 'door_other' (spec x.toml), from different code"
    )
    for name in ("door_pkg2", "door_other"):
        sys.modules.pop(name, None)


@pytest.mark.slow  # three ablate processes, each importing torch
def test_the_ablate_command_finds_plugins_in_the_current_folder(tmp_path):
    # The console script's sys.path[0] is its own folder, not the current one: without help,
    # `--plugin my_norm` and a spec's plugins are not found there.
    (tmp_path / "cwd_norm.py").write_text(NORM_PLUGIN.replace("door-norm", "cwd-norm"))
    (tmp_path / "spec.toml").write_text(
        TINY_TOML.replace('name = "tiny"', 'name = "tiny"\nplugins = ["cwd_norm"]').replace(
            '"rmsnorm"]', '"cwd-norm"]'
        )
    )
    ablate = Path(sys.executable).parent / "ablate"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for extra in ([], ["--plugin", "cwd_norm"]):
        done = subprocess.run(
            [str(ablate), "validate", "spec.toml", *extra],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "norm=cwd-norm" in done.stdout
    missing = subprocess.run(
        [str(ablate), "validate", "spec.toml", "--plugin", "no_such_norm"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert "plugin module 'no_such_norm' (--plugin) not found in the current folder" in (
        missing.stderr
    )


def _module(folder: Path, name: str, text: str) -> None:
    """Write `name`.py (or a package's module, for a dotted name) into folder."""
    path = folder.joinpath(*name.split(".")).with_suffix(".py")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


@pytest.mark.parametrize(
    "name, text, message",
    [
        (
            "misspelt_hook_xyz",
            """
            from toolkit import hookimpl

            @hookimpl
            def register_component(register):
                register("activation", "never", lambda config: None)
            """,
            "implements 'register_component', which is no hook (did you mean "
            "'register_components'?); the hooks: on_eval, on_run_end, on_run_start, "
            "register_components",
        ),
        (
            "unmarked_hook_xyz",
            """
            def register_components(register):
                register("activation", "never", lambda config: None)
            """,
            "defines register_components() without @hookimpl, so it implements no hook; mark it",
        ),
        ("empty_plugin_xyz", "", "implements no hook; a plugin defines at least one of"),
    ],
)
def test_a_plugin_module_implementing_no_hook_is_an_error(
    tmp_path, monkeypatch, name, text, message
):
    _module(tmp_path, name, text)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError) as info:
        Plugins([name], autoload=False, source="--plugin")
    assert str(info.value).startswith(f"plugin {name!r} (--plugin) {message}")
    sys.modules.pop(name, None)


def test_an_installed_plugin_implementing_no_hook_says_how_to_skip_it(tmp_path, monkeypatch):
    _installed(tmp_path, "hookless_pkg_xyz", "def register_components(register):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError) as info:
        Plugins(autoload=True)
    assert str(info.value).startswith(
        "plugin 'hookless_pkg_xyz' (entry point of hookless_pkg_xyz) defines "
        "register_components() without @hookimpl"
    )
    assert str(info.value).endswith(
        "; fix or uninstall it, or set ABLATE_DISABLE_PLUGIN_AUTOLOAD=1 to skip installed plugins"
    )
    sys.modules.pop("hookless_pkg_xyz", None)


def test_a_plugin_implementing_an_unknown_hook_beside_a_known_one_is_an_error():
    class HalfRight:
        @hookimpl
        def on_eval(self, run, step, metrics):
            pass

        @hookimpl
        def on_run_ends(self, run, summary):
            pass

    plugins = Plugins(autoload=False)
    with pytest.raises(PluginError, match=r"'on_run_ends', which is no hook \(did you mean 'on_"):
        plugins.add(HalfRight(), name="half")
    assert "half" not in plugins.info and plugins.pm.get_plugin("half") is None


def test_a_plugin_implementing_only_an_observer_hook_loads(tmp_path, monkeypatch):
    _module(
        tmp_path,
        "observer_only_xyz",
        """
        from toolkit import hookimpl

        @hookimpl
        def on_eval(run, step, metrics):
            pass
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins = Plugins(["observer_only_xyz"], autoload=False)
    assert plugins.info["observer_only_xyz"].hooks == ["on_eval"]
    sys.modules.pop("observer_only_xyz", None)


def test_the_current_folder_comes_before_installed_modules(tmp_path, monkeypatch):
    # An installed copy of my_components and the user's edited one in the current folder: the
    # one they are editing is the one that loads, as the README promises.
    site, here = tmp_path / "site", tmp_path / "here"
    _module(site, "cwd_first_xyz", NORM_PLUGIN.replace("door-norm", "installed-norm"))
    _module(here, "cwd_first_xyz", NORM_PLUGIN.replace("door-norm", "local-norm"))
    monkeypatch.syspath_prepend(str(site))  # also restores sys.path afterwards
    monkeypatch.chdir(here)
    plugins = Plugins(["cwd_first_xyz"], autoload=False)
    assert ("normalization", "local-norm") in plugins.registry
    assert ("normalization", "installed-norm") not in plugins.registry
    # Only while the plugin imports: spawned sweep workers inherit sys.path, and a ./plugins
    # folder first there would shadow the toolkit's built-ins.
    assert sys.path[-1] == str(here) and sys.path[0] != str(here)
    sys.modules.pop("cwd_first_xyz", None)


def test_a_local_file_named_as_an_imported_module_is_refused(tmp_path, monkeypatch):
    # json is imported already, so import returns it whatever sys.path says: the user's
    # json.py would silently not load.
    _module(tmp_path, "json", NORM_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PluginError) as info:
        Plugins(["json"], autoload=False, source="--plugin")
    assert str(info.value).startswith(
        "plugin 'json' (--plugin): the current folder's json.py cannot load under that name, "
        "which is already imported from "
    )
    assert str(info.value).endswith("; rename your file (and the plugin)")


def test_a_local_plugins_folder_is_named_as_the_toolkits_own_package(tmp_path, monkeypatch):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "__init__.py").write_text("")
    _module(tmp_path, "plugins.mine_xyz", NORM_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PluginError) as info:
        Plugins(["plugins.mine_xyz"], autoload=False, source="--plugin")
    assert str(info.value) == (
        "plugin module 'plugins.mine_xyz' (--plugin) not found: 'plugins' is the toolkit's own "
        "package (its built-in plugins), so a folder of that name cannot be imported; rename "
        "your folder (e.g. to my_plugins) and name the module my_plugins.mine_xyz, or run from "
        "inside it and name the module mine_xyz"
    )


def test_a_missing_dependency_is_not_a_missing_plugin(tmp_path, monkeypatch):
    # The plugin's name starts with its dependency's, as flash_attn_plugin's with flash_attn.
    _module(tmp_path, "absent_dep_xyz_plugin", "import absent_dep_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError) as info:
        Plugins(["absent_dep_xyz_plugin"], autoload=False, source="--plugin")
    assert str(info.value) == (
        "plugin 'absent_dep_xyz_plugin' (--plugin) failed to import: it needs module "
        "'absent_dep_xyz', which is not installed; install the package that provides it "
        "(e.g. `pip install absent_dep_xyz`) and run again"
    )
    # A package above the plugin that is missing is the plugin missing.
    with pytest.raises(PluginError, match=r"plugin module 'absent_pkg_xyz\.sub' .* not found"):
        Plugins(["absent_pkg_xyz.sub"], autoload=False)


@pytest.mark.parametrize(
    "given, fix",
    [
        (
            "./my_components.py",
            "give 'my_components' instead, and run from the folder that holds it",
        ),
        ("my_components.py", "give 'my_components' instead, and run from the folder that holds it"),
        (os.path.join("sub", "my_components.py"), "give 'my_components' instead, and run from sub"),
    ],
)
def test_a_file_path_is_refused_with_the_module_name_to_give(given, fix):
    with pytest.raises(PluginError) as info:
        Plugins([given], autoload=False, source="--plugin")
    assert str(info.value) == (
        f"plugin {given!r} (--plugin) is a file path, but a plugin is named as a module: {fix}"
    )


def test_one_plugin_registering_a_name_twice_is_named_once():
    class Twice:
        @hookimpl
        def register_components(self, register):
            register("normalization", "twice", Identity)
            register("normalization", "twice", Identity)

    with pytest.raises(ComponentError) as info:
        Plugins(autoload=False).add(Twice(), name="p_twice")
    assert str(info.value) == (
        "plugin 'p_twice' (object) registers normalization 'twice' twice; give each its own "
        "name, or register it once"
    )
