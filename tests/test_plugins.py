"""The plugin manager: in-process registration, provenance, rejection of broken plugins."""

from __future__ import annotations

import json
import sys

import pytest
from click.testing import CliRunner

import onnx_run
from onnx_run import plugins
from onnx_run.cli import cli
from onnx_run.plugins import PluginError, register_plugin, registry, unregister_plugin


def test_builtins_registered_with_provenance():
    reg = registry()
    assert {"none", "kd", "ntkd"} <= set(reg["distillation_losses"])
    assert "classification" in reg["tasks"]
    lenet = reg["teachers"]["lenet"]
    assert lenet.distribution == "onnx-run" and lenet.plugin == "onnx_run.tasks.plugin"


def test_in_process_plugin_appears_and_disappears(tiny_optics):
    assert "tiny" in registry()["optics"]
    comp = registry()["optics"]["tiny"]
    assert comp.plugin == "tiny-optics" and comp.description == "tiny test optics"
    runner = CliRunner()
    assert "tiny" in runner.invoke(cli, ["--help"]).output
    listing = runner.invoke(cli, ["plugins", "--all"]).output
    assert "tiny-optics" in listing and "optics: tiny" in listing
    unregister_plugin("tiny-optics")
    assert "tiny" not in registry()["optics"]
    assert "tiny" not in runner.invoke(cli, ["--help"]).output.split("Installed components")[1]


def test_misspelt_hook_is_rejected_with_clear_message():
    class Misspelt:
        @onnx_run.hookimpl
        def register_optic(self, register):  # missing "s"
            pass

    with pytest.raises(PluginError, match=r"register_optic.*not an onnx_run hook"):
        register_plugin(Misspelt(), name="misspelt")
    assert plugins.get_plugin_manager().get_plugin("misspelt") is None


def test_duplicate_component_name_names_both_plugins():
    class Dup:
        @onnx_run.hookimpl
        def register_distillation_losses(self, register):
            register("kd", object)

    with pytest.raises(PluginError, match=r"duplicate distillation_losses name 'kd'.*'dup'.*onnx_run.distill.plugin|"
                                          r"duplicate distillation_losses name 'kd'.*onnx_run.distill.plugin.*'dup'"):
        register_plugin(Dup(), name="dup")
    assert plugins.get_plugin_manager().get_plugin("dup") is None
    assert registry()["distillation_losses"]["kd"].plugin == "onnx_run.distill.plugin"


def test_config_must_be_attrs_class():
    class Bad:
        @onnx_run.hookimpl
        def register_error_models(self, register):
            register("bad-config", object, config=dict)

    with pytest.raises(PluginError, match="must be an attrs class"):
        register_plugin(Bad(), name="bad-config")


def make_dist(root, dist_name: str, ep_name: str, module: str, code: str, version: str = "1.0") -> None:
    """A real installed distribution (dist-info with entry_points.txt) on a sys.path folder."""
    (root / f"{module}.py").write_text(code)
    info = root / f"{dist_name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[onnx_run]\n{ep_name} = {module}\n")


def _fresh(monkeypatch, root):
    monkeypatch.syspath_prepend(str(root))
    plugins.reset_plugin_manager()


def test_plugin_that_fails_to_import_spares_the_others(monkeypatch, tmp_path):
    make_dist(tmp_path, "onnx-run-good", "good", "good_plugin_mod",
              "import onnx_run\nfrom onnx_run.components import ErrorModel\n"
              "@onnx_run.hookimpl\ndef register_error_models(register):\n    register('good-one', ErrorModel)\n")
    make_dist(tmp_path, "onnx-run-broken", "broken", "broken_plugin_mod", "raise RuntimeError('boom at import')\n")
    _fresh(monkeypatch, tmp_path)
    assert "good-one" in registry()["error_models"]
    assert registry()["error_models"]["good-one"].distribution == "onnx-run-good"
    failed = plugins.failed_plugins()
    assert [f.name for f in failed] == ["broken"] and "boom at import" in failed[0].error
    out = CliRunner().invoke(cli, ["plugins", "--json"]).output
    assert "boom at import" in out
    sys.modules.pop("good_plugin_mod", None)
    sys.modules.pop("broken_plugin_mod", None)


def test_an_installed_plugin_with_a_taken_name_is_left_out_not_fatal(monkeypatch, tmp_path):
    """A third-party plugin that registers 'kd' again: every command still works, the plugin
    is left out whole (its other components too) and reported; the built-in 'kd' stays."""
    make_dist(tmp_path, "onnx-run-dup", "dup", "dup_plugin_mod",
              "import onnx_run\nfrom onnx_run.components import ErrorModel\n"
              "@onnx_run.hookimpl\ndef register_error_models(register):\n    register('dup-extra', ErrorModel)\n"
              "@onnx_run.hookimpl\ndef register_distillation_losses(register):\n    register('kd', object)\n")
    _fresh(monkeypatch, tmp_path)
    assert registry()["distillation_losses"]["kd"].plugin == "onnx_run.distill.plugin"
    assert "dup-extra" not in registry()["error_models"]
    for args in (["--help"], ["plugins"], ["config", "show", "--optics", "4f", "--task", "classification"]):
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 0, (args, res.output)
    rows = json.loads(CliRunner().invoke(cli, ["plugins", "--json"]).output)
    dup = [r for r in rows if r["name"] == "dup"]
    assert len(dup) == 1 and "duplicate distillation_losses name 'kd'" in dup[0]["error"] and "rename one" in dup[0]["error"]
    sys.modules.pop("dup_plugin_mod", None)


def test_the_misspelt_hook_is_not_among_the_known_ones():
    class Misspelt:
        @onnx_run.hookimpl
        def register_optic(self, register):
            pass

    with pytest.raises(PluginError) as err:
        register_plugin(Misspelt(), name="misspelt2")
    known = str(err.value).split("known hooks: ", 1)[1].split(", ")
    assert "register_optic" not in known and "register_optics" in known


def test_env_controls_load_and_disable(monkeypatch, tmp_path):
    for x in "ab":
        make_dist(tmp_path, f"onnx-run-{x}", x, f"envplug_{x}",
                  f"import onnx_run\n@onnx_run.hookimpl\ndef register_error_models(register):\n"
                  f"    register('from-{x}', object)\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def names():
        plugins.reset_plugin_manager()
        return set(registry()["error_models"])

    assert {"from-a", "from-b"} <= names()
    monkeypatch.setenv("ONNX_RUN_LOAD_PLUGINS", "a")
    assert "from-a" in names() and "from-b" not in names()
    monkeypatch.setenv("ONNX_RUN_LOAD_PLUGINS", "")
    got = names()
    assert "from-a" not in got and "from-b" not in got and "brightness" in got  # built-ins stay
    monkeypatch.delenv("ONNX_RUN_LOAD_PLUGINS")
    monkeypatch.setenv("ONNX_RUN_DISABLE_PLUGINS", "onnx-run-b")
    assert "from-a" in names() and "from-b" not in names()
