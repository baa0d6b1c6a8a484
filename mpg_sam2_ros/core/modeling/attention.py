"""Attention blocks used by the Mask Prior Generator and the Global-Historical Aggregator.

Both are post-norm (attention, add, LayerNorm, FFN, add, LayerNorm) as described in paper
Sec. 3.3/3.4. Submodule names follow the official checkpoint (``self_attn`` / ``multihead_attn``
become ``attn``; ``linear1``, ``linear2``, ``norm1``, ``norm2`` are kept) so released weights
map one to one. Tensors are sequence-first: ``[S, B, C]``.
"""

from __future__ import annotations

import torch
from torch import nn


def _with_pos(x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    return x if pos is None else x + pos


class AttentionFFNBlock(nn.Module):
    """out = LN2(y + FFN(y)),  y = LN1(q + Attn(q + q_pos, kv + kv_pos, kv)).

    With ``query is context`` it is the spatiotemporal self-attention block of the MPG
    (Eq. 2, first line, plus the FFN named in Sec. 3.3). With a separate context it is the
    cross-attention fusion of the HGA (Eqs. 4 and 5: "add, layer norm, FFN").

    Arguments:
      dim: channel size.
      num_heads: attention heads.
      ffn_dim: hidden size of the FFN.
      dropout: on attention weights, after attention and inside the FFN.
    """

    def __init__(self, *, dim: int, num_heads: int, ffn_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(
        self,
        query: torch.Tensor,
        context: torch.Tensor | None = None,
        *,
        query_pos: torch.Tensor | None = None,
        context_pos: torch.Tensor | None = None,
        context_padding: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """query [Sq, B, C], context [Sk, B, C] (None: self-attention), context_padding [B, Sk],
        attn_mask bool [Sq, Sk] (True: may not attend)."""
        if context is None:
            context, context_pos = query, query_pos
        attended = self.attn(
            _with_pos(query, query_pos),
            _with_pos(context, context_pos),
            context,
            key_padding_mask=context_padding,
            attn_mask=attn_mask,
            need_weights=False,
        )[0]
        x = self.norm1(query + self.dropout1(attended))
        ffn = self.linear2(self.dropout(torch.relu(self.linear1(x))))
        return self.norm2(x + self.dropout2(ffn))
