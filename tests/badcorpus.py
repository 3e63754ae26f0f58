"""A corpus of bad (and a few awkward-but-good) inputs, generated into a temp dir at test time.

Each entry maps a file name to the reason the project must give for it (``None``: the
file is awkward but usable and must be embedded). Nothing is downloaded or committed:
every file is synthesised here from a seed, so the corpus is the same on every run.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

SR = 16000


def tone(sr: int, seconds: float, f0: float = 1500.0, amp: float = 0.3, channels: int = 1) -> np.ndarray:
    """A chirpy tone (what a bird might sing) at any sample rate; ``(n,)`` or ``(n, channels)``."""
    t = np.arange(int(round(seconds * sr))) / sr
    wave = amp * np.sin(2 * np.pi * (f0 + 400 * np.sin(2 * np.pi * 3 * t)) * t) * np.sin(np.pi * t / seconds) ** 2
    wave = wave.astype(np.float32)
    return wave if channels == 1 else np.repeat(wave[:, None], channels, axis=1)


def _encoded(wave: np.ndarray, sr: int, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


# Expected reasons (see birdbridge.data.audio_file / birdbridge.data.images module docstrings).
AUDIO_EXPECTED: dict[str, str | None] = {
    "good_a.wav": None,
    "good_b.flac": None,
    "eight_channels.wav": None,
    "rate_8k.wav": None,
    "rate_192k.wav": None,
    "stereo.mp3": None,
    "truncated.wav": "decode_error",
    "truncated.flac": "decode_error",
    "truncated.mp3": "decode_error",
    "zero_bytes.wav": "empty",
    "random_bytes.wav": "unreadable",
    "ten_ms.wav": "too_short",
    "nan.wav": "non_finite",
    "inf.wav": "non_finite",
    "silence.wav": "silent",
    "text_file.wav": "unreadable",
    "notes.txt.flac": "unreadable",
    "a_directory.wav": "unreadable",
}


def write_bad_audio(root: str | Path) -> dict[str, Path]:
    """Write every :data:`AUDIO_EXPECTED` file into ``root``; returns name -> path."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files: dict[str, bytes] = {}
    files["good_a.wav"] = _encoded(tone(SR, 1.2), SR, "WAV", "PCM_16")
    files["good_b.flac"] = _encoded(tone(SR, 2.0, 900), SR, "FLAC", "PCM_16")
    files["eight_channels.wav"] = _encoded(tone(SR, 1.0, channels=8), SR, "WAV", "PCM_16")
    files["rate_8k.wav"] = _encoded(tone(8000, 1.0, 1000), 8000, "WAV", "PCM_16")
    files["rate_192k.wav"] = _encoded(tone(192000, 1.0), 192000, "WAV", "PCM_24")
    mp3 = _encoded(tone(44100, 3.0, channels=2), 44100, "MP3", "MPEG_LAYER_III")
    files["stereo.mp3"] = mp3
    wav = _encoded(tone(SR, 2.0), SR, "WAV", "PCM_16")
    files["truncated.wav"] = wav[: len(wav) // 2]  # header still promises 2 s
    flac = _encoded(tone(SR, 3.0, 700) + 0.05 * rng.standard_normal(3 * SR).astype(np.float32), SR, "FLAC", "PCM_16")
    files["truncated.flac"] = flac[: len(flac) // 2]
    files["truncated.mp3"] = mp3[: len(mp3) // 3]
    files["zero_bytes.wav"] = b""
    files["random_bytes.wav"] = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    files["ten_ms.wav"] = _encoded(tone(SR, 0.01), SR, "WAV", "PCM_16")
    nan = tone(SR, 1.0)
    nan[100:110] = np.nan
    files["nan.wav"] = _encoded(nan, SR, "WAV", "FLOAT")
    inf = tone(SR, 1.0)
    inf[5000] = np.inf
    files["inf.wav"] = _encoded(inf, SR, "WAV", "FLOAT")
    files["silence.wav"] = _encoded(np.zeros(SR, np.float32), SR, "WAV", "PCM_16")
    files["text_file.wav"] = b"species,path\nthis is a CSV, not a recording\n" * 20
    files["notes.txt.flac"] = "field notes: heard a phoebe at dawn\n".encode() * 50
    out = {}
    for name, data in files.items():
        (root / name).write_bytes(data)
        out[name] = root / name
    (root / "a_directory.wav").mkdir(exist_ok=True)
    out["a_directory.wav"] = root / "a_directory.wav"
    assert set(out) == set(AUDIO_EXPECTED)
    return out


def write_long_sparse_wav(path: str | Path, hours: float = 2.0, sr: int = 8000, chirp_every_s: float = 600.0) -> Path:
    """An ``hours``-long 8-bit mono WAV, mostly silence with a chirp every ``chirp_every_s``.

    8 kHz × 8 bit is 28.8 MB per hour; written block by block, so making it costs no
    memory. A real long soundscape at 48 kHz/16 bit would be 12× larger; the point is the
    reader's memory must not grow with the file, which a 2-hour file already shows.
    """
    path = Path(path)
    n = int(hours * 3600 * sr)
    chirp = tone(sr, 2.0, 1200, amp=0.5)
    silence_block = np.zeros(sr * 60, np.float32)  # one minute at a time: bounded memory
    with sf.SoundFile(path, "w", samplerate=sr, channels=1, format="WAV", subtype="PCM_U8") as f:
        written = 0
        next_chirp = 0
        while written < n:
            if written >= next_chirp:
                f.write(chirp)
                written += len(chirp)
                next_chirp += int(chirp_every_s * sr)
                continue
            take = min(len(silence_block), n - written, max(1, next_chirp - written))
            f.write(silence_block[:take])
            written += take
    return path


# --------------------------------------------------------------------------- images


IMAGE_EXPECTED: dict[str, str | None] = {
    "good.png": None,
    "good.jpg": None,
    "cmyk.jpg": None,
    "sixteen_bit.png": None,
    "greyscale.png": None,
    "truncated.jpg": "truncated",
    "one_pixel.png": "too_small",
    "bomb.png": "too_large",
    "zero_bytes.jpg": "unreadable",
    "random_bytes.png": "unreadable",
    "text_file.jpg": "unreadable",
}


def _photo(size: int = 48, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    img = np.stack([(xx * 5) % 256, (yy * 5) % 256, ((xx + yy) * 3) % 256], -1).astype(np.float32)
    return np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)


def _bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header declaring ``width × height`` pixels, with a tiny (wrong) body.

    The loader must refuse it from the header alone, before allocating gigabytes.
    """
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def write_bad_images(root: str | Path) -> dict[str, Path]:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(_photo())
    out: dict[str, Path] = {}

    def save(name: str, im: Image.Image, **kw) -> None:
        im.save(root / name, **kw)
        out[name] = root / name

    save("good.png", rgb)
    save("good.jpg", Image.fromarray(_photo(seed=1)), quality=90)
    save("cmyk.jpg", rgb.convert("CMYK"), quality=90)
    save("sixteen_bit.png", Image.fromarray((np.asarray(rgb.convert("L"), np.uint16) * 257).astype(np.uint16)))
    save("greyscale.png", rgb.convert("L"))
    save("one_pixel.png", Image.new("RGB", (1, 1), (200, 10, 10)))
    buf = io.BytesIO()
    Image.fromarray(_photo(96, seed=2)).save(buf, "JPEG", quality=95)
    raw = {"truncated.jpg": buf.getvalue()[: len(buf.getvalue()) // 2],
           "bomb.png": _bomb_png(30000, 30000),  # 900 MP from a ~100-byte file
           "zero_bytes.jpg": b"",
           "random_bytes.png": np.random.default_rng(1).integers(0, 256, 2048, dtype=np.uint8).tobytes(),
           "text_file.jpg": b"<html>not a photo</html>\n" * 10}
    for name, data in raw.items():
        (root / name).write_bytes(data)
        out[name] = root / name
    assert set(out) == set(IMAGE_EXPECTED)
    return out
