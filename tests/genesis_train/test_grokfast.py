import copy
import io
import math

import pytest
import torch

from genesis_train.grokfast import GrokfastEMA


def mlp(*widths: int, seed: int = 0) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    for fan_in, fan_out in zip(widths, widths[1:]):
        layers += [torch.nn.Linear(fan_in, fan_out), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])


def random_gradients(model: torch.nn.Module, steps: int, none: dict[int, set[str]] | None = None,
                     dtype: torch.dtype = torch.float32) -> list[dict[str, torch.Tensor | None]]:
    """A gradient per parameter and step; `none[step]` names the parameters that have no gradient at that step."""
    generator = torch.Generator().manual_seed(1)
    none = none or {}
    return [{name: None if name in none.get(step, ()) else torch.randn(p.shape, generator=generator).to(dtype)
             for name, p in model.named_parameters()} for step in range(steps)]


def set_gradients(model: torch.nn.Module, gradients: dict[str, torch.Tensor | None]) -> None:
    for name, p in model.named_parameters():
        g = gradients[name]
        p.grad = None if g is None else g.clone()


def gradients_of(model: torch.nn.Module) -> dict[str, torch.Tensor | None]:
    return {name: None if p.grad is None else p.grad.clone() for name, p in model.named_parameters()}


def reference(steps: list[dict[str, torch.Tensor | None]], alpha: float, lamb: float):
    """The paper's formula step by step in float64: the filtered gradients of every step and the final EMA."""
    ema: dict[str, torch.Tensor] = {}
    filtered = []
    for gradients in steps:
        out = {}
        for name, g in gradients.items():
            if g is None:
                continue
            g = g.double()
            ema[name] = g.clone() if name not in ema else alpha * ema[name] + (1 - alpha) * g
            out[name] = g + lamb * ema[name]
        filtered.append(out)
    return filtered, ema


def run_filter(model: torch.nn.Module, grokfast: GrokfastEMA, steps: list[dict[str, torch.Tensor | None]]):
    """Applies the filter to each step's gradients; returns the filtered gradients of every step."""
    filtered = []
    for gradients in steps:
        set_gradients(model, gradients)
        grokfast.apply()
        filtered.append(gradients_of(model))
    return filtered


def assert_matches_reference(model, grokfast, steps, alpha, lamb, rtol=1e-5, atol=1e-5):
    expected, expected_ema = reference(steps, alpha, lamb)
    for got, want, gradients in zip(run_filter(model, grokfast, steps), expected, steps):
        for name, g in gradients.items():
            if g is None:
                assert got[name] is None
            else:
                assert got[name].dtype == g.dtype
                torch.testing.assert_close(got[name].double(), want[name], rtol=rtol, atol=atol)
    assert grokfast.ema.keys() == expected_ema.keys()
    for name, h in grokfast.ema.items():
        assert h.dtype == torch.float32
        torch.testing.assert_close(h.double(), expected_ema[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("alpha, lamb", [(0.98, 2.0), (0.5, 1.5), (0.0, 3.0)])
def test_several_steps_match_the_float64_reference(alpha, lamb):
    model = mlp(4, 8, 8, 3)
    steps = random_gradients(model, 6)
    assert_matches_reference(model, GrokfastEMA(model.named_parameters(), alpha=alpha, lamb=lamb), steps, alpha,
                             lamb)


def test_first_step_starts_the_ema_at_the_gradient():
    model = mlp(4, 8, 3)
    (gradients,) = random_gradients(model, 1)
    set_gradients(model, gradients)
    grokfast = GrokfastEMA(model.named_parameters(), lamb=2.0)
    grokfast.apply()
    for name, p in model.named_parameters():
        assert torch.equal(grokfast.ema[name], gradients[name])
        torch.testing.assert_close(p.grad, 3.0 * gradients[name])


def test_lamb_zero_leaves_gradients_bit_for_bit():
    model = mlp(4, 8, 3)
    steps = random_gradients(model, 3)
    # Adding 0 * h (h > 0 here) would turn -0.0 into +0.0.
    steps[0]["0.bias"][0], steps[1]["0.bias"][0] = 1.0, -0.0
    grokfast = GrokfastEMA(model.named_parameters(), lamb=0.0)
    for gradients, got in zip(steps, run_filter(model, grokfast, steps)):
        for name, g in gradients.items():
            assert torch.equal(got[name].view(torch.int32), g.view(torch.int32))
    assert set(grokfast.ema) == {name for name, _ in model.named_parameters()}  # the EMA is still tracked


def test_parameters_without_gradient_are_skipped():
    model = mlp(4, 8, 3)
    # "2.bias" has no gradient at first (its EMA starts later, at its first gradient); "0.weight" misses step 2.
    steps = random_gradients(model, 5, none={0: {"2.bias"}, 1: {"2.bias"}, 2: {"0.weight"}})
    grokfast = GrokfastEMA(model.named_parameters(), alpha=0.7, lamb=1.0)
    run_filter(model, grokfast, steps[:2])
    assert "2.bias" not in grokfast.ema
    before = grokfast.ema["0.weight"].clone()
    run_filter(model, grokfast, steps[2:3])
    assert model[0].weight.grad is None and torch.equal(grokfast.ema["0.weight"], before)
    assert torch.equal(grokfast.ema["2.bias"], steps[2]["2.bias"])
    # The whole sequence against the reference, which skips missing gradients the same way.
    model = mlp(4, 8, 3)
    grokfast = GrokfastEMA(model.named_parameters(), alpha=0.7, lamb=1.0)
    assert_matches_reference(model, grokfast, steps, 0.7, 1.0)


def test_no_gradient_at_all_is_a_no_op():
    model = mlp(4, 3)
    grokfast = GrokfastEMA(model.named_parameters())
    grokfast.apply()
    assert grokfast.ema == {} and all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("dtype, rtol", [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)])
def test_low_precision_gradients_keep_their_dtype_and_the_ema_stays_float32(dtype, rtol):
    model = mlp(4, 8, 3).to(dtype)
    steps = random_gradients(model, 4, dtype=dtype)
    # The filtered gradient is rounded once into the low precision; the EMA matches in float32 tolerance.
    assert_matches_reference(model, GrokfastEMA(model.named_parameters(), alpha=0.8, lamb=2.0), steps, 0.8, 2.0,
                             rtol=rtol, atol=rtol)


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_a_non_finite_gradient_leaves_ema_and_gradients_unchanged(bad):
    model = mlp(4, 8, 3)
    steps = random_gradients(model, 3)
    steps[1]["2.weight"][1, 2] = bad
    grokfast = GrokfastEMA(model.named_parameters())
    run_filter(model, grokfast, steps[:1])
    before = {name: h.clone() for name, h in grokfast.ema.items()}
    (got,) = run_filter(model, grokfast, steps[1:2])
    for name, g in steps[1].items():
        torch.testing.assert_close(got[name], g, rtol=0, atol=0, equal_nan=True)
        assert torch.equal(grokfast.ema[name], before[name])
    # The steps after it go on as if the bad step had not happened.
    model = mlp(4, 8, 3)
    assert_matches_reference(model, GrokfastEMA(model.named_parameters()), [steps[0], steps[2]], 0.98, 2.0)


def test_a_non_finite_first_gradient_starts_no_ema():
    model = mlp(4, 3)
    (gradients,) = random_gradients(model, 1)
    gradients["0.bias"][0] = math.nan
    set_gradients(model, gradients)
    grokfast = GrokfastEMA(model.named_parameters())
    grokfast.apply()
    assert grokfast.ema == {}


def test_state_dict_round_trip_resumes_bit_for_bit():
    model = mlp(4, 8, 3)
    steps = random_gradients(model, 6, none={0: {"2.bias"}, 1: {"2.bias"}})  # "2.bias" is first seen after resume
    grokfast = GrokfastEMA(model.named_parameters(), alpha=0.9, lamb=1.5)
    run_filter(model, grokfast, steps[:2])
    # Through torch.save and a weights_only load, as a checkpoint's train state goes.
    buffer = io.BytesIO()
    torch.save({"grokfast": grokfast.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)["grokfast"]
    resumed_model = mlp(4, 8, 3, seed=5)
    resumed = GrokfastEMA(resumed_model.named_parameters())  # other defaults: the state's alpha and lamb win
    resumed.load_state_dict(state)
    assert (resumed.alpha, resumed.lamb) == (0.9, 1.5)
    for got, want in zip(run_filter(resumed_model, resumed, steps[2:]), run_filter(model, grokfast, steps[2:])):
        for name in want:
            assert torch.equal(got[name], want[name])


def test_state_of_another_model_is_refused():
    small, large = mlp(4, 8, 3), mlp(4, 8, 8, 3)  # large has "4.weight" and "4.bias" besides small's names
    small_state = GrokfastEMA(small.named_parameters()).state_dict()
    large_state = GrokfastEMA(large.named_parameters()).state_dict()
    with pytest.raises(ValueError, match=r"no parameter '4\.weight'"):
        GrokfastEMA(large.named_parameters()).load_state_dict(small_state)
    with pytest.raises(ValueError, match=r"holds parameter '4\.weight'"):
        GrokfastEMA(small.named_parameters()).load_state_dict(large_state)
    other_width = mlp(4, 9, 3)
    grokfast = GrokfastEMA(other_width.named_parameters())
    set_gradients(other_width, random_gradients(other_width, 1)[0])
    grokfast.apply()
    with pytest.raises(ValueError, match=r"'0\.weight' has shape \(9, 4\)"):
        GrokfastEMA(small.named_parameters()).load_state_dict(grokfast.state_dict())


@pytest.mark.parametrize("options, flag", [
    *((dict(alpha=alpha), "--grokfast-alpha") for alpha in (1.0, -0.1, math.nan)),
    *((dict(lamb=lamb), "--grokfast-lamb") for lamb in (-1.0, math.nan)),
])
def test_options_out_of_range_are_refused(options, flag):
    with pytest.raises(ValueError, match=flag):
        GrokfastEMA(mlp(4, 3).named_parameters(), **options)


# End to end: a training step in the trainer's order (every micro-batch's backward, unscale_, the filter, clipping,
# the scaler's step), on a tiny regression model with plain SGD so that a float64 reference is short.

LR = 0.05


def data(micro_batches: int, steps: int):
    generator = torch.Generator().manual_seed(2)
    return [[(torch.randn(8, 4, generator=generator), torch.randn(8, 3, generator=generator))
             for _ in range(micro_batches)] for _ in range(steps)]


def train(model, batches, grokfast: GrokfastEMA | None = None, scaler=None, clip: float = math.inf):
    """The parameters after each step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    scaler = scaler or torch.amp.GradScaler("cpu", enabled=False)
    trajectory = []
    for micro_batches in batches:
        for x, y in micro_batches:
            loss = torch.nn.functional.mse_loss(model(x), y)
            scaler.scale(loss / len(micro_batches)).backward()
        scaler.unscale_(optimizer)
        if grokfast is not None:
            grokfast.apply()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        trajectory.append([p.detach().clone() for p in model.parameters()])
    return trajectory


def filtered_training(batches, **options):
    model = mlp(4, 8, 3)
    return train(model, batches, GrokfastEMA(model.named_parameters(), **options))


def test_training_with_the_filter_takes_another_trajectory():
    batches = data(1, 5)
    plain = train(mlp(4, 8, 3), batches)
    for without, with_filter in zip(plain, filtered_training(batches)):
        assert not all(torch.allclose(p, q) for p, q in zip(without, with_filter))
    # lamb = 0 only tracks the EMA: the very same trajectory.
    for without, with_filter in zip(plain, filtered_training(batches, lamb=0.0)):
        assert all(torch.equal(p, q) for p, q in zip(without, with_filter))


def test_with_accumulation_the_filter_sees_the_summed_gradient_once_a_step():
    alpha, lamb = 0.6, 2.0
    batches = data(2, 5)
    model = mlp(4, 8, 3)
    reference_model = copy.deepcopy(model).double()
    trajectory = train(model, batches, GrokfastEMA(model.named_parameters(), alpha=alpha, lamb=lamb))
    ema: list[torch.Tensor] = []
    for micro_batches, after in zip(batches, trajectory):
        loss = sum(torch.nn.functional.mse_loss(reference_model(x.double()), y.double()) / len(micro_batches)
                   for x, y in micro_batches)
        params = list(reference_model.parameters())
        gradients = torch.autograd.grad(loss, params)
        ema = list(gradients) if not ema else [alpha * h + (1 - alpha) * g for h, g in zip(ema, gradients)]
        with torch.no_grad():
            for p, g, h in zip(params, gradients, ema):
                p -= LR * (g + lamb * h)
        for p, q in zip(after, params):
            torch.testing.assert_close(p.double(), q, rtol=1e-5, atol=1e-6)


def test_under_a_grad_scaler_the_filter_sees_unscaled_gradients_and_skips_an_overflowed_step():
    batches = data(1, 4)
    unscaled = filtered_training(batches)
    model = mlp(4, 8, 3)
    grokfast = GrokfastEMA(model.named_parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12, growth_interval=1)  # a new scale every step
    scaled = train(model, batches, grokfast, scaler)
    for p, q in zip(unscaled[-1], scaled[-1]):  # the loss scale (a power of two) leaves no trace
        assert torch.equal(p, q)
    # An overflowing batch: the scaler skips the step, and the EMA must not take the inf in.
    before = {name: h.clone() for name, h in grokfast.ema.items()}
    x, y = batches[0][0]
    (skipped,) = train(model, [[(x * math.inf, y)]], grokfast, scaler)
    assert scaler.get_scale() < 2.0 ** 16  # it did see the overflow (and halved its scale)
    assert all(torch.equal(p, q) for p, q in zip(skipped, scaled[-1]))
    assert all(torch.equal(grokfast.ema[name], h) for name, h in before.items())
