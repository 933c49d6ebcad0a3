import math

import pytest
import torch

from genesis_train.config import TrainConfig
from genesis_train.optim import build_optimizer, build_scheduler, lr_factor


def test_schedule_warmup_then_cosine_to_min_lr():
    cfg = TrainConfig(steps=110, warmup_steps=10, lr=1e-3, min_lr=1e-4)
    assert lr_factor(0, cfg) == pytest.approx(1 / 11)
    assert lr_factor(9, cfg) == pytest.approx(10 / 11)
    assert lr_factor(10, cfg) == pytest.approx(1.0)
    # halfway through the decay the cosine is at its midpoint between peak and floor
    assert lr_factor(60, cfg) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(110, cfg) == pytest.approx(0.1)
    assert lr_factor(500, cfg) == pytest.approx(0.1)


def test_scheduler_drives_optimizer_lr():
    cfg = TrainConfig(steps=20, warmup_steps=0, lr=0.5, min_lr=0.0)
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg)
    for _ in range(10):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi * 10 / 20)))


def test_weight_decay_only_on_matrices_not_embeddings_or_norms():
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    opt = build_optimizer(model, TrainConfig(weight_decay=0.1))
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    assert opt.param_groups[0]["weight_decay"] == 0.1 and opt.param_groups[1]["weight_decay"] == 0.0
    assert decayed == {id(model[1].weight)}


def test_cpu_optimizer_is_fused_and_steps_as_the_reference_adamw():
    cfg = TrainConfig(lr=1e-2, weight_decay=0.1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 3))
    reference = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 3)).double()
    reference.load_state_dict(model.state_dict())
    opt = build_optimizer(model, cfg)
    assert all(group["fused"] for group in opt.param_groups)
    # The same groups (decay on the Linear weight only) through the per-parameter loop, in float64.
    ref_opt = torch.optim.AdamW([
        {"params": [reference[1].weight], "weight_decay": cfg.weight_decay},
        {"params": [reference[0].weight, reference[1].bias], "weight_decay": 0.0},
    ], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), foreach=False)
    tokens = torch.tensor([1, 2, 3, 7])
    for _ in range(3):
        for net, optimizer in ((model, opt), (reference, ref_opt)):
            optimizer.zero_grad()
            net(tokens).square().sum().backward()
            optimizer.step()
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q.float(), rtol=1e-5, atol=1e-6)


def test_adam_adds_weight_decay_to_the_gradient_before_normalizing():
    """--optimizer adam: the L2 term wd * w joins the gradient, then Adam's moments (a hand-written float64 Adam)."""
    cfg = TrainConfig(optimizer="adam", lr=1e-2, weight_decay=0.5, beta1=0.9, beta2=0.98)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3, bias=False)
    w = model.weight.detach().double().clone()
    m, v = torch.zeros_like(w), torch.zeros_like(w)
    opt = build_optimizer(model, cfg)
    x = torch.randn(5, 4)
    for t in range(1, 4):
        opt.zero_grad()
        model(x).square().sum().backward()
        g = (2 * (x.double() @ w.T)).T @ x.double() + cfg.weight_decay * w  # d/dw sum((xw^T)^2) + wd * w
        opt.step()
        m = cfg.beta1 * m + (1 - cfg.beta1) * g
        v = cfg.beta2 * v + (1 - cfg.beta2) * g * g
        w = w - cfg.lr * (m / (1 - cfg.beta1**t)) / ((v / (1 - cfg.beta2**t)).sqrt() + 1e-8)
    torch.testing.assert_close(model.weight.detach().double(), w, rtol=1e-5, atol=1e-6)
    # the default, AdamW, decays the weights outside the normalization
    assert build_optimizer(model, TrainConfig(weight_decay=0.5)).param_groups[0]["decoupled_weight_decay"]
    assert not opt.param_groups[0]["decoupled_weight_decay"]
