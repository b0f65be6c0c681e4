"""The contract checks plugin authors run (onnx_run.testing), run on every bundled component:
the three optics, the tasks, the teachers, the error models and the distillation losses."""

from __future__ import annotations

import pytest
import torch

from onnx_run.components import HybridModel, TeacherSpec
from onnx_run.config import load_config
from onnx_run.plugins import registry
from onnx_run.testing import check_error_model, check_loss, check_optics, check_task, check_teacher

#: small settings of each bundled optics (the metasurface's realisation iterates less)
OPTICS = {
    "4f": {},
    "diffractive": {},
    "metasurface": {"realise_iterations": 3, "gs_iterations": 2},
}


def _optics(name: str, **extra):
    comp = registry()["optics"][name]
    torch.manual_seed(0)
    return comp.factory(comp.config(**{**OPTICS.get(name, {}), **extra}))


@pytest.mark.parametrize("name", sorted(OPTICS))
def test_bundled_optics_keep_the_contract(name, tmp_path):
    check_optics(_optics(name), tmp_path)


def test_every_bundled_optics_is_checked():
    assert set(registry()["optics"]) == set(OPTICS)


def _frontend_for(model) -> object:
    """A bundled frontend that offers what the error model needs (its own plugin's, by name)."""
    name = next((o for o in OPTICS if model.__module__.startswith(f"onnx_run_optics_{o}")), "4f")
    if name == "metasurface":  # its error models change pillar widths: a realised (physical) metasurface
        return _optics(name).realise(progress=False)[0]
    return _optics(name)


@pytest.mark.parametrize("name", sorted(registry()["error_models"]))
def test_bundled_error_models_keep_the_contract(name):
    comp = registry()["error_models"][name]
    model = comp.factory(comp.config() if comp.config else None)
    check_error_model(model, _frontend_for(model))


@pytest.mark.parametrize("name, dataset", [("classification", "digits"), ("classification", "shapes-rgb"),
                                           ("segmentation", "shapes"), ("all-optical", "digits")])
def test_bundled_tasks_keep_the_contract(name, dataset):
    comp = registry()["tasks"][name]
    task = comp.factory(comp.config(dataset=dataset) if name != "segmentation" else
                        comp.config(dataset=dataset, num_images=60))
    channels = 3 if dataset in ("shapes-rgb", "shapes") else 1
    kernels = 10 if name == "all-optical" else 4
    check_task(task, channels=channels, image_size=(16, 16) if name != "segmentation" else (32, 32),
               num_kernels=kernels)


@pytest.mark.parametrize("name, spec", [
    ("lenet", TeacherSpec("classification", 1, (28, 28), 10)),
    ("alexnet", TeacherSpec("classification", 3, (32, 32), 10)),
    ("resnet", TeacherSpec("classification", 3, (32, 32), 10)),
    ("unet", TeacherSpec("segmentation", 3, (32, 32), 2)),
])
def test_bundled_teachers_keep_the_contract(name, spec):
    comp = registry()["teachers"][name]
    check_teacher(comp.factory(comp.config(), spec), spec)


@pytest.mark.parametrize("name", sorted(registry()["distillation_losses"]))
def test_bundled_losses_keep_the_contract(name, tiny_optics):
    cfg = load_config(None, [], {"optics": "tiny", "distill": name})
    task = cfg.task.build()
    splits = task.datasets(image_size=(16, 16), channels=1, seed=0)
    torch.manual_seed(0)
    front = cfg.optics.build()
    student = HybridModel(front, task.build_backend(front.feature_shape(), 10))
    teacher = cfg.teacher.build(TeacherSpec("classification", 1, (16, 16), 10))
    x, y = splits.train.tensors[0][:8], splits.train.tensors[1][:8]
    check_loss(cfg.methods["distill"][name].build(), task, student, teacher, x, y)
