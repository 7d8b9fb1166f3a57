from __future__ import annotations

import pytest
import torch

from nslm.models.lstm import LSTMLanguageModel, detach_hidden


def test_shapes_and_state_carry():
    net = LSTMLanguageModel(50, embedding_dim=8, hidden_dim=12, num_layers=2, dropout=0.0).eval()
    inputs = torch.randint(0, 50, (10, 3))
    features, hidden = net(inputs)
    assert features.shape == (10, 3, 12) and hidden[0].shape == (2, 3, 12)
    first, state = net(inputs[:4])
    second, _ = net(inputs[4:], detach_hidden(state))
    assert torch.allclose(torch.cat([first, second]), features, atol=1e-6)  # windows == one long pass


def test_tied_weights_with_projection_when_sizes_differ():
    net = LSTMLanguageModel(50, embedding_dim=8, hidden_dim=12, tie_weights=True)
    assert net.decoder.weight is net.embedding.weight
    assert net.projection is not None and net.projection.weight.shape == (8, 12)
    features, _ = net(torch.randint(0, 50, (5, 2)))
    assert features.shape[-1] == 8
    same = LSTMLanguageModel(50, embedding_dim=8, hidden_dim=8, tie_weights=True)
    assert same.projection is None


def test_initialisation_options():
    classic = LSTMLanguageModel(1000, 20, 20, init_range=0.1)
    assert classic.decoder.bias.abs().max() == 0 and classic.embedding.weight.abs().max() <= 0.1
    assert classic.lstm.weight_hh_l0.abs().max() > 0.1  # PyTorch default U(+-1/sqrt(20)) = +-0.22
    zaremba = LSTMLanguageModel(1000, 20, 20, init_range=0.05, uniform_init_all=True)
    assert all(p.abs().max() <= 0.05 for p in zaremba.parameters())


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="hidden_dim"):
        LSTMLanguageModel(10, hidden_dim=0)
    with pytest.raises(ValueError, match="dropout"):
        LSTMLanguageModel(10, dropout=1.0)
