"""Export: GDSII round trip (pillar count, positions, widths), previews, and the CLI on a run directory."""

from __future__ import annotations

import numpy as np
import torch
from click.testing import CliRunner

from onnx_run.config import load_config
from onnx_run.train.checkpoint import save_checkpoint

from onnx_run_optics_metasurface.config import MetasurfaceConfig
from onnx_run_optics_metasurface.export import export_frontend, pillar_centres_um, read_gds_pillars, tile_names
from onnx_run_optics_metasurface.frontend import MetasurfaceFrontend


SMALL = dict(kernel_mm=0.01, spacing_mm=0.005, kernel_size=3, sensor_pitch_um=3.0, distance_mm=0.05,
             num_kernels=2, input_size_px=8)


def _design(export_gds: bool = True) -> MetasurfaceFrontend:
    torch.manual_seed(0)
    front = MetasurfaceFrontend(MetasurfaceConfig(mode="physical", export_gds=export_gds, **SMALL))
    return front


def _expected(front: MetasurfaceFrontend) -> dict[str, np.ndarray]:
    """(x_um, y_um, width_nm) per tile, computed independently of the writer."""
    c = front.config
    widths = np.round(front.design_widths_nm().detach().numpy())
    centres = front.tile_centres_mm() * 1000.0
    off = pillar_centres_um(c.pillars, c.period_nm)
    out = {}
    for t, name in enumerate(tile_names(2, True)):
        rows = []
        for i in range(c.pillars):
            for j in range(c.pillars):
                rows.append((centres[t, 1] + off[j], centres[t, 0] - off[i], widths[t, i, j]))
        out[name] = np.array(rows)
    return out


def _sorted(a: np.ndarray) -> np.ndarray:
    return a[np.lexsort((a[:, 1].round(2), a[:, 0].round(2)))]  # pillars are 0.293 um apart


def test_export_skips_gds_unless_asked(tmp_path):
    names = {f.name for f in export_frontend(_design(export_gds=False), tmp_path / "export")}
    assert "widths_nm.npy" in names and "layout.gds" not in names
    assert not (tmp_path / "export" / "layout.gds").exists()


def test_gds_round_trip(tmp_path):
    front = _design()
    files = export_frontend(front, tmp_path / "export")
    names = {f.name for f in files}
    assert {"layout.gds", "widths_nm.npy", "widths.png", "psfs.png", "psfs.npy", "kernels.npy"} <= names
    got = read_gds_pillars(tmp_path / "export" / "layout.gds", layer=1, datatype=0)
    want = _expected(front)
    assert set(got) == set(want) == {"K00_POS", "K01_POS", "K00_NEG", "K01_NEG"}
    n = front.config.pillars
    for name in want:
        assert got[name].shape == (n * n, 3)  # one polygon per pillar
        g, w = _sorted(got[name]), _sorted(want[name])
        assert np.allclose(g[:, :2], w[:, :2], atol=1e-6)  # positions, um
        assert np.allclose(g[:, 2], w[:, 2], atol=1e-6)  # widths, nm
    # the width map saved beside it is the same design
    assert np.allclose(np.load(tmp_path / "export" / "widths_nm.npy"), front.design_widths_nm().detach().numpy())
    # wrong layer: nothing there
    assert all(v.size == 0 for v in read_gds_pillars(tmp_path / "export" / "layout.gds", layer=7).values())


def test_export_command_on_a_run_directory(tmp_path):
    from onnx_run.cli import cli

    sets = [f"optics.{k}={v}" for k, v in SMALL.items()]
    cfg = load_config(sets=["optics.name=metasurface", *sets, "students.methods=[\"none\"]"])
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(cfg.to_toml())
    realised = _design()
    save_checkpoint(run / "realised" / "none-seed0" / "frontend.pt", {"model": realised.state_dict()})
    res = CliRunner().invoke(cli, ["metasurface", "export", str(run), "--gds", str(tmp_path / "out" / "chip.gds"),
                                   "--layer", "5", "--datatype", "2"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "chip_widths.png").exists() and (tmp_path / "out" / "chip_psfs.png").exists()
    got = read_gds_pillars(tmp_path / "out" / "chip.gds", layer=5, datatype=2)
    want = _expected(realised)
    assert all(np.allclose(_sorted(got[k]), _sorted(want[k]), atol=1e-3) for k in want)
    # a missing design is one line, exit 2
    res = CliRunner().invoke(cli, ["metasurface", "export", str(run), "--gds", str(tmp_path / "x.gds"), "--seed", "3"])
    assert res.exit_code == 2 and "realised/none-seed3/frontend.pt: missing" in res.output
    assert "realised designs here: none-seed0" in res.output


def test_registered_frontend_exports_through_the_contract(tmp_path):
    """The plugin wires export.py to the frontend it registers: ``frontend.export`` (what the
    pipeline calls) writes the same files as ``export_frontend``."""
    from onnx_run.plugins import registry

    cls = registry()["optics"]["metasurface"].factory
    torch.manual_seed(0)
    front = cls(MetasurfaceConfig(mode="physical", export_gds=False, **SMALL))
    names = {f.name for f in front.export(tmp_path / "export")}
    assert names == {f.name for f in export_frontend(front, tmp_path / "direct")}
    assert "widths_nm.npy" in names
