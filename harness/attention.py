"""Which attention kernel a cell trains with, and whether it builds a dense mask. Pure Python to decide; the probe
of what is installed and the observation of what ran import torch inside their functions.

Packed rows (several examples per row, positions restarting at 0 for each) must never attend across examples.
transformers enforces that from the position ids in every kernel, at very different cost:

    sdpa / eager         a block-diagonal 4-D boolean mask, batch × T × T, which also selects SDPA's slower
                         masked kernel (a dense mask: its cost is charged to packing)
    flex_attention       a BlockMask (block-sparse: fully masked 128×128 tiles are skipped); needs CUDA to train
                         (torch's flex attention has no backward on CPU)
    flash_attention_2    varlen kernel from the position ids (cu_seqlens), no mask at all; needs the flash-attn
                         package and CUDA

`auto` (the default) takes, for packed rows, the first of flash_attention_2 / flex_attention that can train here,
else sdpa with its dense mask; padded rows use sdpa (their padding mask is what SDPA is built for). Unsloth runs its
own attention: it treats packed examples as separate sequences only within one flattened row (batch size 1 with
`packed_seq_lengths`), so its packed batches are flattened (`packed_layout = "flattened"`) and it picks its backend
(flash varlen, xFormers block-diagonal, or SDPA with a packed mask) itself; the record names that backend.

The choice is recorded in every trained cell (`metrics.train.attention`): what was asked, what ran, how packed rows
were laid out, the mask the attention modules received (observed on the first forward where nothing is compiled,
else inferred from the kernel) and whether it was dense.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

AttentionName = Literal["auto", "sdpa", "eager", "flash_attention_2", "flex_attention"]
KERNELS = ("sdpa", "eager", "flash_attention_2", "flex_attention")
PackedLayout = Literal["rows", "flattened"]


@dataclass(frozen=True)
class Installed:
    """What the cell's process can run: CUDA, the flash-attn package, torch's flex attention."""

    cuda: bool
    flash_attn: bool
    flex_attention: bool

    @classmethod
    def probe(cls, device: str) -> Installed:
        import importlib.util

        cuda = device.startswith("cuda")
        flex = importlib.util.find_spec("torch.nn.attention.flex_attention") is not None
        return cls(
            cuda=cuda, flash_attn=cuda and importlib.util.find_spec("flash_attn") is not None, flex_attention=flex
        )


@dataclass(frozen=True)
class AttentionChoice:
    requested: str
    implementation: str  # what transformers is asked for (`attn_implementation`)
    packed_layout: PackedLayout | None  # None: rows are padded, not packed
    dense_mask: bool  # whether the kernel is given a dense (batch × T × T) mask
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class AttentionUnavailable(ValueError):
    """An explicitly requested kernel cannot train in this process."""


def dense_mask_for(implementation: str, packing: bool, padded: bool) -> bool:
    """Whether transformers hands `implementation` a dense 4-D mask: sdpa / eager get one for packed rows (the
    block-diagonal mask) and for padded rows that hold padding; flex gets a BlockMask, flash none."""
    if implementation in ("flex_attention", "flash_attention_2"):
        return False
    return packing or padded


def choose_attention(requested: str, *, packing: bool, installed: Installed) -> AttentionChoice:
    """The kernel a cell trains with (see the module doc). Raises AttentionUnavailable for an explicit request this
    process cannot honour, with what would work instead."""
    layout: PackedLayout | None = "rows" if packing else None
    if requested == "auto":
        if not packing:
            impl, why = "sdpa", "padded rows: SDPA with the padding mask"
        elif installed.cuda and installed.flash_attn:
            impl, why = "flash_attention_2", "packed rows: flash-attn varlen from the position ids (no mask)"
        elif installed.cuda and installed.flex_attention:
            impl, why = "flex_attention", "packed rows: flex attention with a block-sparse mask (no dense mask)"
        else:
            impl = "sdpa"
            why = (
                "packed rows on CPU: SDPA with a dense block-diagonal mask (flex attention has no backward on "
                "CPU, flash-attn needs CUDA)"
                if not installed.cuda
                else "packed rows: SDPA with a dense block-diagonal mask (neither flash-attn nor flex attention "
                "is available in this torch)"
            )
        return AttentionChoice(requested, impl, layout, dense_mask_for(impl, packing, not packing), why)
    if requested == "flash_attention_2" and not (installed.cuda and installed.flash_attn):
        raise AttentionUnavailable(
            "train.attn_implementation flash_attention_2 needs CUDA and the flash-attn package "
            f"({'not installed' if installed.cuda else 'no CUDA device'}); use auto, sdpa or flex_attention"
        )
    if requested == "flex_attention" and not (installed.cuda and installed.flex_attention):
        raise AttentionUnavailable(
            "train.attn_implementation flex_attention needs CUDA to train (torch's flex attention has no backward "
            "on CPU); use auto or sdpa"
        )
    return AttentionChoice(
        requested, requested, layout, dense_mask_for(requested, packing, not packing), "as requested"
    )


def planned_attention(requested: str, *, packing: bool, gpu: bool) -> AttentionChoice:
    """The choice `--dry-run` plans with, before any process exists: a GPU is assumed to have torch's flex attention
    and not the flash-attn package (the estimator says so)."""
    installed = Installed(cuda=gpu, flash_attn=False, flex_attention=True)
    try:
        return choose_attention(requested, packing=packing, installed=installed)
    except AttentionUnavailable as exc:
        return AttentionChoice(requested, requested, "rows" if packing else None, False, str(exc))


def flattened(choice: AttentionChoice, backend: str, dense_mask: bool) -> AttentionChoice:
    """The choice for a method that runs its own attention on flattened packed rows (Unsloth)."""
    return AttentionChoice(
        choice.requested,
        backend,
        "flattened" if choice.packed_layout else None,
        dense_mask,
        f"the method's own attention ({backend}); packed rows flattened into one row with their lengths, "
        "which is how it keeps examples apart",
    )


# ---------------------------------------------------------------------------------------------------- observing


def describe_mask(mask: Any) -> dict[str, Any]:
    """What an attention module received as `attention_mask`: none, a BlockMask, or a dense tensor."""
    if mask is None:
        return {"mask": "none", "dense_mask": False}
    if type(mask).__name__ == "BlockMask":
        return {"mask": "block_mask", "dense_mask": False, "shape": list(getattr(mask, "shape", []) or [])}
    shape = list(getattr(mask, "shape", []) or [])
    return {"mask": "dense", "dense_mask": len(shape) == 4, "shape": shape, "dtype": str(getattr(mask, "dtype", ""))}


class MaskObserver:
    """A one-shot forward pre-hook on the model's first attention module: records the mask it receives on the first
    forward, then removes itself. Not installed when the forward is compiled (the record then says `inferred`)."""

    def __init__(self, model: Any):
        self.seen: dict[str, Any] | None = None
        self._handle = None
        target = next((m for m in model.modules() if type(m).__name__.endswith("Attention")), None)
        if target is not None:
            self._handle = target.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        if self.seen is None:
            self.seen = describe_mask(kwargs.get("attention_mask"))
            self.remove()

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def attention_record(choice: AttentionChoice, observed: dict[str, Any] | None) -> dict[str, Any]:
    """`metrics.train.attention`: the choice, and the mask observed on the first forward (or inferred)."""
    out = choice.as_dict()
    if observed is not None:
        out.update(observed)
        out["mask_source"] = "observed on the first training forward"
    else:
        out["mask_source"] = "inferred from the kernel (not observed: compiled forward or no attention module found)"
    return out
