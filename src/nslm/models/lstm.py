"""Multi-layer LSTM language model. It returns output *features*; turning them into a loss is the job of
`nslm.losses`, so exact softmax and the sampled objectives share one model and one output embedding."""

from __future__ import annotations

import torch
from torch import nn

from nslm.errors import ConfigError

Hidden = tuple[torch.Tensor, torch.Tensor]


class LSTMLanguageModel(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int = 200,
        hidden_dim: int = 200,
        num_layers: int = 2,
        dropout: float = 0.2,
        tie_weights: bool = False,
        init_range: float = 0.1,
        uniform_init_all: bool = False,
        sparse_embedding: bool = False,
        output_layer: bool = True,
    ) -> None:
        """
        Args:
            tie_weights: share the input embedding with the output layer (Press & Wolf 2017; Inan et al.
                2017). When `hidden_dim != embedding_dim` a linear projection maps LSTM outputs down to
                the embedding size first.
            init_range: embedding and output weights ~ U(-r, r), output bias 0 (the classic example).
            uniform_init_all: also draw every LSTM parameter from U(-r, r) (Zaremba et al. 2014) instead
                of PyTorch's default U(-1/sqrt(hidden), 1/sqrt(hidden)).
            output_layer: build the output embedding (decoder). False when the objective has its own output
                layer (loss=adaptive; set by nslm.build).
            sparse_embedding: the input embedding's gradient covers only the rows of the window's words
                (with a sampled loss, no part of a step then costs O(vocabulary); SGD or Adam, see nslm.optim.sparse).
        """
        super().__init__()
        for name, value in (
            ("vocab_size", vocab_size),
            ("embedding_dim", embedding_dim),
            ("hidden_dim", hidden_dim),
            ("num_layers", num_layers),
        ):
            if value < 1:
                raise ConfigError(f"model.net.{name} must be a positive integer, got {value}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"model.net.dropout must be in [0, 1), got {dropout}")
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, embedding_dim, sparse=sparse_embedding)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(embedding_dim, hidden_dim, num_layers, dropout=dropout if num_layers > 1 else 0.0)
        if tie_weights and not output_layer:
            raise ConfigError("model.net.tie_weights=true needs the network's output embedding; loss=adaptive has "
                              "its own output layer: set model.net.tie_weights=false")  # fmt: skip
        self.output_dim = embedding_dim if tie_weights else hidden_dim
        self.projection = nn.Linear(hidden_dim, embedding_dim, bias=False) if self.output_dim != hidden_dim else None
        self.decoder = nn.Linear(self.output_dim, vocab_size) if output_layer else None
        self.reset_parameters(init_range, uniform_init_all)
        if tie_weights:
            self.decoder.weight = self.embedding.weight

    def reset_parameters(self, init_range: float, uniform_init_all: bool) -> None:
        if uniform_init_all:
            for parameter in self.parameters():
                nn.init.uniform_(parameter, -init_range, init_range)
            return
        nn.init.uniform_(self.embedding.weight, -init_range, init_range)
        if self.decoder is not None:
            nn.init.uniform_(self.decoder.weight, -init_range, init_range)
            nn.init.zeros_(self.decoder.bias)

    @property
    def output_weight(self) -> torch.Tensor | None:
        """[vocab, features]: the output embedding the loss scores features against (None without one)."""
        return None if self.decoder is None else self.decoder.weight

    @property
    def output_bias(self) -> torch.Tensor | None:
        return None if self.decoder is None else self.decoder.bias

    def sparse_tables(self, sparse_output: bool) -> list[nn.Parameter]:
        """The tables whose gradient is a sparse tensor over the rows a step used, given whether the loss
        gathers output rows sparsely: the input embedding with `sparse_embedding`, the output embedding
        with a sparse sampled loss. A tied table counts only when both of its uses are sparse (otherwise
        its gradient comes out dense)."""
        embedding, output = self.embedding.weight, self.output_weight
        if output is embedding:
            return [output] if self.embedding.sparse and sparse_output else []
        tables = ((embedding, self.embedding.sparse), (output, sparse_output and output is not None))
        return [param for param, sparse in tables if sparse]

    def forward(self, inputs: torch.Tensor, hidden: Hidden | None = None) -> tuple[torch.Tensor, Hidden]:
        """inputs [time, batch] ids -> features [time, batch, features], new hidden state.

        `hidden=None` starts from zeros (start of an epoch or of an evaluation).
        """
        embedded = self.dropout(self.embedding(inputs))
        output, hidden = self.lstm(embedded, hidden)
        output = self.dropout(output)
        if self.projection is not None:
            output = self.projection(output)
        return output, hidden


def detach_hidden(hidden: Hidden) -> Hidden:
    """Truncated BPTT: keep the state's values for the next window, cut the graph behind them."""
    return tuple(state.detach() for state in hidden)  # type: ignore[return-value]
