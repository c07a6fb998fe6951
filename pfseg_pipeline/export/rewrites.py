"""Equivalent forms of two modules that ONNX Runtime (and OpenVINO) run faster or more exactly.

Both give the original module's output (up to the order of the float sums); the ONNX export
applies them to a copy of the network (`for_onnx_runtime`), the network itself is untouched.

- `SubPixelConvTranspose3d`: a 3D transposed convolution with stride s, kernel k and padding p,
  where k - 2p = s, makes an output exactly s times its input per axis. Output voxel s*m + a
  (phase a, 0 <= a < s) only sees the kernel taps k' = a + p - s*d applied to input voxel m + d,
  so each of the sz*sy*sx phases is an ordinary convolution over the input with its own smaller
  kernel; the phase outputs interleaved (depth-to-space) are the transposed convolution's
  output, with the same multiply-adds. Why: ONNX Runtime computes ConvTranspose as GEMM +
  col2im through a column buffer of Cout * k^3 x input voxels (4 GiB for PFSeg's LR -> HR stage
  at BraTS size): measured, a peak of 9.3 GB instead of 3.6 GB for the whole pass, and runs of
  7-10 s instead of 4 s whenever the buffer was paged in anew.
- `NestedMeanInstanceNorm3d`: instance normalisation whose mean and variance are means of means
  along x, then y, then z. Why: ONNX Runtime's InstanceNormalization, and its ReduceMean over a
  whole (Z, Y, X) volume, lose float32 precision as the voxel count grows: on a brain-like
  volume with zero background at BraTS size their output was off by up to 1e-2 (PyTorch's by
  4e-7), and PFSeg's logits by 2.5e-3. Means of at most a few hundred values at a time stay as
  exact as PyTorch, for about 1.7x the time of the fused kernel (still 2.5x faster than
  PyTorch's instance norm). OpenVINO's MVN and its one mean over chained means lose the same
  precision (PFSeg's logits off by 2e-2): the middle level is a sum, which it does not merge.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pfseg_pipeline.networks.blocks import UpStage


def _phase_taps(kernel: int, stride: int, padding: int, phase: int) -> tuple[int, list[int]]:
    """(lowest input offset d, kernel taps for offsets d, d + 1, ...) of one output phase."""
    offsets = [d for d in range(-kernel, kernel + 1) if 0 <= phase + padding - stride * d < kernel]
    return offsets[0], [phase + padding - stride * d for d in offsets]


def supports_subpixel(conv: nn.ConvTranspose3d) -> bool:
    """Whether `conv` up-samples by exactly its stride (k - 2p = s per axis), ungrouped, undilated."""
    return (conv.groups == 1 and all(d == 1 for d in conv.dilation)
            and all(o == 0 for o in conv.output_padding) and conv.padding_mode == "zeros"
            and all(k - 2 * p == s for k, s, p in zip(conv.kernel_size, conv.stride, conv.padding)))


class SubPixelConvTranspose3d(nn.Module):
    """The output of `conv` (an `nn.ConvTranspose3d` with `supports_subpixel`) by phase convolutions.

    `forward(x)`: (B, Cin, Z, Y, X) -> (B, Cout, sz*Z, sy*Y, sx*X), equal to `conv(x)` up to float
    rounding (`activation(conv(x))` with an element-wise `activation`, applied before the
    interleave, where ONNX Runtime fuses it into the convolution). The weights are copied from
    `conv` at construction.

    All phases run as ONE convolution with Cout*sz*sy*sx outputs over the padded input (a larger
    matrix product runs faster than one per phase); phase a's kernel sits in a window of the
    longest phase's length (zeros past its own taps: none for the up-stages here, whose phases
    all have k/s taps). Along an axis, phase a's output for voxel m lies at convolution index
    j = m + start_a, i.e. at output position s*j + g_a with g_a = a - s*start_a; the g_a of the s
    phases are s consecutive integers, so with the phases ordered by g_a the convolution's
    channels interleave (depth-to-space) into the output shifted by min(g_a): one crop at the
    end, instead of a slice per phase and their concatenation (each a copy of the output in
    ONNX Runtime). The interleave moves one axis at a time, x first (each single-axis transpose
    about half the time of one transpose of all axes in ONNX Runtime).
    """

    def __init__(self, conv: nn.ConvTranspose3d, activation: nn.Module | None = None):
        super().__init__()
        if not supports_subpixel(conv):
            raise ValueError(f"{conv} does not up-sample by exactly its stride")
        self.scale_zyx = tuple(int(s) for s in conv.stride)
        weight = conv.weight.detach()                      # (Cin, Cout, kz, ky, kx)
        axes = [[_phase_taps(k, s, p, a) for a in range(s)]
                for k, s, p in zip(conv.kernel_size, conv.stride, conv.padding)]
        length = [max(len(taps) for _, taps in phases) for phases in axes]
        pad_before = [max(0, -min(lo for lo, _ in phases)) for phases in axes]
        pad_after = [max(0, max(lo for lo, _ in phases) + n - 1) for phases, n in zip(axes, length)]
        self.pad = [v for axis in (2, 1, 0) for v in (pad_before[axis], pad_after[axis])]
        # per axis: the phases in the order of their output offset g_a, and the shift min(g_a)
        by_offset, self.shift_zyx = [], []
        for phases, s, before in zip(axes, self.scale_zyx, pad_before):
            offsets = [a - s * (lo + before) for a, (lo, _) in enumerate(phases)]
            if sorted(offsets) != list(range(min(offsets), min(offsets) + s)):   # cannot happen when
                raise ValueError(f"{conv}: phase offsets {offsets} are not consecutive")  # k - 2p = s
            by_offset.append([phases[a] for a in sorted(range(s), key=offsets.__getitem__)])
            self.shift_zyx.append(-min(offsets))
        kernels = []
        for pz, py, px in ((a, b, c) for a in by_offset[0] for b in by_offset[1] for c in by_offset[2]):
            kernel = weight.new_zeros(weight.shape[1], weight.shape[0], *length)
            taps = weight[:, :, pz[1]][:, :, :, py[1]][:, :, :, :, px[1]].transpose(0, 1)
            kernel[:, :, :len(pz[1]), :len(py[1]), :len(px[1])] = taps
            kernels.append(kernel)
        # channel c * phases + i: output channel c of phase i, so (B, Cout, phases, ...) is a view
        self.register_buffer("weight", torch.stack(kernels, dim=1).flatten(0, 1))  # (Cout*phases, Cin, L...)
        bias = conv.bias.detach().repeat_interleave(len(kernels)) if conv.bias is not None else None
        self.register_buffer("bias", bias)
        self.out_channels = int(weight.shape[1])
        self.activation = activation
        # the interleaved convolution output overhangs the output by the same voxel counts at
        # every input size: cropped by ONE negative pad (a slice is one copy per axis in ONNX)
        overhang = [s * (before + after - n + 1) for s, before, after, n in
                    zip(self.scale_zyx, pad_before, pad_after, length)]
        self.crop = [v for axis in (2, 1, 0) for v in
                     (-self.shift_zyx[axis], -(overhang[axis] - self.shift_zyx[axis]))]

    def forward(self, x: Tensor) -> Tensor:
        out = F.conv3d(F.pad(x, self.pad) if any(self.pad) else x, self.weight, self.bias)
        if self.activation is not None:
            out = self.activation(out)
        b, _, z, y, x_ = out.shape
        out = interleave_phases(out.reshape(b, self.out_channels, -1, z, y, x_), self.scale_zyx)
        return F.pad(out, self.crop) if any(self.crop) else out


def interleave_phases(phases: Tensor, scale_zyx: tuple[int, int, int]) -> Tensor:
    """(B, C, sz*sy*sx, Z, Y, X), phases in (a, b, c) row-major order -> (B, C, sz*Z, sy*Y, sx*X)
    with phase (a, b, c) of voxel (m, n, o) at (sz*m + a, sy*n + b, sx*o + c)."""
    b, c, _, z, y, x = phases.shape
    sz, sy, sx = scale_zyx
    out = phases.reshape(b, c, sz, sy, sx, z, y, x)
    out = out.permute(0, 1, 2, 3, 5, 6, 7, 4).reshape(b, c, sz, sy, z, y, x * sx)   # x phases in x
    out = out.permute(0, 1, 2, 4, 5, 3, 6)                                          # y phase after Y
    out = out.permute(0, 1, 3, 2, 4, 5, 6)                                          # z phase after Z
    return out.reshape(b, c, z * sz, y * sy, x * sx)


def _nested_mean(x: Tensor) -> Tensor:
    """Mean over the spatial axes of (B, C, Z, Y, X) as the mean along x, then y, then z (exact
    for equal counts per row), so no float32 sum runs over more than one axis's voxels."""
    # the middle level as a sum over y times 1 / Y: a graph optimiser that merges chained means
    # into one mean over all voxels (OpenVINO's does) cannot merge a sum with a mean
    return (x.mean(dim=4, keepdim=True).sum(dim=3, keepdim=True) / x.shape[3]).mean(dim=2, keepdim=True)


class NestedMeanInstanceNorm3d(nn.Module):
    """`nn.InstanceNorm3d` (without running statistics) with nested-mean statistics.

    `forward(x)`: (B, C, Z, Y, X) -> (x - mean) / sqrt(var + eps) per sample and channel (biased
    variance, as InstanceNorm3d), times weight plus bias when the original is affine.
    """

    def __init__(self, norm: nn.InstanceNorm3d):
        super().__init__()
        if norm.track_running_stats:
            raise ValueError("an InstanceNorm3d with running statistics is not data-dependent: keep it")
        self.eps = float(norm.eps)
        weight = norm.weight.detach().clone().view(1, -1, 1, 1, 1) if norm.affine else None
        bias = norm.bias.detach().clone().view(1, -1, 1, 1, 1) if norm.affine else None
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        centred = x - _nested_mean(x)
        scale = torch.rsqrt(_nested_mean(centred * centred) + self.eps)     # (B, C, 1, 1, 1)
        if self.weight is None:
            return centred * scale
        return centred * (scale * self.weight) + self.bias   # the affine folded into the scale


def for_onnx_runtime(network: nn.Module) -> nn.Module:
    """A copy of `network` with each supported `nn.ConvTranspose3d` in its phase form (an
    `UpStage`'s activation inside it) and each `nn.InstanceNorm3d` without running statistics in
    its nested-mean form."""
    network = copy.deepcopy(network)
    for module in list(network.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, UpStage) and supports_subpixel(child.conv):
                setattr(module, name, SubPixelConvTranspose3d(child.conv, child.activation))
            elif isinstance(child, nn.ConvTranspose3d) and supports_subpixel(child):
                setattr(module, name, SubPixelConvTranspose3d(child))
            elif isinstance(child, nn.InstanceNorm3d) and not child.track_running_stats:
                setattr(module, name, NestedMeanInstanceNorm3d(child))
    return network
