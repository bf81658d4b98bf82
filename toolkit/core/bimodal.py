"""The relevancy-update rules of Chefer, Gur & Wolf, "Generic Attention-model Explainability for
Interpreting Bi-Modal and Encoder-Decoder Transformers" (ICCV 2021), batched.

Every modality pair (m, n) holds a relevance map R^{mn} (B, N_m, N_n): R^{mm} starts as the identity
(each token is first relevant to itself), R^{mn} as zero. Attention layers are applied in the order
the model runs them, each through its gradient-weighted map Ā = mean_h (∇A ⊙ A)⁺:

- self-attention in s:      R^{ss} += Ā R^{ss};  R^{sq} += Ā R^{sq} for every other q;
- s attending to q (co-attention of two-stream models, or decoder-to-encoder cross-attention):
                            R^{sq} += (R̄^{ss})ᵀ Ā R̄^{qq};  R^{ss} += Ā R^{qs},
  with R̄^{xx} = (R^{xx} − I) row-normalised, plus I (the normalised residual). These are the
  published reference implementation's forms. When q itself carries relevance to a third
  modality m (BLIP's answer decoder reads question states that already hold image relevance),
  R^{sm} += (R̄^{ss})ᵀ Ā R^{qm} chains it through — our extension, stated here.
"""
from __future__ import annotations

import torch


def normalised_residual(relevance: torch.Tensor) -> torch.Tensor:
    """R̄ = (R − I) / rowsum(R − I) + I, rows with nothing beyond the identity left as I."""
    eye = torch.eye(relevance.shape[-1], dtype=relevance.dtype, device=relevance.device)
    beyond = relevance - eye
    sums = beyond.sum(dim=-1, keepdim=True)
    return torch.where(sums != 0, beyond / torch.where(sums != 0, sums, torch.ones_like(sums)), 0.0) + eye


class RelevanceState:
    """R^{mn} for every pair of modalities, updated layer by layer."""

    def __init__(self, sizes: dict[str, int], batch: int, device: torch.device | str = "cpu"):
        self.sizes = dict(sizes)
        self.maps: dict[tuple[str, str], torch.Tensor] = {}
        for m, size_m in sizes.items():
            for n, size_n in sizes.items():
                self.maps[m, n] = (torch.eye(size_m, device=device).expand(batch, -1, -1).clone() if m == n
                                   else torch.zeros(batch, size_m, size_n, device=device))

    def __getitem__(self, pair: tuple[str, str]) -> torch.Tensor:
        return self.maps[pair]

    def link(self, target: str, source: str, positions: torch.Tensor) -> None:
        """Tokens of ``target`` at ``positions`` (B, K) are copies of ``source``'s K output tokens:
        they inherit the source's relevance to every modality (GIT feeds image tokens into its text stream)."""
        for m in self.sizes:
            if m == target:
                continue
            inherited = torch.zeros_like(self.maps[target, m])
            index = positions.unsqueeze(-1).expand(-1, -1, self.sizes[m])
            inherited.scatter_(1, index, self.maps[source, m])
            self.maps[target, m] = self.maps[target, m] + inherited

    def self_attention(self, s: str, weighted: torch.Tensor) -> None:
        for n in self.sizes:
            self.maps[s, n] = self.maps[s, n] + weighted @ self.maps[s, n]

    def cross_attention(self, s: str, q: str, weighted: torch.Tensor) -> None:
        r_ss_bar_t = normalised_residual(self.maps[s, s]).transpose(-1, -2)
        updates = {(s, q): r_ss_bar_t @ weighted @ normalised_residual(self.maps[q, q]),
                   (s, s): weighted @ self.maps[q, s]}
        for m in self.sizes:
            if m not in (s, q):
                updates[s, m] = r_ss_bar_t @ weighted @ self.maps[q, m]
        for pair, update in updates.items():
            self.maps[pair] = self.maps[pair] + update


def propagate(sites: list[tuple[str, str, bool]], weighted: list[torch.Tensor], sizes: dict[str, int],
              links: dict[int, tuple[str, str, torch.Tensor]]) -> RelevanceState:
    """Apply the rules to every site in the order the model runs them. ``sites``: (query, key, together) per site,
    ``weighted`` its map Ā. Sites read ``together`` with the one before (LXMERT's two co-attention directions)
    update R from the same maps: neither update sees the other's, as in the authors' LXMERT implementation.
    ``links`` (site index -> (target, source, positions)) connect streams before that site (GIT)."""
    state = RelevanceState(sizes, weighted[0].shape[0], weighted[0].device)
    groups: list[list[int]] = []
    for index, (_, _, together) in enumerate(sites):
        if together and groups:
            groups[-1].append(index)
        else:
            groups.append([index])
    for group in groups:
        if group[0] in links:
            state.link(*links[group[0]])
        before, written = dict(state.maps), {}
        for index in group:
            state.maps = dict(before)
            query, key, _ = sites[index]
            if query == key:
                state.self_attention(query, weighted[index])
            else:
                state.cross_attention(query, key, weighted[index])
            written.update({pair: m for pair, m in state.maps.items() if m is not before[pair]})
        state.maps = {**before, **written}
    return state
