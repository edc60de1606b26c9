"""distill.layer_losses against direct computations: layer maps, the hidden-state MSE over real
tokens (with and without a projection), and the attention KL over real query rows."""

from __future__ import annotations

import pytest
import torch

from distill.layer_losses import Projections, attention_loss, hidden_loss, layer_pairs


def test_layer_pairs():
    assert layer_pairs(3, 6, [0, 2, 5]) == [(0, 0), (1, 1), (2, 3), (3, 6)]
    assert layer_pairs(3, 6, None) == [(0, 0), (1, 2), (2, 4), (3, 6)]
    assert layer_pairs(4, 12, None) == [(0, 0), (1, 3), (2, 6), (3, 9), (4, 12)]
    with pytest.raises(ValueError):
        layer_pairs(2, 6, [0, 1, 2])


def test_hidden_loss_is_the_masked_mse_of_mapped_layers():
    torch.manual_seed(0)
    b, n, h = 3, 5, 4
    student = tuple(torch.randn(b, n, h) for _ in range(3))
    teacher = tuple(torch.randn(b, n, h) for _ in range(5))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    pairs = [(0, 0), (1, 2), (2, 4)]
    got = hidden_loss(student, teacher, pairs, mask, Projections(3, h, h), tokens_aligned=True)
    want = []
    for s, t in pairs:
        rows = [(student[s][i, j] - teacher[t][i, j]).pow(2).mean() for i in range(b) for j in range(n) if mask[i, j]]
        want.append(torch.stack(rows).mean())
    torch.testing.assert_close(got, torch.stack(want).mean())
    # padding positions do not count: changing them changes nothing
    noisy = tuple(x.clone() for x in student)
    noisy[1][0, 4] += 100
    torch.testing.assert_close(hidden_loss(noisy, teacher, pairs, mask, Projections(3, h, h), tokens_aligned=True), got)


def test_hidden_loss_cls_only_and_projection_gets_gradients():
    torch.manual_seed(1)
    student = tuple(torch.randn(2, 4, 3, requires_grad=True) for _ in range(2))
    teacher = tuple(torch.randn(2, 6, 8) for _ in range(2))  # other width and length (other tokenizer)
    projections = Projections(2, 3, 8)
    loss = hidden_loss(student, teacher, [(0, 0), (1, 1)], torch.ones(2, 4), projections, tokens_aligned=False)
    want = torch.stack([(projections.maps[k](student[k][:, 0]) - teacher[k][:, 0]).pow(2).mean() for k in range(2)])
    torch.testing.assert_close(loss, want.mean())
    loss.backward()
    assert projections.maps[0].weight.grad is not None and student[1].grad[:, 1:].abs().sum() == 0


def test_attention_loss_is_kl_over_real_query_rows():
    torch.manual_seed(2)
    b, heads, n = 2, 2, 4
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    keys_mask = mask[:, None, None, :].bool()

    def attn():
        return torch.randn(b, heads, n, n).masked_fill(~keys_mask, -1e9).softmax(-1)

    student, teacher = (attn(), attn()), (attn(), attn(), attn())
    got = attention_loss(student, teacher, [(0, 0), (1, 1), (2, 3)], mask)
    want = []
    for s, t in [(1, 1), (2, 3)]:
        a_s, a_t = student[s - 1], teacher[t - 1]
        kl = [(a_t[i, k, q] * ((a_t[i, k, q] + 1e-12).log() - (a_s[i, k, q] + 1e-12).log())).sum()
              for i in range(b) for k in range(heads) for q in range(n) if mask[i, q]]
        want.append(torch.stack(kl).mean())
    torch.testing.assert_close(got, torch.stack(want).mean())
    assert attention_loss(teacher[:1], teacher[:1], [(1, 1)], mask) < 1e-6  # identical maps: zero


def test_attention_loss_averages_heads_when_counts_differ():
    torch.manual_seed(3)
    s = (torch.randn(1, 2, 3, 3).softmax(-1),)
    t = (torch.randn(1, 4, 3, 3).softmax(-1),)
    got = attention_loss(s, t, [(1, 1)], torch.ones(1, 3))
    a_s, a_t = s[0].mean(1), t[0].mean(1)
    want = (a_t * ((a_t + 1e-12).log() - (a_s + 1e-12).log())).sum(-1).mean()
    torch.testing.assert_close(got, want)


def test_attention_maps_are_distributions_once_their_dropout_is_off(tiny_bert_dir):
    from transformers import AutoModelForSequenceClassification

    from distill.layer_losses import disable_attention_dropout

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, attn_implementation="eager").train()
    batch = {"input_ids": torch.randint(1000, 2000, (2, 9)), "attention_mask": torch.ones(2, 9, dtype=torch.long)}
    before = model(**batch, output_attentions=True).attentions[0]
    assert not torch.allclose(before.sum(-1), torch.ones(2, 2, 9))  # dropout on: rows do not sum to 1
    assert disable_attention_dropout(model) == 4  # one per block of the tiny 4-layer BERT
    after = model(**batch, output_attentions=True).attentions[0]
    torch.testing.assert_close(after.sum(-1), torch.ones(2, 2, 9))
    assert any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules())  # other dropout stays
