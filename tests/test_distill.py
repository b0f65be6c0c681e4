"""Distillation losses against exact small cases."""

from __future__ import annotations

import math

import pytest
import torch

from onnx_run.components import DistillContext, HybridModel
from onnx_run.distill.losses import KDConfig, KDLoss, NTKDConfig, NTKDLoss, kd_loss
from onnx_run.tasks.backends import FCBackend
from onnx_run.tasks.classification import ClassificationConfig, ClassificationTask


def test_kd_loss_hand_computed():
    s = torch.tensor([[1.0, 0.0]])
    t = torch.tensor([[0.0, 2.0]])
    T = 2.0
    ps = [math.exp(0.5) / (math.exp(0.5) + 1), 1 / (math.exp(0.5) + 1)]
    pt = [1 / (1 + math.exp(1)), math.exp(1) / (1 + math.exp(1))]
    kl = sum(pt[i] * math.log(pt[i] / ps[i]) for i in range(2))
    assert float(kd_loss(s, t, T)) == pytest.approx(T * T * kl, rel=1e-6)
    assert float(kd_loss(t, t, T)) == pytest.approx(0.0, abs=1e-7)


def test_standardized_kd_hand_computed():
    """Logit standardisation: each row z-scored (torch's unbiased std) before
    the temperature softmax; invariant to a teacher's logit scale and offset."""
    s = torch.tensor([[1.0, 0.0, -1.0]])
    t = torch.tensor([[0.0, 2.0, 4.0]])
    T = 2.0
    # rows z-scored by hand: mean 0 / 2, unbiased std 1 / 2
    zs, zt = [1.0, 0.0, -1.0], [-1.0, 0.0, 1.0]
    ps = [math.exp(z / T) for z in zs]
    pt = [math.exp(z / T) for z in zt]
    ps = [p / sum(ps) for p in ps]
    pt = [p / sum(pt) for p in pt]
    kl = sum(pt[i] * math.log(pt[i] / ps[i]) for i in range(3))
    assert float(kd_loss(s, t, T, standardize=True)) == pytest.approx(T * T * kl, rel=1e-6)
    scaled = 7.0 * t + 3.0  # an over-confident teacher: same ranking and margins, other scale
    assert float(kd_loss(s, scaled, T, standardize=True)) == pytest.approx(T * T * kl, rel=1e-5)
    assert float(kd_loss(s, scaled, T)) != pytest.approx(T * T * kl, rel=1e-2)


def test_kd_objective_mixes_with_cross_entropy():
    task = ClassificationTask(ClassificationConfig())
    s = torch.tensor([[1.0, 0.0], [0.2, 0.3]])
    t = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    y = torch.tensor([1, 0])
    loss, logs = KDLoss(KDConfig(temperature=3.0, alpha=0.25))(
        DistillContext(x=s, y=y, index=torch.arange(2), student=None, student_outputs=s, task=task,
                       teacher_outputs=t))
    expected = 0.25 * kd_loss(s, t, 3.0) + 0.75 * torch.nn.functional.cross_entropy(s, y)
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    assert set(logs) == {"task_loss", "kd_loss"}


class _Linear(torch.nn.Module):
    """A tiny 'optics': non-negative linear map, so the exact NTK is easy to get by brute force."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.rand(2, 1, 3, 3, dtype=torch.float64))

    def forward(self, x):
        return torch.nn.functional.conv2d(x, self.weight.square(), padding=1)


def _brute_ntk(model, x, names):
    params = dict(model.named_parameters())
    rows = []
    for i in range(x.shape[0]):
        out = model(x[i:i + 1])[0]
        grads = []
        for c in range(out.shape[0]):
            g = torch.autograd.grad(out[c], [params[n] for n in names], retain_graph=True)
            grads.append(torch.cat([t.flatten() for t in g]))
        rows.append(torch.stack(grads))
    j = torch.stack(rows)  # (n, O, P)
    return torch.einsum("iop,jop->ij", j, j)


def _small_case():
    """(task, tiny hybrid model, 4 images, labels, a teacher kernel), seeded."""
    torch.manual_seed(0)
    task = ClassificationTask(ClassificationConfig())
    model = HybridModel(_Linear(), FCBackend((2, 4, 4), 3, hidden=[5], pool=2)).double()
    x = torch.rand(4, 1, 4, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1])
    k_teacher = torch.rand(4, 4, dtype=torch.float64)
    return task, model, x, y, k_teacher @ k_teacher.T


@pytest.mark.parametrize("params", ["backend", "all"])
def test_ntkd_loss_equals_exact_small_case_and_gradient_matches_fd(params):
    task, model, x, y, k_teacher = _small_case()
    cfg = NTKDConfig(alpha=0.5, beta=2.0, discrepancy="mse", params=params)
    loss_fn = NTKDLoss(cfg)

    def loss_of(with_outputs: bool):
        ctx = DistillContext(x=x, y=y, index=torch.arange(4), student=model,
                             student_outputs=None if with_outputs else model(x), task=task,
                             teacher_kernel=lambda: k_teacher)
        return loss_fn(ctx)[0]

    names = [n for n, _ in model.named_parameters() if params == "all" or n.startswith("backend.")]
    k_student = _brute_ntk(model, x, names)
    expected = 0.5 * task.loss(model(x), y) + 2.0 * ((k_student - k_teacher) ** 2).mean()
    assert float(loss_of(True).detach()) == pytest.approx(float(expected.detach()), rel=1e-9)
    assert float(loss_of(False).detach()) == pytest.approx(float(expected.detach()), rel=1e-9)
    # gradient w.r.t. an optical and a digital parameter vs central finite differences
    loss = loss_of(True)
    grads = torch.autograd.grad(loss, [model.frontend.weight, model.backend.net[2].weight])
    for p, g in zip([model.frontend.weight, model.backend.net[2].weight], grads):
        for flat in (0, 3):
            h = 1e-6
            with torch.no_grad():
                p.view(-1)[flat] += h
                up = float(loss_of(True))
                p.view(-1)[flat] -= 2 * h
                down = float(loss_of(True))
                p.view(-1)[flat] += h
            assert float(g.view(-1)[flat]) == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-9)
    assert model.frontend.weight.grad is None


def test_ntkd_kd_term_adds_hinton_kd_on_the_teacher_outputs():
    """``kd_weight``: NTKD's loss plus kd_weight * T^2 KL(teacher_T || student_T), hand-computed on
    a small case; the loss asks the loop for teacher outputs only when the term is on."""
    task, model, x, y, k_teacher = _small_case()
    t_out = torch.randn(4, 3, dtype=torch.float64)
    names = [n for n, _ in model.named_parameters() if n.startswith("backend.")]
    k_student = _brute_ntk(model, x, names)
    base = 0.5 * task.loss(model(x), y) + 2.0 * ((k_student - k_teacher) ** 2).mean()
    for weight, temperature in [(0.0, 1.0), (0.7, 4.0)]:
        loss_fn = NTKDLoss(NTKDConfig(alpha=0.5, beta=2.0, discrepancy="mse", kd_weight=weight,
                                      kd_temperature=temperature))
        assert loss_fn.needs_teacher_outputs is (weight > 0)
        ctx = DistillContext(x=x, y=y, index=torch.arange(4), student=model, student_outputs=None, task=task,
                             teacher_kernel=lambda: k_teacher, teacher_outputs=t_out if weight else None)
        loss, logs = loss_fn(ctx)
        p_t = torch.softmax(t_out / temperature, -1)
        kl = (p_t * (p_t.log() - torch.log_softmax(model(x) / temperature, -1))).sum(-1).mean()
        expected = base + weight * temperature ** 2 * kl
        assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-9)
        assert ("kd_loss" in logs) is (weight > 0)


def test_beta_schedules_follow_their_closed_forms():
    from onnx_run.distill.losses import scheduled

    assert scheduled(2.0, "constant", 0.7) == 2.0
    assert scheduled(2.0, "linear", 0.25) == pytest.approx(1.5)
    assert scheduled(2.0, "cosine", 0.0) == pytest.approx(2.0)
    assert scheduled(2.0, "cosine", 0.5) == pytest.approx(1.0)
    assert scheduled(2.0, "cosine", 1.0) == pytest.approx(0.0, abs=1e-12)
    # the NTKD loss weighs its kernel term by the schedule at ctx.progress
    torch.manual_seed(0)
    task = ClassificationTask(ClassificationConfig())
    model = HybridModel(_Linear(), FCBackend((2, 4, 4), 3, hidden=[5], pool=2)).double()
    x = torch.rand(4, 1, 4, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1])
    k_teacher = torch.eye(4, dtype=torch.float64)
    values = {}
    for progress in (0.0, 0.5):
        ctx = DistillContext(x=x, y=y, index=torch.arange(4), student=model, student_outputs=model(x), task=task,
                             teacher_kernel=lambda: k_teacher, progress=progress)
        loss, logs = NTKDLoss(NTKDConfig(beta=2.0, beta_schedule="linear"))(ctx)
        values[progress] = (float(loss.detach()), float(logs["task_loss"]), float(logs["ntk_loss"]))
    for progress, (loss, task_loss, ntk_loss) in values.items():
        assert loss == pytest.approx(task_loss + 2.0 * (1 - progress) * ntk_loss, rel=1e-9)


def test_the_settings_name_the_estimators_and_discrepancies_that_exist():
    """distill.settings repeats the names so that reading a config imports no torch; they
    must stay those onnx_run.ntk implements."""
    from onnx_run.distill import settings
    from onnx_run.ntk import DISCREPANCIES, NTK_METHODS

    assert settings.NTK_METHODS == NTK_METHODS and settings.DISCREPANCIES == DISCREPANCIES
