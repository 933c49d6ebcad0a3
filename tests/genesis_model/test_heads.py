import pytest
import torch
import torch.nn.functional as F

from genesis_model import MultiTaskModel
from genesis_model.heads import CONTRASTIVE_TEMPERATURE, TRIPLET_MARGIN, masked_mean

# Both sides of these comparisons run the model in float32 (the reference only averages in float64), on batches of
# other shapes, so their difference is float32 rounding: torch's own float32 tolerances, not float64's 1e-7.
FLOAT32 = {"atol": 1e-5, "rtol": 1.3e-6}


def padded(lengths, vocab=97, width=None):
    """Right-padded random ids and their mask of real tokens."""
    width = width or max(lengths)
    ids = torch.randint(1, vocab, (len(lengths), width))
    mask = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
    return ids.masked_fill(~mask, 0), mask


def pooled_reference(model, ids, mask):
    """Each row alone, without padding, averaged in float64."""
    rows = [model.lm.hidden_states(row[m][None])[0].double().mean(0) for row, m in zip(ids, mask)]
    return torch.stack(rows)


def test_masked_mean():
    hidden = torch.randn(2, 4, 3)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    torch.testing.assert_close(masked_mean(hidden, mask), torch.stack([hidden[0, :2].mean(0), hidden[1].mean(0)]))


def test_pooled_representation_ignores_right_padding(make_config):
    model = MultiTaskModel(make_config())
    ids, mask = padded([5, 9, 3], width=12)
    torch.testing.assert_close(model.pooled(ids, mask).double(), pooled_reference(model, ids, mask), **FLOAT32)


def test_lm_loss_is_mean_cross_entropy_over_labelled_tokens(make_config):
    model = MultiTaskModel(make_config())
    ids = torch.randint(0, 97, (2, 10))
    labels = torch.roll(ids, -1, dims=1)
    labels[:, -1] = -100
    labels[1, 6:] = -100
    out = model({"task": "lm", "input_ids": ids, "labels": labels})
    log_probs = model.lm(ids).double().log_softmax(-1)
    keep = labels != -100
    expected = -log_probs[keep].gather(-1, labels[keep][:, None]).mean()
    torch.testing.assert_close(out["loss"].double(), expected, **FLOAT32)
    assert out["tokens"].item() == keep.sum().item() == 9 + 6
    correct = (log_probs.argmax(-1) == labels)[keep]
    assert out["accuracy"].item() == pytest.approx(correct.double().mean().item())


def test_coherence_loss(make_config):
    model = MultiTaskModel(make_config())
    ids, mask = padded([6, 4, 8, 2])
    labels = torch.tensor([1, 0, 1, 0])
    out = model({"task": "coherence", "input_ids": ids, "attention_mask": mask, "labels": labels})
    head = model.coherence_head
    logit = pooled_reference(model, ids, mask) @ head.weight.double()[0] + head.bias.double()
    probability = torch.sigmoid(logit)
    expected = -(labels * probability.log() + (1 - labels) * (1 - probability).log()).mean()
    torch.testing.assert_close(out["loss"].double(), expected, atol=1e-5, rtol=1e-5)
    assert out["accuracy"].item() == ((logit > 0).long() == labels).double().mean().item()


def test_xref_triplet_loss(make_config):
    model = MultiTaskModel(make_config())
    groups = {role: padded(lengths) for role, lengths in
              (("anchor", [5, 3]), ("positive", [7, 2]), ("negative", [4, 9]))}
    batch = {"task": "xref", **{f"{role}_{kind}": tensor for role, (ids, mask) in groups.items()
                                for kind, tensor in (("ids", ids), ("mask", mask))}}
    out = model(batch)
    embedded = {role: F.normalize(pooled_reference(model, *g) @ model.xref_head.weight.double().T, dim=-1)
                for role, g in groups.items()}
    d_pos = 1 - (embedded["anchor"] * embedded["positive"]).sum(-1)
    d_neg = 1 - (embedded["anchor"] * embedded["negative"]).sum(-1)
    expected = (d_pos - d_neg + TRIPLET_MARGIN).clamp(min=0).mean()
    torch.testing.assert_close(out["loss"].double(), expected, atol=1e-5, rtol=1e-5)
    assert out["accuracy"].item() == (d_pos < d_neg).double().mean().item()


def test_paraphrase_infonce_loss(make_config):
    model = MultiTaskModel(make_config())
    (a_ids, a_mask), (b_ids, b_mask) = padded([4, 6, 3]), padded([5, 2, 7])
    out = model({"task": "paraphrase", "a_ids": a_ids, "a_mask": a_mask, "b_ids": b_ids, "b_mask": b_mask})
    head = model.paraphrase_head.weight.double()
    a = F.normalize(pooled_reference(model, a_ids, a_mask) @ head.T, dim=-1)
    b = F.normalize(pooled_reference(model, b_ids, b_mask) @ head.T, dim=-1)
    logits = a @ b.T / CONTRASTIVE_TEMPERATURE
    # Row i's positive is column i, in both directions.
    expected = -(logits.log_softmax(1).diagonal().mean() + logits.log_softmax(0).diagonal().mean()) / 2
    torch.testing.assert_close(out["loss"].double(), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("task", ["lm", "coherence", "xref", "paraphrase"])
def test_each_task_learns_a_fixed_batch(make_config, task):
    model = MultiTaskModel(make_config())
    ids, mask = padded([8, 6, 7, 5])
    batch = {
        "lm": {"input_ids": ids, "labels": torch.roll(ids, -1, 1).masked_fill(~mask, -100)},
        "coherence": {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([1, 0, 1, 0])},
        # Positive row 3 - i, negative row i - 2: for no row is the negative its anchor or its positive (a row whose
        # negative equals its positive keeps the loss at the margin however long it trains).
        "xref": {"anchor_ids": ids, "anchor_mask": mask, "positive_ids": ids.flip(0), "positive_mask": mask.flip(0),
                 "negative_ids": ids.roll(2, 0), "negative_mask": mask.roll(2, 0)},
        "paraphrase": {"a_ids": ids, "a_mask": mask, "b_ids": ids.roll(1, 1), "b_mask": mask},
    }[task] | {"task": task}
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = model(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] <= 0.5 * losses[0]  # <=: a triplet batch may start (and stay) with every margin met, at 0


def test_unknown_task_is_named(make_config):
    with pytest.raises(ValueError, match="unknown batch task 'qa'"):
        MultiTaskModel(make_config())({"task": "qa"})
