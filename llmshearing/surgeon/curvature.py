"""Per-matrix curvature for y = W a: OBS-style removal costs and weight updates.

``KroneckerCurvature`` uses the K-FAC approximation F ≈ G ⊗ A of the Fisher of W (out × in), so
the loss increase of a change ΔW is modelled as ½ tr(ΔWᵀ G ΔW A) = ½ vec(ΔW)ᵀ (G ⊗ A) vec(ΔW)
(row-major vec). ``IdentityCurvature`` is the same interface with F = I ⊗ I: costs are squared
magnitudes and removal is plain zeroing (the magnitude baseline, as the LLM Surgeon paper frames it).

Rows and columns are removed in equal-size blocks: block b of size s covers indices
[b·s, (b+1)·s) (an attention head is head_dim rows of q_proj, a neuron one row of gate_proj).
"""
from __future__ import annotations

import contextlib
from typing import Optional, Sequence

import torch


@contextlib.contextmanager
def one_cpu_thread():
    """Run a loop of many small CPU tensor ops on one thread. Each op of the column sweeps below is tiny,
    and with the intra-op thread pool every op waits for all its threads: on a machine whose cores are
    shared that wait dominates (SmolLM2's 576 × 576 q_proj at 50 %, 2 threads on 2 busy cores: 1.9 s;
    one thread: 0.03 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def damped(factor: torch.Tensor, damping: float) -> torch.Tensor:
    """``factor + damping × mean(diag) × I`` (a tiny floor keeps an all-zero factor invertible)."""
    shift = damping * float(factor.diagonal().mean())
    return factor + max(shift, 1e-8) * torch.eye(factor.shape[0], dtype=factor.dtype, device=factor.device)


def _spd_inverse(matrix: torch.Tensor) -> torch.Tensor:
    factor, info = torch.linalg.cholesky_ex(matrix)
    if int(info) == 0:  # cholesky_solve against I: several times faster than cholesky_inverse on CPU
        return torch.cholesky_solve(torch.eye(matrix.shape[0], dtype=matrix.dtype, device=matrix.device), factor)
    return torch.linalg.pinv(matrix, hermitian=True)  # not positive definite in fp32: stay finite


def _blocks(indices: torch.Tensor, size: int) -> torch.Tensor:
    """Row/column indices covered by blocks ``indices`` of ``size``."""
    return (indices[:, None] * size + torch.arange(size, device=indices.device)).reshape(-1)


def _diagonal_blocks(matrix: torch.Tensor, size: int) -> torch.Tensor:
    """[n, size, size] diagonal blocks of a square matrix."""
    n = matrix.shape[0] // size
    index = torch.arange(n, device=matrix.device)
    return matrix.view(n, size, n, size)[index, :, index, :]


def _block_costs(weight_blocks: torch.Tensor, other_factor: torch.Tensor, inverse_blocks: torch.Tensor) -> torch.Tensor:
    """½ tr(S⁻¹ M) per block with M = W_b F W_bᵀ, S the block of the inverse factor (OBS cost)."""
    m = weight_blocks @ other_factor @ weight_blocks.transpose(1, 2)
    return 0.5 * torch.linalg.solve(inverse_blocks, m).diagonal(dim1=1, dim2=2).sum(-1)


def _columns_and_block(inverse: torch.Tensor, selected: torch.Tensor):
    """Columns Q of an inverse factor and its QQ block."""
    columns = inverse[:, selected]
    return columns, columns[selected]


class DampedFactor:
    """A damped Kronecker factor and its inverse (projections that share an input share one)."""

    def __init__(self, raw: torch.Tensor, damping: float = 0.01, dtype=torch.float32):
        self.matrix = damped(raw.to(dtype), damping)
        self.inverse = _spd_inverse(self.matrix)


class KroneckerCurvature:
    """Curvature G ⊗ A of one weight matrix from damped factors."""

    def __init__(self, A: DampedFactor, G: DampedFactor):
        self.A, self.A_inv = A.matrix, A.inverse
        self.G, self.G_inv = G.matrix, G.inverse

    @classmethod
    def from_raw(cls, A: torch.Tensor, G: torch.Tensor, damping: float = 0.01, dtype=torch.float32):
        return cls(DampedFactor(A, damping, dtype), DampedFactor(G, damping, dtype))

    def _cast(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.to(self.A.dtype)

    # ---- costs ------------------------------------------------------------------------------
    def row_costs(self, weight: torch.Tensor, size: int = 1) -> torch.Tensor:
        """Cost of removing each block of ``size`` rows: ½ tr(([G⁻¹]_BB)⁻¹ W_B A W_Bᵀ)."""
        w = self._cast(weight)
        blocks = w.view(-1, size, w.shape[1])
        return _block_costs(blocks, self.A, _diagonal_blocks(self.G_inv, size))

    def column_costs(self, weight: torch.Tensor, size: int = 1) -> torch.Tensor:
        """Cost of removing each block of ``size`` columns: ½ tr(([A⁻¹]_BB)⁻¹ W_Bᵀ G W_B)."""
        w = self._cast(weight)
        blocks = w.t().reshape(-1, size, w.shape[0])
        return _block_costs(blocks, self.G, _diagonal_blocks(self.A_inv, size))

    def weight_costs(self, weight: torch.Tensor) -> torch.Tensor:
        """Cost of removing each single weight: ½ W_ij² / ([G⁻¹]_ii [A⁻¹]_jj)."""
        scale = self.G_inv.diagonal()[:, None] * self.A_inv.diagonal()[None, :]
        return 0.5 * self._cast(weight).pow(2) / scale

    # ---- updates (in place; removed entries end exactly zero) --------------------------------
    def remove_rows(self, weight: torch.Tensor, rows: torch.Tensor) -> None:
        """ΔW = −G⁻¹[:, Q] ([G⁻¹]_QQ)⁻¹ W_Q: the optimal change of the other rows."""
        if rows.numel() == 0:
            return
        columns, block = _columns_and_block(self.G_inv, rows)
        w = self._cast(weight)
        update = -columns @ torch.linalg.solve(block, w[rows])
        weight.copy_(w + update)
        weight[rows] = 0

    def remove_columns(self, weight: torch.Tensor, cols: torch.Tensor) -> None:
        """ΔW = −W_Q ([A⁻¹]_QQ)⁻¹ A⁻¹[Q, :]: the optimal change of the other columns."""
        if cols.numel() == 0:
            return
        columns, block = _columns_and_block(self.A_inv, cols)
        w = self._cast(weight)
        update = -torch.linalg.solve(block, w[:, cols].t()).t() @ columns.t()
        weight.copy_(w + update)
        weight[:, cols] = 0

    def remove_weights(self, weight: torch.Tensor, removed: torch.Tensor) -> None:
        """Sequential OBS over the input columns with A (rows do not update each other): column by
        column, each removed weight goes to zero and moves the not yet visited weights of its row
        by the OBS update for them, read off the upper Cholesky factor U of A⁻¹ (A⁻¹ = Uᵀ U).

        With F ≈ diag(G) ⊗ A (a row's G scale cancels) this is the exact optimum whenever the removed
        weights of a row come before its kept ones; in general the weights already visited stay put.
        The exact row-wise optimum needs a |Q_i| × |Q_i| solve per row (about half an hour per
        model on a 2-core CPU for SmolLM2-135M at 50 %); this costs O(in³ + out·in²) per matrix.
        Summing independent single-weight OBS updates instead, −G⁻¹ ((W ⊘ [g aᵀ]) ⊙ E) A⁻¹, ignores
        how the removed weights interact and overshoots (SmolLM2-135M, unstructured 0.5, 2k
        calibration tokens: perplexity 329 with it, 128 with no update at all).
        """
        if not bool(removed.any()):
            return
        upper = torch.linalg.cholesky(self.A_inv, upper=True)
        columns = self._cast(weight).t().contiguous()  # one contiguous row per input column: fast slices
        mask = removed.t().to(columns.dtype).contiguous()
        with one_cpu_thread() if columns.device.type == "cpu" else contextlib.nullcontext():
            self._sweep(columns, mask, upper)
        weight.copy_(columns.t())
        weight[removed] = 0

    @staticmethod
    def _sweep(columns: torch.Tensor, mask: torch.Tensor, upper: torch.Tensor) -> None:
        n = columns.shape[0]
        for start in range(0, n, _COLUMN_BLOCK):
            end = min(start + _COLUMN_BLOCK, n)
            block, corner = columns[start:end].clone(), upper[start:end, start:end]
            errors = torch.zeros_like(block)
            for k in range(end - start):
                error = torch.mul(block[k], mask[start + k], out=errors[k]).div_(corner[k, k])
                block[k:].addr_(corner[k, k:], error, alpha=-1)
            columns[start:end] = block
            columns[end:].addmm_(upper[start:end, end:].t(), errors, alpha=-1)  # the block's effect on later columns

    def prune_weights(self, weight: torch.Tensor, density: float, forced: Optional[torch.Tensor] = None,
                      two_four: bool = False, row_scaled: bool = False) -> torch.Tensor:
        """Choose and remove weights of this matrix together (SparseGPT's adaptive mask selection):
        the sequential OBS sweep of ``remove_weights``, with each block of columns' mask chosen when
        the sweep reaches it, from the weights as updated so far; returns the removed mask.

        A weight's cost is w² / U_jj² (U the upper Cholesky factor of A⁻¹: the loss of removing it
        given that the columns after it may still move), times 1 / [G⁻¹]_ii with ``row_scaled``.
        Each block of columns removes its share of round((1 − density) × weights) (so the matrix
        ends at the density exactly); ``two_four``: never more than two in a group of four inputs,
        and at density 0.5 exactly two, chosen group by group as the sweep reaches it.
        """
        upper = torch.linalg.cholesky(self.A_inv, upper=True)
        scale = 1.0 / self.G_inv.diagonal() if row_scaled else None
        return prune_sequentially(weight, upper, density, forced, two_four, scale)


_COLUMN_BLOCK = 128  # columns updated one by one before their effect on the rest is applied in one product


def _block_choice(costs: torch.Tensor, forced: torch.Tensor, count: int, two_four: bool) -> torch.Tensor:
    """The ``count`` cheapest of a [columns, rows] block of costs (``forced`` first, then the cheapest;
    with ``two_four`` at most two per group of four consecutive columns of a row)."""
    count = max(count, int(forced.sum()))
    ranked = costs.masked_fill(forced, -float("inf"))
    if two_four:
        groups = ranked.t().reshape(ranked.shape[1], -1, 4)
        order = groups.argsort(dim=-1, stable=True)
        excluded = torch.ones_like(groups, dtype=torch.bool).scatter_(-1, order[..., :2], False)
        ranked = ranked.masked_fill(excluded.reshape(ranked.shape[1], -1).t(), float("inf"))
    chosen = torch.zeros(ranked.numel(), dtype=torch.bool, device=costs.device)
    chosen[ranked.reshape(-1).topk(count, largest=False, sorted=False).indices] = True
    return chosen.view_as(costs)


@torch.no_grad()
def prune_sequentially(weight: torch.Tensor, upper: Optional[torch.Tensor], density: float,
                       forced: Optional[torch.Tensor] = None, two_four: bool = False,
                       row_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """See ``KroneckerCurvature.prune_weights``; ``upper`` None: magnitude costs, no update."""
    with one_cpu_thread() if weight.device.type == "cpu" else contextlib.nullcontext():
        return _prune_sequentially(weight, upper, density, forced, two_four, row_scale)


def _prune_sequentially(weight, upper, density, forced, two_four, row_scale) -> torch.Tensor:
    dtype = upper.dtype if upper is not None else torch.float32
    columns = weight.to(dtype).t().contiguous()  # [in, out]: one contiguous row per input column
    n, rows = columns.shape
    forced = torch.zeros_like(columns, dtype=torch.bool) if forced is None else forced.t().to(columns.device)
    removed = torch.zeros_like(columns, dtype=torch.bool)
    diagonal = upper.diagonal() if upper is not None else torch.ones(n, dtype=dtype, device=columns.device)
    scale = row_scale.to(dtype)[None, :] if row_scale is not None else 1.0
    total = (1.0 - density) * n * rows
    group_wise = two_four and density <= 0.5  # the last 2:4 shot: exactly two per group, group by group
    for start in range(0, n, _COLUMN_BLOCK):
        end = min(start + _COLUMN_BLOCK, n)
        block = columns[start:end].clone()
        if group_wise:
            mask = forced[start:end].clone()
        else:
            count = round(total * end / n) - round(total * start / n)
            costs = block.pow(2) / diagonal[start:end, None].pow(2) * scale
            mask = _block_choice(costs, forced[start:end], count, two_four)
        if upper is None:
            removed[start:end] = mask
            continue
        corner = upper[start:end, start:end]
        errors = torch.zeros_like(block)
        for k in range(end - start):
            if group_wise and k % 4 == 0:
                group = block[k:k + 4].pow(2) / corner.diagonal()[k:k + 4, None].pow(2) * scale
                group = group.masked_fill(forced[start + k:start + k + 4], -float("inf"))
                mask[k:k + 4].scatter_(0, group.topk(2, dim=0, largest=False).indices, True)
            error = torch.mul(block[k], mask[k], out=errors[k]).div_(corner[k, k])
            block[k:].addr_(corner[k, k:], error, alpha=-1)
        columns[start:end] = block
        removed[start:end] = mask
        columns[end:].addmm_(upper[start:end, end:].t(), errors, alpha=-1)
    if group_wise and upper is None:
        ranked = columns.pow(2).masked_fill(forced, -float("inf")).t().reshape(rows, -1, 4)
        picked = torch.zeros_like(ranked, dtype=torch.bool).scatter_(-1, ranked.argsort(dim=-1, stable=True)[..., :2], True)
        removed = picked.reshape(rows, -1).t()
    weight.copy_(columns.t())
    removed = removed.t().contiguous()
    weight[removed] = 0
    return removed


class IdentityCurvature:
    """F = I ⊗ I: magnitude costs, removal without updating the remaining weights."""

    def row_costs(self, weight: torch.Tensor, size: int = 1) -> torch.Tensor:
        return 0.5 * weight.float().pow(2).reshape(-1, size * weight.shape[1]).sum(-1)

    def column_costs(self, weight: torch.Tensor, size: int = 1) -> torch.Tensor:
        return self.row_costs(weight.t(), size)

    def weight_costs(self, weight: torch.Tensor) -> torch.Tensor:
        return 0.5 * weight.float().pow(2)

    def remove_rows(self, weight: torch.Tensor, rows: torch.Tensor) -> None:
        weight[rows] = 0

    def remove_columns(self, weight: torch.Tensor, cols: torch.Tensor) -> None:
        weight[:, cols] = 0

    def remove_weights(self, weight: torch.Tensor, removed: torch.Tensor) -> None:
        weight[removed] = 0

    def prune_weights(self, weight: torch.Tensor, density: float, forced: Optional[torch.Tensor] = None,
                      two_four: bool = False, row_scaled: bool = False) -> torch.Tensor:
        return prune_sequentially(weight, None, density, forced, two_four)


def block_indices(blocks: Sequence[int], size: int, device=None) -> torch.Tensor:
    """Sorted row/column indices of whole blocks (e.g. the head_dim rows of each removed head)."""
    index = torch.as_tensor(sorted(blocks), dtype=torch.long, device=device)
    return _blocks(index, size)


def quadratic_loss(delta: torch.Tensor, A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """½ tr(ΔWᵀ G ΔW A): the loss increase the Kronecker model predicts for a change ΔW."""
    delta = delta.to(G.dtype)
    return 0.5 * torch.trace(delta.t() @ G @ delta @ A)
