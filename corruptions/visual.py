"""Visual corruptions of one clip (3, T, H, W) or one frame (3, H, W) in [0, 1], frame by frame.

Severity constants: Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations" (ICLR 2019), ImageNet-C, Section 3 and Appendix (Figure 1's corruptions; the parameters per
severity are those of its released generator, which imagecorruptions 1.1.2 reproduces and the tests compare
against). Each comment ``# ImageNet-C`` names that source. ImageNet-C's parameters are for 224 px images;
they are kept as they are on smaller frames (the demo's 32 px), where a blur of the same radius is
relatively stronger: say so when comparing with ImageNet-C numbers.

Occlusion and frame freeze are not in ImageNet-C; their severities are ours (see each docstring).
Randomness is drawn per clip, not per frame, where the physical cause is one event for the whole clip (the
motion blur's direction, the occluder's place); noise is drawn per pixel and frame.
"""
from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F

from corruptions.base import register_atom

IMAGENET_C = "Hendrycks & Dietterich 2019 (ImageNet-C)"


def _frames(x: torch.Tensor) -> torch.Tensor:
    """(3, T, H, W) -> (T, 3, H, W); (3, H, W) -> (1, 3, H, W)."""
    if x.dim() == 3:
        return x.unsqueeze(0)
    if x.dim() == 4:
        return x.permute(1, 0, 2, 3)
    raise ValueError(f"a visual clip is (3, T, H, W) or (3, H, W), got shape {tuple(x.shape)}")


def _unframes(f: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The inverse of ``_frames`` for a clip shaped like ``like``, in its dtype."""
    f = f.to(like.dtype)
    return f[0] if like.dim() == 3 else f.permute(1, 0, 2, 3).contiguous()


def _hwc_draws(frames: torch.Tensor, draw) -> torch.Tensor:
    """Per-pixel draws made in (T, H, W, 3) order (an image library's layout, so the same generator gives the
    same numbers as a peer working on H x W x 3 images, frame after frame), returned as (T, 3, H, W)."""
    t, c, h, w = frames.shape
    return torch.from_numpy(draw((t, h, w, c))).permute(0, 3, 1, 2).to(frames.device)


@register_atom("gaussian_noise", "visual", IMAGENET_C)
def gaussian_noise(x: torch.Tensor, severity: int, rng: np.random.RandomState, sample_rate: int) -> torch.Tensor:
    """Additive N(0, c^2) per pixel and channel, clipped to [0, 1]."""
    c = [.08, .12, 0.18, 0.26, 0.38][severity - 1]  # ImageNet-C gaussian_noise
    f = _frames(x).double()
    noise = _hwc_draws(f, lambda shape: rng.normal(size=shape, scale=c))
    return _unframes((f + noise).clamp(0, 1), x)


@register_atom("shot_noise", "visual", IMAGENET_C)
def shot_noise(x: torch.Tensor, severity: int, rng: np.random.RandomState, sample_rate: int) -> torch.Tensor:
    """Poisson photon noise: Poisson(x * c) / c, clipped to [0, 1] (fewer photons c: more noise)."""
    c = [60, 25, 12, 5, 3][severity - 1]  # ImageNet-C shot_noise
    f = _frames(x).double()
    hwc = f.permute(0, 2, 3, 1).cpu().numpy()
    out = torch.from_numpy(rng.poisson(hwc * c) / float(c)).permute(0, 3, 1, 2).to(f.device)
    return _unframes(out.clamp(0, 1), x)


def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """ImageNet-C's defocus kernel: a disk of ``radius`` px (on a grid of at least 17 x 17), normalised, then
    anti-aliased by a Gaussian of sigma ``alias_blur`` (3 x 3, 5 x 5 beyond radius 8), with OpenCV."""
    import cv2  # opencv-python-headless (requirements.txt)

    half = 8 if radius <= 8 else int(radius)  # ImageNet-C: the grid is at least -8..8
    grid = np.arange(-half, half + 1)
    xx, yy = np.meshgrid(grid, grid)
    d = ((xx ** 2 + yy ** 2) <= radius ** 2).astype(np.float32)
    d /= d.sum()
    return cv2.GaussianBlur(d, ksize=(3, 3) if radius <= 8 else (5, 5), sigmaX=alias_blur)


@register_atom("defocus_blur", "visual", IMAGENET_C)
def defocus_blur(x: torch.Tensor, severity: int, rng: np.random.RandomState, sample_rate: int) -> torch.Tensor:
    """Each channel correlated with ``disk_kernel`` (reflected borders, OpenCV's default BORDER_REFLECT_101)."""
    radius, alias = [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)][severity - 1]  # ImageNet-C defocus_blur
    f = _frames(x).double()
    k = torch.from_numpy(disk_kernel(radius, alias).astype(np.float64)).to(f.device)
    pad = k.shape[0] // 2
    t, c, h, w = f.shape
    if min(h, w) <= pad:
        raise ValueError(f"defocus_blur severity {severity} needs frames larger than {pad} px, got {h}x{w}")
    flat = F.pad(f.reshape(t * c, 1, h, w), (pad, pad, pad, pad), mode="reflect")
    out = F.conv2d(flat, k[None, None]).reshape(t, c, h, w)
    return _unframes(out.clamp(0, 1), x)


def _shift(f: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """``f`` (T, 3, H, W) moved by dx columns and dy rows, the border pixels repeated into the gap."""
    h, w = f.shape[-2:]
    p = F.pad(f, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)), mode="replicate")
    return p[..., max(-dy, 0):max(-dy, 0) + h, max(-dx, 0):max(-dx, 0) + w]


@register_atom("motion_blur", "visual", IMAGENET_C)
def motion_blur(x: torch.Tensor, severity: int, rng: np.random.RandomState, sample_rate: int) -> torch.Tensor:
    """Linear motion blur: the frame averaged over 2r+1 shifts along a direction drawn once per clip from
    U(-45, 45) degrees, weighted by a one-sided Gaussian of sigma s (ImageMagick's -motion-blur r x s, as
    ImageNet-C used; imagecorruptions' numpy version of it is the peer)."""
    radius, sigma = [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)][severity - 1]  # ImageNet-C motion_blur
    angle = rng.uniform(-45, 45)
    f = _frames(x).double()
    h, w = f.shape[-2:]
    width = 2 * radius + 1
    weights = np.exp(-np.arange(width) ** 2 / (2 * sigma ** 2))
    weights /= weights.sum()
    py, px = width * math.sin(math.radians(angle)), width * math.cos(math.radians(angle))
    hyp = math.hypot(py, px)
    out = torch.zeros_like(f)
    for i in range(width):
        dy, dx = -math.ceil(i * py / hyp - 0.5), -math.ceil(i * px / hyp - 0.5)
        if abs(dy) >= h or abs(dx) >= w:  # the motion left the frame: the remaining weights are dropped
            break
        out += float(weights[i]) * _shift(f, dx, dy)
    return _unframes(out.clamp(0, 1), x)


@register_atom("jpeg", "visual", IMAGENET_C)
def jpeg(x: torch.Tensor, severity: int, rng: np.random.RandomState, sample_rate: int) -> torch.Tensor:
    """Each frame rounded to 8 bits and sent through Pillow's JPEG encoder at quality q, then decoded."""
    from PIL import Image

    q = [25, 18, 15, 10, 7][severity - 1]  # ImageNet-C jpeg_compression
    f = _frames(x)
    u8 = (f.double() * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for frame in u8:
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, "JPEG", quality=q)
        out.append(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
    dec = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(f.device)
    return _unframes(dec.double() / 255, x)


@register_atom("brightness", "visual", IMAGENET_C)
def brightness(x: torch.Tensor, severity: int, rng: np.random.RandomState, sample_rate: int) -> torch.Tensor:
    """HSV value + c (clipped to 1), hue and saturation kept: ImageNet-C's rgb2hsv -> V + c -> hsv2rgb, in
    closed form (RGB scales with V at fixed H and S; a black pixel becomes grey V + c)."""
    c = [.1, .2, .3, .4, .5][severity - 1]  # ImageNet-C brightness
    f = _frames(x).double()
    v = f.amax(dim=1, keepdim=True)
    v_new = (v + c).clamp(max=1.0)
    out = torch.where(v > 0, f * (v_new / v.clamp(min=1e-12)), v_new.expand_as(f))
    return _unframes(out.clamp(0, 1), x)


@register_atom("contrast", "visual", IMAGENET_C)
def contrast(x: torch.Tensor, severity: int, rng: np.random.RandomState, sample_rate: int) -> torch.Tensor:
    """Each frame's channels pulled towards their own spatial mean: (x - m) * c + m."""
    c = [0.4, .3, .2, .1, .05][severity - 1]  # ImageNet-C contrast
    f = _frames(x).double()
    m = f.mean(dim=(2, 3), keepdim=True)
    return _unframes(((f - m) * c + m).clamp(0, 1), x)


@register_atom("occlusion", "visual", "ours (not in ImageNet-C)")
def occlusion(x: torch.Tensor, severity: int, rng: np.random.RandomState, sample_rate: int) -> torch.Tensor:
    """A black square covering a fraction a of the frame (a = 0.05, 0.1, 0.2, 0.3, 0.4), at one place drawn
    per clip and in every frame (an object in front of the camera). Ours: the fractions span random erasing's
    range (Zhong et al., AAAI 2020: 0.02-0.4 of the image); black because an unlit obstruction is dark."""
    a = [0.05, 0.1, 0.2, 0.3, 0.4][severity - 1]  # ours, see the docstring
    f = _frames(x).clone()
    h, w = f.shape[-2:]
    side_h, side_w = max(1, round(math.sqrt(a) * h)), max(1, round(math.sqrt(a) * w))
    u, v = rng.uniform(size=2)  # the same draws at every severity: larger squares grow around the same place
    top, left = int(u * (h - side_h + 1)), int(v * (w - side_w + 1))
    f[..., top:top + side_h, left:left + side_w] = 0
    return _unframes(f, x)


@register_atom("frame_freeze", "visual", "ours (not in ImageNet-C)", min_frames=2)
def frame_freeze(x: torch.Tensor, severity: int, rng: np.random.RandomState, sample_rate: int) -> torch.Tensor:
    """Dropped frames: a fraction p of frames 2..T (p = 0.2, 0.4, 0.6, 0.8, 1.0; at least one) shows the frame
    before it instead (a stalled stream repeats the last frame); at severity 5 the clip is its first frame.
    Ours: no benchmark fixes these. The dropped frames are the first k of one permutation drawn per clip, so
    a higher severity drops a superset. Needs T >= 2 (a single frame has nothing to freeze)."""
    p = [0.2, 0.4, 0.6, 0.8, 1.0][severity - 1]  # ours, see the docstring
    if x.dim() != 4 or x.shape[1] < 2:
        raise ValueError(f"frame_freeze needs clips of at least 2 frames (3, T, H, W), got shape {tuple(x.shape)}")
    t = x.shape[1]
    order = rng.permutation(t - 1) + 1
    dropped = set(order[:max(1, math.ceil(p * (t - 1)))].tolist())
    out = x.clone()
    for i in range(1, t):
        if i in dropped:
            out[:, i] = out[:, i - 1]
    return out
