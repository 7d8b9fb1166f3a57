"""A sum tree over vocabulary rows for sampling from q(w) ∝ 1 + alpha * z_w^T A z_w, A any PSD [r, r] matrix.

The kernel is linear in the feature vec(z z^T), so the mass of a set of words is a dot product with a
precomputed sum (Blanc & Rendle 2018):

    mass(node) = n_node + alpha * <A, S_node>          S_node = sum_{w in node} z_w z_w^T   (r x r)

Words are cut into leaves of `leaf_size` consecutive ids (ids are frequency-sorted: no clustering is
needed, since every level below is sampled exactly and the grouping changes the cost, never the
distribution); leaves are the bottom of a complete binary tree stored as a heap (root 1, children of
node i are 2i and 2i+1; index 0 unused). Drawing descends from the root, picking a child with
probability proportional to its mass, and then a word of the leaf in proportion to its own weight: the
product of the choices telescopes to weight(w) / mass(root), for any A, with no O(V) work per draw.

Costs (L = ceil(V / leaf_size) leaves, padded to a power of two): build O(V r^2) time, O(L r^2 + V r)
memory; a draw of k ids O(k r^2 (1 + log(L / k)) + k leaf_size r^2). Sums and scores in float64: <A, S> is
a sum of terms that may cancel, and fp32 sums would put visible error into the probabilities the losses
correct by. The rows z themselves are kept as given (the embedding's dtype) and widened when read: exact,
half the memory of a float64 copy, and the very tensor a checkpoint stores (`QuadraticKernelSampler`).
The build is deterministic: the same z and leaf_size on the same device give the same tree, bit for bit.
"""

from __future__ import annotations

import torch


class KernelSumTree:
    def __init__(self, z: torch.Tensor, leaf_size: int) -> None:
        """`z`: [V, r] rows (the projected output embedding), kept as given (not copied) on its device:
        the caller hands over a tensor nothing else writes to."""
        self.z = z
        self.vocab_size, rank = self.z.shape
        self.leaf_size = leaf_size
        leaves = -(-self.vocab_size // leaf_size)
        self.depth = max(leaves - 1, 0).bit_length()  # levels below the root
        padded_leaves = 1 << self.depth
        # Leaf sums: pad the rows with zeros (weight 0 once counts say 0) to [padded_leaves, leaf_size, r].
        padded = self.z.new_zeros(padded_leaves * leaf_size, rank, dtype=torch.float64)
        padded[: self.vocab_size] = self.z  # widened exactly
        blocks = padded.view(padded_leaves, leaf_size, rank)
        level_sums = torch.einsum("lsi,lsj->lij", blocks, blocks).reshape(padded_leaves, rank * rank)
        starts = torch.arange(padded_leaves, device=z.device) * leaf_size
        level_counts = (self.vocab_size - starts).clamp(0, leaf_size).double()
        sums, counts = [level_sums], [level_counts]
        while len(level_counts) > 1:  # parents are the sums of their two children
            level_sums = level_sums[0::2] + level_sums[1::2]
            level_counts = level_counts[0::2] + level_counts[1::2]
            sums.append(level_sums)
            counts.append(level_counts)
        # heap order: [unused, root, level 1, ..., leaves]
        self.sums = torch.cat([torch.zeros_like(sums[-1]), *reversed(sums)])
        self.counts = torch.cat([torch.zeros_like(counts[-1]), *reversed(counts)])
        self.padded_leaves = padded_leaves

    def root_mass(self, matrix: torch.Tensor, alpha: float) -> torch.Tensor:
        """sum over all V words of 1 + alpha * z^T A z (a 0-dim tensor); O(r^2)."""
        return self.counts[1] + alpha * (self.sums[1] @ matrix.reshape(-1))

    def weights(self, ids: torch.Tensor, matrix: torch.Tensor, alpha: float) -> torch.Tensor:
        """1 + alpha * z_w^T A z_w for the given ids (any shape); O(len(ids) r^2)."""
        rows = self.z[ids].double()
        return 1.0 + alpha * ((rows @ matrix) * rows).sum(-1)

    def draw(self, num: int, matrix: torch.Tensor, alpha: float) -> torch.Tensor:
        """`num` i.i.d. ids with probability weight(w) / root_mass; O(num r^2 (1 + log(L / num) + leaf_size))."""
        device = self.z.device
        flat = matrix.reshape(-1)
        # The top levels hold fewer nodes than there are draws: their masses cost less computed once for
        # every node (< 4 num of them) than gathered per draw. Below, each draw gathers its own children.
        dense_levels = min(self.depth, max(num - 1, 0).bit_length())
        dense = self.counts[: 2 << dense_levels] + alpha * (self.sums[: 2 << dense_levels] @ flat)
        node = torch.ones(num, dtype=torch.long, device=device)
        for level in range(1, self.depth + 1):  # the level of the children
            children = torch.stack([2 * node, 2 * node + 1], dim=-1)  # [num, 2]
            if level <= dense_levels:
                mass = dense[children]
            else:
                mass = self.counts[children] + alpha * (self.sums[children] @ flat)
            left, right = mass[:, 0], mass[:, 1]
            point = torch.rand(num, dtype=torch.float64, device=device) * (left + right)
            # an empty (padding) right child is never entered, whatever the rounding of `point`
            node = children[:, 0] + ((point >= left) & (right > 0)).long()
        first = (node - self.padded_leaves) * self.leaf_size
        members = first.unsqueeze(-1) + torch.arange(self.leaf_size, device=device)  # [num, leaf_size]
        inside = members < self.vocab_size
        members = members.clamp(max=self.vocab_size - 1)
        leaf_weights = self.weights(members, matrix, alpha) * inside  # padding slots get weight 0
        choice = torch.multinomial(leaf_weights, 1)
        return members.gather(1, choice).squeeze(1)
