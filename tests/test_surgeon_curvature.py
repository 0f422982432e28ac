"""OBS costs and correlated updates against the Kronecker quadratic model ½ vec(ΔW)ᵀ (G ⊗ A) vec(ΔW)."""
import pytest
import torch

from llmshearing.surgeon.curvature import IdentityCurvature, KroneckerCurvature, block_indices, quadratic_loss

OUT, IN = 12, 10


def spd(n, seed):
    x = torch.randn(3 * n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x.t() @ x / (3 * n)


@pytest.fixture
def problem():
    weight = torch.randn(OUT, IN, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    curvature = KroneckerCurvature.from_raw(spd(IN, 1), spd(OUT, 2), dtype=torch.float64)  # fp64: identities to rounding
    return weight, curvature


def kron_loss(delta, curvature):
    """The quadratic model written with an explicit Kronecker product (row-major vec)."""
    v = delta.reshape(-1)
    return 0.5 * v @ torch.kron(curvature.G, curvature.A) @ v


def removed_rows(weight, curvature, rows):
    updated = weight.clone()
    curvature.remove_rows(updated, rows)
    return updated


def test_quadratic_loss_is_the_kronecker_form(problem):
    weight, curvature = problem
    delta = torch.randn(OUT, IN, dtype=torch.float64)
    assert quadratic_loss(delta, curvature.A, curvature.G).double() == pytest.approx(float(kron_loss(delta, curvature)))


@pytest.mark.parametrize("size", [1, 3])
def test_row_cost_equals_the_loss_of_the_optimal_update(problem, size):
    weight, curvature = problem
    costs = curvature.row_costs(weight, size)
    assert costs.shape == (OUT // size,)
    for block in range(OUT // size):
        updated = removed_rows(weight, curvature, block_indices([block], size))
        assert torch.all(updated[block * size:(block + 1) * size] == 0)
        assert float(kron_loss(updated - weight, curvature)) == pytest.approx(float(costs[block]), rel=1e-9)


@pytest.mark.parametrize("size", [1, 2])
def test_column_cost_equals_the_loss_of_the_optimal_update(problem, size):
    weight, curvature = problem
    costs = curvature.column_costs(weight, size)
    assert costs.shape == (IN // size,)
    for block in range(IN // size):
        updated = weight.clone()
        curvature.remove_columns(updated, block_indices([block], size))
        assert torch.all(updated[:, block * size:(block + 1) * size] == 0)
        assert float(kron_loss(updated - weight, curvature)) == pytest.approx(float(costs[block]), rel=1e-9)


def test_single_weight_cost_equals_the_loss_of_its_obs_update(problem):
    weight, curvature = problem
    costs = curvature.weight_costs(weight)
    for i, j in [(0, 0), (3, 7), (11, 9)]:
        scale = weight[i, j] / (curvature.G_inv[i, i] * curvature.A_inv[j, j])
        delta = -scale * torch.outer(curvature.G_inv[:, i], curvature.A_inv[j])
        assert float(delta[i, j]) == pytest.approx(-float(weight[i, j]))
        assert float(kron_loss(delta, curvature)) == pytest.approx(float(costs[i, j]), rel=1e-9)


def random_mask(seed, fraction=0.5):
    return torch.rand(OUT, IN, generator=torch.Generator().manual_seed(seed)) < fraction


def row_loss(delta, curvature):
    """½ Σ_i Δw_i A Δw_iᵀ: the Kronecker model with rows that do not update each other (G → I)."""
    return 0.5 * torch.einsum("ij,jk,ik->", delta, curvature.A, delta)


def row_optimum(weight, removed, A):
    """Per row: the kept weights that minimise Δw A Δwᵀ with the removed ones at zero."""
    out = weight.clone()
    for i in range(weight.shape[0]):
        q, k = removed[i], ~removed[i]
        out[i, k] = weight[i, k] + torch.linalg.solve(A[k][:, k], A[k][:, q] @ weight[i, q])
        out[i, q] = 0
    return out


def test_weight_removal_is_the_row_optimum_when_removed_weights_come_first(problem):
    weight, curvature = problem
    first = torch.arange(IN)[None, :] < torch.randint(0, IN, (OUT, 1), generator=torch.Generator().manual_seed(2))
    updated = weight.clone()
    curvature.remove_weights(updated, first)
    assert torch.allclose(updated, row_optimum(weight, first, curvature.A), atol=1e-10)


@pytest.mark.parametrize("block", [3, 128])
def test_weight_removal_beats_removal_without_update(problem, monkeypatch, block):
    import llmshearing.surgeon.curvature as module

    monkeypatch.setattr(module, "_COLUMN_BLOCK", block)  # blocks of 3: the deferred products are exercised
    weight, curvature = problem
    removed = random_mask(3)
    updated = weight.clone()
    curvature.remove_weights(updated, removed)
    assert torch.all(updated[removed] == 0)
    zeroed = torch.where(removed, torch.zeros_like(weight), weight)
    best = float(row_loss(row_optimum(weight, removed, curvature.A) - weight, curvature))
    loss = float(row_loss(updated - weight, curvature))
    assert best <= loss < float(row_loss(zeroed - weight, curvature))


def test_correlated_update_beats_removal_without_update(problem):
    weight, curvature = problem
    rows = torch.tensor([1, 4, 5, 9])
    cols = torch.tensor([0, 2, 3])
    zeroed = weight.clone()
    zeroed[rows] = 0
    updated = removed_rows(weight, curvature, rows)
    assert kron_loss(updated - weight, curvature) < 0.9 * kron_loss(zeroed - weight, curvature)
    zeroed = weight.clone()
    zeroed[:, cols] = 0
    updated = weight.clone()
    curvature.remove_columns(updated, cols)
    assert kron_loss(updated - weight, curvature) < 0.9 * kron_loss(zeroed - weight, curvature)


def test_joint_removal_is_optimal_among_updates_that_remove_the_rows(problem):
    weight, curvature = problem
    rows = torch.tensor([2, 3, 8])
    best = float(kron_loss(removed_rows(weight, curvature, rows) - weight, curvature))
    generator = torch.Generator().manual_seed(5)
    for _ in range(5):  # any other change of the kept rows is worse
        other = removed_rows(weight, curvature, rows)
        kept = torch.ones(OUT, dtype=torch.bool)
        kept[rows] = False
        other[kept] += 0.01 * torch.randn(int(kept.sum()), IN, generator=generator, dtype=torch.float64)
        assert float(kron_loss(other - weight, curvature)) > best


def test_identity_curvature_is_magnitude_without_update():
    weight = torch.randn(6, 4)
    identity = IdentityCurvature()
    assert torch.allclose(identity.row_costs(weight, 2), 0.5 * weight.pow(2).view(3, 8).sum(1))
    assert torch.allclose(identity.column_costs(weight, 2), 0.5 * weight.pow(2).t().reshape(2, 12).sum(1))
    updated = weight.clone()
    identity.remove_rows(updated, torch.tensor([1]))
    assert torch.equal(updated[0], weight[0]) and torch.all(updated[1] == 0)


def test_an_all_zero_factor_stays_invertible():
    curvature = KroneckerCurvature.from_raw(torch.zeros(4, 4), torch.eye(3))
    assert torch.isfinite(curvature.A_inv).all()


@pytest.mark.parametrize("density,two_four", [(0.4, False), (0.75, False), (0.5, True), (0.75, True)])
def test_adaptive_pruning_is_the_sequential_update_of_the_mask_it_chose(problem, density, two_four):
    """prune_weights chooses the mask during the sweep; the weights it leaves are what remove_weights
    (the same sweep with that mask fixed) gives, and the mask has the density and the 2:4 pattern."""
    weight, curvature = problem
    weight = weight[:, :8] if two_four else weight  # 2:4 needs inputs divisible by 4
    if two_four:
        curvature = KroneckerCurvature.from_raw(spd(8, 3), spd(weight.shape[0], 4), dtype=torch.float64)
    chosen = weight.clone()
    mask = curvature.prune_weights(chosen, density, two_four=two_four)
    assert int(mask.sum()) == round((1 - density) * weight.numel())
    if two_four:
        assert (mask.reshape(-1, 4).sum(1) <= 2).all()
        if density == 0.5:
            assert (mask.reshape(-1, 4).sum(1) == 2).all()
    fixed = weight.clone()
    curvature.remove_weights(fixed, mask)
    assert torch.allclose(chosen, fixed, atol=1e-5) and bool((chosen[mask] == 0).all())


def test_adaptive_pruning_keeps_earlier_removals():
    weight = torch.randn(6, 8, generator=torch.Generator().manual_seed(5))
    curvature = KroneckerCurvature.from_raw(spd(8, 1), spd(6, 2))
    first = curvature.prune_weights(weight, 0.75, two_four=True)
    second = curvature.prune_weights(weight, 0.5, forced=first, two_four=True)
    assert bool(second[first].all()) and (second.reshape(-1, 4).sum(1) == 2).all()
    magnitude = IdentityCurvature().prune_weights(weight.clone(), 0.5, forced=second, two_four=True)
    assert torch.equal(magnitude, second)  # already 2:4: nothing more to remove


def test_magnitude_matrix_pruning_removes_the_smallest_weights():
    weight = torch.randn(4, 16, generator=torch.Generator().manual_seed(6))
    pruned = weight.clone()
    mask = IdentityCurvature().prune_weights(pruned, 0.25)
    assert int(mask.sum()) == 48 and weight.abs()[mask].max() <= weight.abs()[~mask].min()
    assert torch.equal(pruned, weight.masked_fill(mask, 0))
