"""The weight-broadcast group on gloo: layouts by hand, and a state dict sent from rank 0
arrives bit for bit at every receiver (members as threads of one process: a gloo group
does not care which process its ranks live in)."""

from __future__ import annotations

import threading

import pytest
import torch

from mnemoray.rl.weight_group import ALIGN, WeightGroup, weight_layout


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(7, 5, generator=g)
    return {
        "embed.weight": emb,
        "norm.weight": torch.randn(5, generator=g).to(torch.bfloat16),
        "proj.weight": torch.randn(5, 3, generator=g).t(),  # not contiguous
        "steps": torch.tensor(3, dtype=torch.int64),  # 0-dim
        "big.weight": torch.randn(40, 10, generator=g, dtype=torch.float64),
        "lm_head.weight": emb,  # tied to embed.weight
    }


def test_layout_packs_in_order_aligns_offsets_and_sends_tied_tensors_once():
    layout = weight_layout(_state(), bucket_bytes=256)
    slots = {s.name: s for s in layout.slots}
    assert [s.name for s in layout.slots] == list(_state())
    # embed 140 B at 0; norm (bf16, 10 B) at the next aligned offset 192 > 256? no: 192 + 10 <= 256
    assert (slots["embed.weight"].bucket, slots["embed.weight"].offset) == (0, 0)
    assert (slots["norm.weight"].bucket, slots["norm.weight"].offset) == (0, 192)
    # proj (60 B) would end past 256: a new bucket
    assert (slots["proj.weight"].bucket, slots["proj.weight"].offset) == (1, 0)
    assert (slots["steps"].bucket, slots["steps"].offset) == (1, ALIGN)
    # big (3200 B) is larger than a bucket: one of its own
    assert (slots["big.weight"].bucket, slots["big.weight"].offset) == (2, 0)
    assert slots["lm_head.weight"].same_as == "embed.weight"
    assert layout.bucket_bytes == [202, ALIGN + 8, 3200]


def _run_group(state, layout, receivers: int, backend: str = "gloo", receive=None) -> list[dict[str, torch.Tensor]]:
    store = WeightGroup.serve_store("127.0.0.1", timeout_s=30)
    got: list[dict[str, torch.Tensor] | None] = [None] * receivers
    errors: list[BaseException] = []

    def member(rank: int) -> None:
        try:
            group = WeightGroup("127.0.0.1", store.port, rank, receivers + 1, backend, "test", 30,
                                store=store if rank == 0 else None)
            if rank == 0:
                group.send(state, layout)
            else:
                got[rank - 1] = receive(group) if receive else group.receive(layout)
            group.close()
        except BaseException as err:  # noqa: BLE001 - surfaced below
            errors.append(err)

    threads = [threading.Thread(target=member, args=(r,)) for r in range(receivers + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return got  # type: ignore[return-value]


@pytest.mark.parametrize("bucket_bytes", [256, 1 << 20])
def test_every_receiver_gets_the_state_bit_for_bit(bucket_bytes: int):
    state = _state()
    layout = weight_layout(state, bucket_bytes)
    for received in _run_group(state, layout, receivers=2):
        assert list(received) == list(state)
        for name, tensor in state.items():
            assert received[name].dtype == tensor.dtype, name
            assert received[name].shape == tensor.shape, name
            assert torch.equal(received[name], tensor), name
        assert received["lm_head.weight"].data_ptr() == received["embed.weight"].data_ptr()


def test_a_stream_receives_each_bucket_only_when_its_tensors_are_read():
    """What lets an engine load a broadcast holding one bucket at a time: the k-th bucket is
    received when the first tensor in it is asked for, not before."""
    state = _state()
    layout = weight_layout(state, 256)
    assert len(layout.bucket_bytes) >= 3
    slots = {slot.name: slot for slot in layout.slots}
    seen: list[tuple[str, int]] = []

    def read(group: WeightGroup) -> dict[str, torch.Tensor]:
        received = []
        broadcast = group._broadcast
        group._broadcast = lambda buffer: (received.append(buffer.numel()), broadcast(buffer))[1]
        out = {}
        for name, tensor in group.receive_stream(layout):
            seen.append((name, len(received)))
            out[name] = tensor.clone()
        return out

    (got,) = _run_group(state, layout, receivers=1, receive=read)
    assert [name for name, _ in seen] == list(state)
    for name, buckets_so_far in seen:
        slot = slots[name]
        source = slots[slot.same_as] if slot.same_as else slot
        assert buckets_so_far == source.bucket + 1 or (slot.same_as and buckets_so_far > source.bucket), name
        assert torch.equal(got[name], state[name]), name


def test_a_received_state_loads_into_a_model():
    sender = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    receiver = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    state = sender.state_dict()
    (received,) = _run_group(state, weight_layout(state, 64), receivers=1)
    receiver.load_state_dict(received)
    x = torch.randn(2, 4)
    assert torch.equal(receiver(x), sender(x))


def test_an_unknown_backend_is_refused_by_name():
    store = WeightGroup.serve_store("127.0.0.1", timeout_s=5)
    with pytest.raises(ValueError, match="gloo or nccl, not 'mpi'"):
        WeightGroup("127.0.0.1", store.port, 0, 1, "mpi", store=store)
