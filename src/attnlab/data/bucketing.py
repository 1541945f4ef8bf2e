"""Batches of variable-length sequences: built by token count with length bucketing, padded
on the right with masks (1 = real token, 0 = padding), and, for translation, teacher-forcing
inputs and shifted targets.

Teacher forcing: for a target sentence y, the decoder reads ``[BOS] + y`` and must predict
``y + [EOS]``, so ``targets[:, t]`` is the token that follows decoder position ``t`` (the
convention of the models' losses); padded target positions are IGNORE_INDEX (ignored by the loss).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from attnlab.nn.loss import IGNORE_INDEX


def token_batches(
    lengths: Sequence[int],
    max_tokens: int,
    *,
    generator: torch.Generator | None = None,
    shuffle: bool = True,
    pool_factor: int = 50,
    max_batch_size: int | None = None,
) -> list[list[int]]:
    """Split example indices into batches whose padded size (batch size x longest length)
    stays within ``max_tokens``.

    Length bucketing: the (shuffled) examples are cut into pools of about ``pool_factor``
    batches; each pool is sorted by length so a batch holds similar lengths (little
    padding), then the batches' order is shuffled. Without ``shuffle`` the examples are
    taken in length order (for evaluation). Every index appears in exactly one batch; an
    example longer than ``max_tokens`` gets a batch of its own.
    """
    if max_tokens <= 0:
        raise ValueError(f"max_tokens={max_tokens} must be positive")
    n = len(lengths)
    if shuffle:
        order = torch.randperm(n, generator=generator).tolist()
        typical = max(1, sum(lengths) // max(n, 1))
        pool = max(1, pool_factor * max(1, max_tokens // typical))
        pools = [order[i : i + pool] for i in range(0, n, pool)]
    else:
        pools = [list(range(n))]
    batches: list[list[int]] = []
    for members in pools:
        members = sorted(members, key=lambda i: lengths[i])
        batch: list[int] = []
        longest = 0
        for i in members:
            new_longest = max(longest, lengths[i])
            full = max_batch_size is not None and len(batch) >= max_batch_size
            if batch and (new_longest * (len(batch) + 1) > max_tokens or full):
                batches.append(batch)
                batch, new_longest = [], lengths[i]
            batch.append(i)
            longest = new_longest
        if batch:
            batches.append(batch)
    if shuffle:
        perm = torch.randperm(len(batches), generator=generator).tolist()
        batches = [batches[i] for i in perm]
    return batches


class LengthBucketSampler:
    """Random batches of similar-length examples, drawn independently at each call from a
    ``torch.Generator`` alone (no hidden epoch state, so a resumed run that restores the
    generator draws the same batches).

    A draw picks an anchor example uniformly at random, looks at a window of neighbours in
    length order (``pool_factor`` batches wide) and takes a random subset of it, as many as
    fit in ``max_tokens`` padded tokens (batch size x longest length).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        max_tokens: int,
        *,
        max_batch_size: int | None = None,
        pool_factor: int = 4,
    ) -> None:
        if not lengths:
            raise ValueError("cannot sample batches from no examples")
        if max_tokens <= 0:
            raise ValueError(f"max_tokens={max_tokens} must be positive")
        self.order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        self.sorted_lengths = [lengths[i] for i in self.order]
        self.max_tokens = max_tokens
        self.max_batch_size = max_batch_size
        self.pool_factor = pool_factor

    def _fit(self, length: int) -> int:
        size = max(1, self.max_tokens // max(length, 1))
        return size if self.max_batch_size is None else min(size, self.max_batch_size)

    def sample(self, generator: torch.Generator | None = None) -> list[int]:
        """Indices (into the original ``lengths``) of one batch."""
        n = len(self.order)
        anchor = int(torch.randint(n, (1,), generator=generator))
        size = self._fit(self.sorted_lengths[anchor])
        width = min(n, size * self.pool_factor)
        start = min(max(0, anchor - width // 2), n - width)
        picks = torch.randperm(width, generator=generator)[:size] + start
        picks = sorted(picks.tolist())
        # the longest pick may be longer than the anchor: keep what fits
        while len(picks) > 1 and self.sorted_lengths[picks[-1]] * len(picks) > self.max_tokens:
            picks.pop()
        return [self.order[p] for p in picks]


def pad_sequences(
    sequences: Sequence[Sequence[int]], pad_value: int, *, device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor]:
    """Right-pad to (B, T_max): ids and a mask (1 = real token, 0 = padding)."""
    if not sequences:
        raise ValueError("cannot pad an empty list of sequences")
    longest = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), longest), pad_value, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids.to(device), mask.to(device)


def collate_translation(
    sources: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    *,
    pad_id: int,
    bos_id: int,
    eos_id: int,
    device: torch.device | str = "cpu",
) -> dict[str, Tensor]:
    """Forward keyword arguments of an encoder-decoder for teacher forcing.

    source_ids/source_mask (B, S): the source sentences (ending in EOS when the caller added
    it); target_ids/target_mask (B, T): BOS + y; targets (B, T): y + EOS, IGNORE_INDEX at padding.
    """
    if len(sources) != len(targets):
        raise ValueError(f"{len(sources)} sources but {len(targets)} targets")
    source_ids, source_mask = pad_sequences(sources, pad_id, device=device)
    target_ids, target_mask = pad_sequences([[bos_id, *t] for t in targets], pad_id, device=device)
    shifted, shifted_mask = pad_sequences([[*t, eos_id] for t in targets], pad_id, device=device)
    shifted = shifted.masked_fill(shifted_mask == 0, IGNORE_INDEX)  # (B, T)
    return {
        "source_ids": source_ids,
        "source_mask": source_mask,
        "target_ids": target_ids,
        "target_mask": target_mask,
        "targets": shifted,
    }


def collate_classification(
    sequences: Sequence[Sequence[int]],
    labels: Sequence[int] | None,
    *,
    pad_id: int,
    device: torch.device | str = "cpu",
) -> dict[str, Tensor]:
    """Forward keyword arguments of an encoder classifier: input_ids, attention_mask (B, T)
    and labels (B,) when given."""
    input_ids, attention_mask = pad_sequences(sequences, pad_id, device=device)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if labels is not None:
        batch["labels"] = torch.as_tensor(list(labels), dtype=torch.long, device=device)
    return batch
