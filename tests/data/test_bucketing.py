"""Token-count batching with length bucketing, padding masks, and teacher-forcing targets."""

from __future__ import annotations

import torch

from attnlab.data import (
    LengthBucketSampler,
    collate_classification,
    collate_translation,
    token_batches,
)


def test_token_batches_cover_every_index_once_within_budget() -> None:
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 40, (500,), generator=g).tolist()
    batches = token_batches(lengths, max_tokens=200, generator=g)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(500))
    for b in batches:
        assert max(lengths[i] for i in b) * len(b) <= 200


def test_bucketing_reduces_padding_and_is_seeded() -> None:
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(1, 60, (2000,), generator=g).tolist()
    batches = token_batches(lengths, 512, generator=torch.Generator().manual_seed(3))
    again = token_batches(lengths, 512, generator=torch.Generator().manual_seed(3))
    assert batches == again
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    # random batches of the same sizes would pad to near the max length: bucketing wastes <15%
    assert padded < 1.15 * sum(lengths)


def test_oversized_example_gets_its_own_batch() -> None:
    batches = token_batches([3, 50, 3], 10, shuffle=False)
    assert [1] in batches and sorted(i for b in batches for i in b) == [0, 1, 2]


def test_collate_translation_shifts_targets_and_masks_padding() -> None:
    batch = collate_translation([[5, 6, 2], [7, 2]], [[8, 9], [10]], pad_id=0, bos_id=1, eos_id=2)
    assert batch["source_ids"].tolist() == [[5, 6, 2], [7, 2, 0]]
    assert batch["source_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["target_ids"].tolist() == [[1, 8, 9], [1, 10, 0]]
    assert batch["target_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["targets"].tolist() == [[8, 9, 2], [10, 2, -100]]
    # the target at position t is the decoder input at t + 1 wherever both are real
    ids, tgt, mask = batch["target_ids"], batch["targets"], batch["target_mask"]
    real = mask[:, 1:].bool()
    assert torch.equal(ids[:, 1:][real], tgt[:, :-1][real])


def test_collate_classification() -> None:
    batch = collate_classification([[4, 5, 6], [7]], [1, 0], pad_id=0)
    assert batch["input_ids"].tolist() == [[4, 5, 6], [7, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [1, 0]


def test_sampler_is_a_function_of_the_generator_state_and_buckets_lengths() -> None:
    g = torch.Generator().manual_seed(2)
    lengths = torch.randint(1, 50, (3000,), generator=g).tolist()
    sampler = LengthBucketSampler(lengths, 600, max_batch_size=64)
    gen = torch.Generator().manual_seed(7)
    for _ in range(5):
        sampler.sample(gen)
    state = gen.get_state()
    first = [sampler.sample(gen) for _ in range(20)]
    gen.set_state(state)  # as a resumed run restores it
    assert [sampler.sample(gen) for _ in range(20)] == first
    real = padded = 0
    for batch in first:
        assert 1 <= len(batch) <= 64 and len(set(batch)) == len(batch)
        longest = max(lengths[i] for i in batch)
        assert longest * len(batch) <= 600
        real += sum(lengths[i] for i in batch)
        padded += longest * len(batch)
    assert real > 0.9 * padded  # similar lengths: under 10% padding
