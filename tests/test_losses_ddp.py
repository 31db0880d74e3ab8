"""Distributed losses: 2 gloo processes on CPU, each with half of a global batch, against one process on the batch.

Expected (open_clip's scheme, documented in docs/losses.md): with ``local_loss=False`` every rank's loss equals the
single-process loss; with ``local_loss=True`` the mean over ranks does. In both modes the gradient of a rank's inputs
is ``world_size`` times the single-process gradient of its slice (DDP's averaging divides that back out).
"""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from medssl.losses import ConVIRTLoss, GloriaLoss, NTXentLoss, gather_with_grad
from medssl.losses.distributed import _GatherWithGrad

WORLD_SIZE = 2
GLOBAL_BATCH = 6


def global_inputs(kind: str) -> list[torch.Tensor]:
    """The global batch of one loss kind (identical on every rank: fixed seed), float64."""
    gen = torch.Generator().manual_seed({"convirt": 0, "ntxent": 1, "gloria": 2}[kind])
    b = GLOBAL_BATCH
    if kind in ("convirt", "ntxent"):
        return [torch.randn(b, 5, generator=gen, dtype=torch.float64) for _ in range(2)]
    lengths = torch.tensor([[5], [2], [4], [3], [1], [2]])  # rank 1's captions are at most 3 words long
    return [
        torch.randn(b, 7, generator=gen, dtype=torch.float64),  # global image embeddings
        torch.randn(b, 7, generator=gen, dtype=torch.float64),  # global text embeddings
        torch.randn(b, 6, 3, 3, generator=gen, dtype=torch.float64),  # regions
        torch.randn(b, 6, 5, generator=gen, dtype=torch.float64),  # words
        torch.arange(5) < lengths,  # word mask
    ]


def make_loss(kind: str, local_loss: bool, gather_with_grad: bool = True):
    options = {"local_loss": local_loss, "gather_with_grad": gather_with_grad}
    if kind == "convirt":
        return ConVIRTLoss(temperature=0.2, lambda_weight=0.7, **options)
    if kind == "ntxent":
        return NTXentLoss(temperature=0.3, **options)
    return GloriaLoss(global_weight=0.5, local_weight=1.0, chunk_size=2, **options)


def local_slice(kind: str, inputs: list[torch.Tensor], start: int, stop: int) -> list[torch.Tensor]:
    """This rank's share; for GLoRIA the words are trimmed to the rank's longest caption (ranks differ in L)."""
    parts = [x[start:stop].clone() for x in inputs]
    if kind == "gloria":
        longest = int(parts[4].sum(dim=1).max())
        parts[3], parts[4] = parts[3][..., :longest].contiguous(), parts[4][:, :longest].contiguous()
    return [p.requires_grad_() if p.is_floating_point() else p for p in parts]


def loss_and_grads(loss_fn, parts):
    value = loss_fn(*parts)
    grads = torch.autograd.grad(value, [p for p in parts if p.requires_grad])
    return value.detach(), [g.detach() for g in grads]


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        half = GLOBAL_BATCH // WORLD_SIZE
        results = {}
        for kind in ("convirt", "ntxent", "gloria"):
            inputs = global_inputs(kind)
            for local_loss in (False, True):
                parts = local_slice(kind, inputs, rank * half, (rank + 1) * half)
                results[(kind, local_loss)] = loss_and_grads(make_loss(kind, local_loss), parts)
        # unequal local batches (4 + 2) with the full matrix on every rank
        sizes = [(0, 4), (4, 6)][rank]
        parts = local_slice("convirt", global_inputs("convirt"), *sizes)
        results["unequal"] = loss_and_grads(make_loss("convirt", False), parts)
        # without gradients through other ranks: same value, other gradients (open_clip's approximation)
        parts = local_slice("ntxent", global_inputs("ntxent"), rank * half, (rank + 1) * half)
        results["no_grad_gather"] = loss_and_grads(make_loss("ntxent", True, gather_with_grad=False), parts)
        # the gather's backward: rank r receives the sum over ranks of the gradients sent to its slice
        x = torch.full((2, 3), float(rank + 1), dtype=torch.float64, requires_grad=True)
        weights = torch.arange(12, dtype=torch.float64).reshape(4, 3) * (10.0 if rank else 1.0)
        gathered = gather_with_grad(x)
        (gathered * weights).sum().backward()
        results["gather"] = (gathered.detach(), [x.grad])
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ddp_results():
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(os.path.join(tmp, "init"), tmp), nprocs=WORLD_SIZE, join=True)
        yield [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=True) for r in range(WORLD_SIZE)]


def single_process(kind, local_loss, start=0, stop=GLOBAL_BATCH):
    return loss_and_grads(make_loss(kind, local_loss), local_slice(kind, global_inputs(kind), start, stop))


def trim_like(full_grad, rank_grad):
    return full_grad[..., : rank_grad.shape[-1]] if full_grad.dim() == 3 else full_grad


@pytest.mark.parametrize("kind", ["convirt", "ntxent", "gloria"])
@pytest.mark.parametrize("local_loss", [False, True])
def test_ddp_equals_single_process(ddp_results, kind, local_loss):
    full_loss, full_grads = single_process(kind, local_loss)
    half = GLOBAL_BATCH // WORLD_SIZE
    rank_losses = [ddp_results[r][(kind, local_loss)][0] for r in range(WORLD_SIZE)]
    if local_loss:
        assert not torch.allclose(rank_losses[0], rank_losses[1])  # each rank has only its rows
        assert torch.allclose(torch.stack(rank_losses).mean(), full_loss, rtol=1e-12)
    else:
        for loss in rank_losses:
            assert torch.allclose(loss, full_loss, rtol=1e-12)
    for rank in range(WORLD_SIZE):
        rank_grads = ddp_results[rank][(kind, local_loss)][1]
        assert len(rank_grads) == len(full_grads)
        for rank_grad, full_grad in zip(rank_grads, full_grads):
            expected = WORLD_SIZE * trim_like(full_grad[rank * half : (rank + 1) * half], rank_grad)
            assert torch.count_nonzero(expected) > 0
            assert torch.allclose(rank_grad, expected, rtol=1e-9, atol=1e-12)


def test_ddp_unequal_local_batches(ddp_results):
    full_loss, full_grads = single_process("convirt", False)
    for rank, (start, stop) in enumerate([(0, 4), (4, 6)]):
        loss, grads = ddp_results[rank]["unequal"]
        assert torch.allclose(loss, full_loss, rtol=1e-12)
        for grad, full_grad in zip(grads, full_grads):
            assert torch.allclose(grad, WORLD_SIZE * full_grad[start:stop], rtol=1e-9, atol=1e-12)


def test_ddp_gather_without_grad_keeps_the_value(ddp_results):
    full_loss, full_grads = single_process("ntxent", True)
    losses = [ddp_results[r]["no_grad_gather"][0] for r in range(WORLD_SIZE)]
    assert torch.allclose(torch.stack(losses).mean(), full_loss, rtol=1e-12)
    exact = WORLD_SIZE * full_grads[0][: GLOBAL_BATCH // WORLD_SIZE]
    assert not torch.allclose(ddp_results[0]["no_grad_gather"][1][0], exact)


def test_gather_with_grad_sums_gradients_over_ranks(ddp_results):
    weights = torch.arange(12, dtype=torch.float64).reshape(4, 3)
    for rank in range(WORLD_SIZE):
        gathered, (grad,) = ddp_results[rank]["gather"]
        assert torch.equal(gathered, torch.cat([torch.full((2, 3), 1.0), torch.full((2, 3), 2.0)]).double())
        # rank 0 weighs the gathered batch by w, rank 1 by 10 w: each slice gets 11 w of its rows
        assert torch.equal(grad, 11.0 * weights[2 * rank : 2 * rank + 2])


def test_gather_function_gradcheck_in_one_process_group():
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("gloo", init_method=f"file://{os.path.join(tmp, 'init')}", rank=0, world_size=1)
        try:
            x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
            assert torch.autograd.gradcheck(lambda t: _GatherWithGrad.apply(t, [3]).sin(), (x,))
        finally:
            dist.destroy_process_group()
