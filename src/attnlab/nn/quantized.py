"""Linear layers that keep their weights quantized: a drop-in for a bias-free ``nn.Linear``
at inference time.

Two packed formats, both run by PyTorch's own CPU kernels:

- ``int4``: 4-bit codes ``q`` in 0..15 with one (scale, zero) pair per group of
  ``group_size`` input columns, ``w = (q - 8) * scale + zero``
  (``aten._weight_int4pack_mm_for_cpu``). GGUF's Q4_0 (``w = d * (q - 8)``) maps exactly
  onto it with scale = d, zero = 0, and Q4_1 (``w = d * q + m``) with scale = d,
  zero = m + 8 d; only the scales are rounded (float16 -> bfloat16).
- ``int8``: signed 8-bit codes with one scale per output row, ``w = q * scale``. On x86
  CPUs they run through fbgemm's dynamic int8 kernel (``quantized::linear_dynamic``, the
  weights prepacked once), which quantizes its input to 8 bits, multiplies in integers and
  scales back, as llama.cpp does for its Q8_0 matrices: for SmolLM2's 49k x 576 vocabulary
  head about 5x faster than ``aten._weight_int8pack_mm`` on bfloat16 activations (the
  fallback where fbgemm is missing or the input is not on the CPU). The kernel picks one
  quantization range per call, from the whole input; for a row's result not to depend on
  the rows batched with it, each row x is first mapped onto [-1, 1] exactly,
  ``u = (x - centre) / radius`` with its own centre and radius (so it keeps all 256
  levels), two constant columns, +1 and -1 (with zero weights), pin every call's range to
  [-1, 1], and ``x W^T = radius * (u W^T) + centre * (W's row sums)``. The 8-bit input
  costs precision where a few input channels dwarf the others (the "massive activations"
  of a language model's last hidden state: SmolLM2's greedy answer to "What is the capital
  of France?" changed), so an int8 layer built with ``refine_top=k`` (the vocabulary heads
  of GGUF loads: k = 32) then recomputes each row's k largest outputs exactly from its float
  input: the tokens that greedy decoding and sampling pick among get the bfloat16 path's
  precision or better, the rest stay within the 8-bit error.

Prompts: the int4 kernel is made for few rows (decoding steps). With ``prompt_copy=True``
an int4 layer also keeps ``W`` in bfloat16 (2 bytes a weight, not saved in the state
dict), and a call with at least ``PROMPT_POSITIONS`` positions per sequence (x of shape
(..., T, K), T >= 32: a prompt's prefill) multiplies by that copy instead, several times
faster there. A decoding step (T = 1, any number of sequences) always takes the int4
kernel, so a row's result never depends on how many rows share its step.

``forward`` casts the input to bfloat16 (int4, the int8 fallback) or float32 (fbgemm),
multiplies, and returns the input's dtype, so a float32 model can hold these layers. The
weights are buffers, not parameters: the layer cannot be trained, and a model's dtype and
KV cache follow its other parameters.
Shapes: N = out_features, K = in_features, G = group_size.
"""

from __future__ import annotations

import functools
import logging
import warnings

import numpy as np
import torch
from torch import Tensor, nn

INT4_GROUP_SIZES = (32, 64, 128, 256)  # what the CPU kernel accepts
# the kernels' overloads, resolved once: looking them up through torch.ops on every call
# costs about as much as the matrix-vector product of a small layer
_INT4_MM = torch.ops.aten._weight_int4pack_mm_for_cpu.default
_INT8_MM = torch.ops.aten._weight_int8pack_mm.default
try:
    _FBGEMM_INT8_MM = torch.ops.quantized.linear_dynamic.default
except (AttributeError, RuntimeError):  # a build without the quantized CPU operators
    _FBGEMM_INT8_MM = None
PROMPT_POSITIONS = 32  # from this many positions per sequence, int4 layers use the bf16 copy


_RANGE_PINS = torch.tensor([[1.0, -1.0]])  # (1, 2): the two columns that fix fbgemm's range
logger = logging.getLogger(__name__)


@functools.cache
def _log_fallback(reason: str) -> None:
    """Say once per process (and reason) why int8 layers run on the slower bfloat16 kernel."""
    logger.info("int8 layers run on aten._weight_int8pack_mm, not fbgemm: %s", reason)


def _fbgemm_pack(codes: Tensor, scale: Tensor) -> tuple[object, Tensor] | None:
    """fbgemm's prepacked form of ``[W | 0 0]`` with ``W = codes * scale[:, None]`` (codes int8
    (N, K), scale (N,)): two zero columns for the range pins; and W's row sums (1, N). None
    where this PyTorch has no fbgemm."""
    if _FBGEMM_INT8_MM is None or "x86" not in torch.backends.quantized.supported_engines:
        _log_fallback("this PyTorch has no fbgemm (x86) quantized engine")
        return None
    # exact integer row sums: numpy reduces int8 rows into int64 10x faster than torch does
    # through float64 (0.01 vs 0.11 s for SmolLM2's head, on the way to the first token)
    sums = torch.from_numpy(codes.numpy().sum(1, dtype=np.int64))  # (N,)
    row_sums = (sums.double() * scale.double()).float()[None]  # (1, N)
    codes = torch.cat((codes, codes.new_zeros(codes.shape[0], 2)), dim=1)  # (N, K + 2)
    zeros = torch.zeros(scale.shape, dtype=torch.long)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # quantized tensors are deprecated, still there
            weight = torch._make_per_channel_quantized_tensor(codes, scale.double(), zeros, 0)
            return torch.ops.quantized.linear_prepack(weight, None), row_sums
    except (RuntimeError, AttributeError) as error:  # built without the quantized CPU engines
        _log_fallback(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
        return None


def _int4_shape_error(n: int, k: int, group_size: int) -> str | None:
    if group_size not in INT4_GROUP_SIZES:
        return f"group size {group_size} is not one of {INT4_GROUP_SIZES}"
    if k % group_size:
        return f"in_features {k} is not a multiple of the group size {group_size}"
    if n % 16:
        return f"out_features {n} is not a multiple of 16"
    return None


def int4_supported(out_features: int, in_features: int, group_size: int = 32) -> bool:
    """Whether an (out_features, in_features) weight can be packed for the int4 kernel."""
    return _int4_shape_error(out_features, in_features, group_size) is None


class QuantizedLinear(nn.Module):
    """``y = x @ W^T`` with ``W`` held packed (see the module docstring). Build it with
    ``from_int4``, ``from_int8`` or ``quantize``; ``dequantized_weight()`` gives ``W``."""

    def __init__(self, in_features: int, out_features: int, kind: str, group_size: int = 0) -> None:
        super().__init__()
        if kind not in ("int4", "int8"):
            raise ValueError(f"QuantizedLinear kind must be 'int4' or 'int8', got {kind!r}")
        if (kind == "int4") != (group_size in INT4_GROUP_SIZES) or (kind == "int8" and group_size):
            raise ValueError(
                f"QuantizedLinear {kind} takes group_size in {INT4_GROUP_SIZES} for int4 and 0 "
                f"for int8, got {group_size}"
            )
        self.in_features = in_features
        self.out_features = out_features
        self.kind = kind
        self.refine_top = 0  # int8 on fbgemm: outputs per row recomputed exactly (docstring)
        self.group_size = group_size  # 0 for int8 (one scale per row)
        # ``weight`` holds the packed codes, not W (as bitsandbytes' 4-bit layers do), so code
        # that asks a layer for ``weight.device`` keeps working; W is dequantized_weight().
        self.weight: Tensor  # int4: uint8 (N, K/2) in the kernel's layout; int8: int8 (N, K)
        self.scales: Tensor  # int4: bf16 (K/G, N, 2) scale and zero; int8: bf16 (N,)
        self.register_buffer("weight", torch.empty(0, dtype=torch.uint8))
        self.register_buffer("scales", torch.empty(0, dtype=torch.bfloat16))
        # int8 on fbgemm: the prepacked weight, and which buffers it was packed from
        self._fbgemm: object | None = None
        self._row_sums: Tensor | None = None  # (1, N) W's row sums, for fbgemm
        self._fbgemm_from: tuple | None = None
        self.prompt_weight: Tensor | None  # int4 with prompt_copy: bf16 (N, K), else None
        self.register_buffer("prompt_weight", None, persistent=False)

    def extra_repr(self) -> str:
        group = f", group_size={self.group_size}" if self.kind == "int4" else ""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, {self.kind}{group}"
        )

    @classmethod
    def from_int4(
        cls,
        codes: Tensor,
        scale: Tensor,
        zero: Tensor,
        group_size: int = 32,
        *,
        prompt_copy: bool = False,
    ) -> QuantizedLinear:
        """codes (N, K) integers in 0..15, scale and zero (N, K/G):
        ``W[n, k] = (codes[n, k] - 8) * scale[n, k // G] + zero[n, k // G]``.
        ``prompt_copy``: also keep ``W`` in bfloat16 for prompts (module docstring)."""
        if codes.dim() != 2:
            raise ValueError(
                f"int4 codes must be a (out, in) matrix, got shape {tuple(codes.shape)}"
            )
        n, k = codes.shape
        error = _int4_shape_error(n, k, group_size)
        if error:
            raise ValueError(f"cannot pack a ({n}, {k}) weight as int4: {error}")
        groups = (n, k // group_size)
        if tuple(scale.shape) != groups or tuple(zero.shape) != groups:
            raise ValueError(
                f"int4 scale and zero must have shape {groups}, got {tuple(scale.shape)} and "
                f"{tuple(zero.shape)}"
            )
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) > 15):
            raise ValueError("int4 codes must lie in 0..15")
        layer = cls(k, n, "int4", group_size)
        codes32 = codes.to(torch.int32).contiguous()
        layer.weight = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes32, 1)
        pairs = torch.stack((scale.float(), zero.float()), dim=-1)  # (N, K/G, 2)
        layer.scales = pairs.transpose(0, 1).contiguous().to(torch.bfloat16)  # (K/G, N, 2)
        if prompt_copy:  # from the bfloat16 scales and zeros the kernel uses
            scale16 = scale.to(torch.bfloat16).float()[..., None]  # (N, K/G, 1)
            offset = zero.to(torch.bfloat16).float()[..., None] - 8 * scale16  # (N, K/G, 1)
            weight = codes32.view(n, k // group_size, group_size).float()  # (N, K/G, G)
            weight.mul_(scale16).add_(offset)  # in place, contiguous: 10x faster than addcmul
            layer.prompt_weight = weight.view(n, k).to(torch.bfloat16)  # (N, K)
        return layer

    @classmethod
    def from_int8(cls, codes: Tensor, scale: Tensor) -> QuantizedLinear:
        """codes (N, K) int8, scale (N,): ``W[n, k] = codes[n, k] * scale[n]``."""
        if codes.dtype != torch.int8 or codes.dim() != 2:
            raise ValueError(
                f"int8 codes must be an int8 (out, in) matrix, got {codes.dtype} "
                f"{tuple(codes.shape)}"
            )
        n, k = codes.shape
        if tuple(scale.shape) != (n,):
            raise ValueError(f"int8 scale must have shape ({n},), got {tuple(scale.shape)}")
        layer = cls(k, n, "int8")
        layer.weight = codes.contiguous()
        layer.scales = scale.to(torch.bfloat16).contiguous()
        return layer

    @classmethod
    def quantize(cls, weight: Tensor) -> QuantizedLinear:
        """A float (N, K) weight requantized to int8 with one symmetric scale per row
        (max |w| / 127): lossy, about 0.4% of the row's largest weight at worst."""
        weight = weight.detach().float()
        peak = weight.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny)  # (N,)
        scale = (peak / 127.0).to(torch.bfloat16).float()  # the scale the kernel will use
        codes = torch.round(weight / scale[:, None]).clamp_(-127, 127).to(torch.int8)
        return cls.from_int8(codes, scale)

    def __getstate__(self) -> dict:
        state = super().__getstate__().copy()  # type: ignore[misc]
        state["_fbgemm"] = state["_fbgemm_from"] = state["_row_sums"] = (
            None  # packed again where it is needed
        )
        return state

    def _fbgemm_weight(self) -> object | None:
        """The fbgemm-packed int8 weight, packed again if the buffers changed since."""
        source = (self.weight.data_ptr(), self.weight._version, self.scales._version)
        if self._fbgemm_from != source:
            packed = _fbgemm_pack(self.weight, self.scales.float())
            self._fbgemm, self._row_sums = packed if packed is not None else (None, None)
            self._fbgemm_from = source
        return self._fbgemm

    def dequantized_weight(self) -> Tensor:
        """``W`` (N, K) in float32: exact for int8; for int4 read back through the kernel
        (the identity times ``W^T``, since the packed layout is the kernel's own), so
        rounded to bfloat16."""
        if self.kind == "int8":
            return self.weight.float() * self.scales.float()[:, None]
        eye = torch.eye(self.in_features, dtype=torch.bfloat16)  # (K, K)
        return self(eye).float().t().contiguous()  # (N, K)

    def _refine(self, rows: Tensor, y: Tensor) -> Tensor:
        """``y`` (M, N) with each row's ``refine_top`` largest entries recomputed from the
        float32 ``rows`` (M, K) and the int8 weights; row by row the same sums, batched or not."""
        top = y.topk(min(self.refine_top, self.out_features), dim=-1).indices  # (M, k)
        picked = self.weight[top].float() * self.scales[top].float()[..., None]  # (M, k, K)
        exact = (picked * rows[:, None, :]).sum(-1)  # (M, k)
        return y.scatter(-1, top, exact)

    def forward(self, x: Tensor) -> Tensor:
        """x (..., K) -> (..., N) in x's dtype (computed from bfloat16 activations)."""
        rows = x.reshape(-1, self.in_features)  # (M, K)
        packed = None
        if not self.group_size and x.device.type == "cpu":
            packed = self._fbgemm_weight()
        if packed is not None:  # int8 on fbgemm, rows quantized alone (module docstring)
            rows = rows.float()
            low, high = torch.aminmax(rows, dim=-1, keepdim=True)  # (M, 1) each
            centre = (high + low) / 2
            radius = ((high - low) / 2).clamp_min(torch.finfo(torch.float32).tiny)
            pins = _RANGE_PINS.expand(rows.shape[0], 2)  # (M, 2)
            pinned = torch.cat(((rows - centre) / radius, pins), dim=-1)  # (M, K + 2) in [-1, 1]
            y = _FBGEMM_INT8_MM(pinned, packed, False)  # (M, N), u W^T
            y = torch.addcmul(centre * self._row_sums, y, radius)  # (M, N), x W^T
            if self.refine_top:
                y = self._refine(rows, y)
        elif self.prompt_weight is not None and x.dim() > 2 and x.shape[-2] >= PROMPT_POSITIONS:
            y = torch.nn.functional.linear(rows.to(torch.bfloat16), self.prompt_weight)
        elif self.group_size:  # int4
            y = _INT4_MM(rows.to(torch.bfloat16), self.weight, self.group_size, self.scales)
        else:
            y = _INT8_MM(rows.to(torch.bfloat16), self.weight, self.scales)
        return y.to(x.dtype).view(*x.shape[:-1], self.out_features)  # (..., N)
