"""The data sections of ``docs/PERFORMANCE.md``: the training loader, and a projection of the paper's run.

Every projected figure is computed here from a measured or documented input, and says which:
``bench_loader`` (``results.json["loader"]``), ``gpu_results.json`` (``benchmarks/gpu.sh``), the
dataset table of ``birdbridge.data.download`` (sizes from the datasets' own documentation), or
the real iNatSounds ``test.json`` (read by ``bench_loader``).
"""

from __future__ import annotations

GB = 1e9
# iNatSounds 2024 train recordings: ~137k (230k files in all, arXiv 2506.00343, less test's 49,527 and val)
INAT_TRAIN_RECORDINGS = 137_000
# CPU cores feeding the GPUs: the one-H200 machine gpu.sh ran on had 16; an 8 x H200 node (DGX H200) has 112
CORES = {1: 16, 8: 112}
# configs/paper/ssw60_table.yaml: main model, 3 more prompt arms, the unseen split; max_epochs 10 (ours)
PAPER_DISTILLATIONS, PAPER_EPOCHS = 5, 10


def loader_section(r: dict) -> list[str]:
    L = r.get("loader")
    if not L:
        return ["Not run in this suite run.", ""]
    d, v, q = L["data"], L["variants"], L["int16_at_48k"]
    out = [
        f"{d['n_recordings']} iNatSounds-like recordings ({d['audio']}; lengths: {d['durations']}; mean {d['mean_s']} s, "
        f"max {d['max_s']} s, {d['hours']} h), 22.05 kHz 16-bit WAV. Each loader runs in its own process on one core "
        f"(`benchmarks/bench_loader.py`): batches of {L['batch']} random {L['clip_s']:.0f} s crops at {L['sample_rate']} Hz "
        f"through the training dataset, sampler and collate, {L['seconds_per_run']:.0f} s per run, {L['repeats']} interleaved "
        f"runs (median). Load average during the runs {', '.join(f'{x:.1f}' for x in L['load_avg'])}.",
        "",
        "| loader | clips/s per core | runs | peak RSS (MB) | disk per audio hour |",
        "|---|---:|---|---:|---:|",
        f"| WAV files (for reference) | | | | {d['wav_bytes_per_audio_hour'] / 1e6:.0f} MB |",
    ]
    names = {"raw_whole": "files: decode all, resample, crop (before this change)",
             "raw": "files: crop, then decode + resample the crop (`data/crop.py`)"}
    for k, x in v.items():
        disk = f"{x['bytes_per_audio_hour'] / 1e6:.0f} MB" if "bytes_per_audio_hour" in x else ""
        label = names[k] if k in names else f"shards {k.split(':', 1)[-1]}" + (" (**chosen**)" if k == L["chosen"] else "")
        out.append(f"| {label} | {x['clips_per_s']:.0f} | {', '.join(f'{y:.0f}' for y in x['runs'])} | "
                   f"{x['peak_rss_mb']:.0f} ({x['peak_rss_mb'] - x['base_rss_mb']:+.0f} over the idle loader) | {disk} |")
    out += [""]
    if "loader_shards_over_raw" in r:
        out.append(f"Shards (pcm16 at 48 kHz) vs files with the crop-first decode: **{r['loader_shards_over_raw']:.1f}x**; "
                   f"vs the whole-file decode training used before: {r.get('loader_shards_over_raw_whole', float('nan')):.1f}x; "
                   f"crop-first alone: {r.get('loader_crop_first_over_whole', float('nan')):.1f}x. "
                   "The shard loader hands over int16 batches (pcm16 stored at the student's rate), which become the "
                   "identical float32 on the model's device (`distill.data.waves_as_float`); the file loaders hand "
                   "over float32.")
    c = L.get("components")
    if c:
        out += ["", "Where a clip's time goes (ms per clip, each part timed apart, best of 3, one thread):", "",
                "| part | ms |", "|---|---:|",
                f"| shards: fetch the sample (LitData, memory map) | {c['shard_sample_fetch_ms']:.2f} |",
                f"| shards: fetch + crop + int16 -> float into a reused buffer (all a shard clip costs) | {c['shard_crop_into_reused_buffer_ms']:.2f} |",
                f"| shards: the same into a fresh batch tensor (as a loader must) | {c['shard_crop_into_fresh_batch_ms']:.2f} |",
                *([f"| shards: fetch + crop kept as int16, into a fresh int16 batch (the training loader; "
                   f"float32 on the device) | {c['shard_pcm16_into_fresh_int16_batch_ms']:.2f} |"]
                  if "shard_pcm16_into_fresh_int16_batch_ms" in c else []),
                f"| files: seek + decode a 10.1 s crop of a WAV | {c['file_decode_crop_ms']:.2f} |",
                f"| files: resample it, 22.05 -> 48 kHz (soxr HQ) | {c['file_resample_crop_ms']:.2f} |", ""]
        fresh = c["shard_crop_into_fresh_batch_ms"] - c["shard_crop_into_reused_buffer_ms"]
        if r.get("loader_shards_over_raw", 99) < 5:
            own = c["file_decode_crop_ms"] + c["file_resample_crop_ms"]
            out.append(f"Why the 5x target is not met in this run: a shard clip's own work is small "
                       f"({c['shard_crop_into_reused_buffer_ms']:.2f} ms against the files' {own:.2f} ms, "
                       f"{own / c['shard_crop_into_reused_buffer_ms']:.0f}x), but every loader "
                       f"also writes each clip into a new batch ({fresh:.2f} ms more per clip here: the first touch of a "
                       f"{L['batch']} x {L['clip_s']:.0f} s batch's memory, page by page, which a busy machine makes dear), "
                       "and that cost, paid by both loaders, caps their ratio. It is the machine's memory system, not "
                       "decoding: rerun `make bench` on an idle machine.")
    out += ["", f"int16 storage of the 48 kHz audio ({q['clips']} clips): quantisation SNR {q['snr_db_min']:.0f} dB at worst "
            f"(median {q['snr_db_median']:.0f} dB); BioLingual's log-mel features change by at most {q['logmel_db_max_abs_diff']:.3f} dB "
            f"(99th percentile {q['logmel_db_p99_abs_diff']:.3f} dB; {q['note']}). docs/DATA.md explains the choice.", ""]
    return out


def _paper_batch() -> int:
    import yaml
    from pathlib import Path

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "paper" / "ssw60_table.yaml").read_text())
    return int(cfg["train"]["batch_size"])


def _train_row(gpu: dict | None, batch: int) -> dict | None:
    """The GPU's training rate at the paper config's per-GPU batch (else the nearest measured one)."""
    rows = (gpu or {}).get("train") or []
    return min(rows, key=lambda x: abs(x["batch"] - batch)) if rows else None


def projection_section(r: dict, gpu: dict | None, gpu_data: dict | None = None) -> list[str]:
    from birdbridge.data.download import ASSETS

    L = r.get("loader") or {}
    inat = L.get("inat_test")
    chosen = (L.get("variants") or {}).get(L.get("chosen", ""), {})
    raw = (L.get("variants") or {}).get("raw", {})
    best = _train_row(gpu, _paper_batch())
    top = max((gpu or {}).get("train") or [{"clips_per_s": 0, "batch": 0}], key=lambda x: x["clips_per_s"])
    if not (inat and chosen and raw and best):
        return ["Needs the loader benchmark with ../shared (iNatSounds test.json) and benchmarks/gpu_results.json.", ""]
    size = {f"{a.kind}/{a.name}": a.size for k in ASSETS for a in ASSETS[k]}
    paper = ["inat_sounds/train.tar.gz", "inat_sounds/train.json.tar.gz", "ssw60/ssw60.tar.gz",
             "soundscapes/soundscape_data.zip", "soundscapes/annotations.csv", "ebird_taxonomy/eBird_taxonomy_v2024.csv"]
    dl_paper, dl_all = sum(size[k] for k in paper), sum(size.values())
    n_aves = INAT_TRAIN_RECORDINGS * inat["aves_recordings_fraction"]
    hours = INAT_TRAIN_RECORDINGS * inat["mean_s"] / 3600
    hours_aves = hours * inat["aves_hours_fraction"]
    shard_bytes = hours_aves * chosen["bytes_per_audio_hour"]
    per_clip_bytes = inat["aves_mean_s"] / 3600 * chosen["bytes_per_audio_hour"]
    out = [
        "What the paper's run (configs/paper/ssw60_table.yaml) needs, scaled from the measurements above. Inputs:",
        "",
        f"* iNatSounds train: {INAT_TRAIN_RECORDINGS:,} recordings (230k in all, arXiv 2506.00343, less test and val); "
        f"birds {inat['aves_recordings_fraction']:.1%} of recordings and {inat['aves_hours_fraction']:.1%} of audio, mean "
        f"{inat['mean_s']:.1f} s (real test.json: {inat['recordings']:,} recordings, {inat['hours']:.0f} h) -> "
        f"**{hours:.0f} h, birds {n_aves:,.0f} recordings, {hours_aves:.0f} h**;",
        f"* student training on one H200: **{best['clips_per_s']:,.0f} clips/s** at the paper config's batch of "
        f"{best['batch']} per GPU (bf16; gpu_results.json; up to {top['clips_per_s']:,.0f} at batch {top['batch']}); data "
        f"loading per core: shards **{chosen['clips_per_s']:.0f}**, files {raw['clips_per_s']:.0f} "
        f"clips/s (bench_loader, this run's load); CPU cores: {CORES[1]} beside one H200 (the machine gpu.sh ran on), "
        f"{CORES[8]} on an 8 x H200 node (DGX H200).",
        "",
        "| figure | value | from |",
        "|---|---:|---|",
        f"| download, what the paper config reads | {dl_paper / GB:.0f} GB | dataset table (`data/download.py`): iNatSounds "
        "README sizes; SSW60 README (~32 GB); soundscapes estimated (285 h of 32 kHz FLAC; Zenodo gives no size) |",
        f"| download, `data download all` (adds iNatSounds val + test) | {dl_all / GB:.0f} GB | same |",
        f"| shards of iNatSounds train birds, pcm16 at 48 kHz | {shard_bytes / GB:.0f} GB | {hours_aves:.0f} h x "
        f"{chosen['bytes_per_audio_hour'] / 1e6:.0f} MB/h (bench_loader disk) |",
    ]
    for gpus in (1, 8):
        cores = CORES[gpus]
        gpu_rate = best["clips_per_s"] * gpus  # DDP scaling assumed linear: not measured here
        for name, per_core in (("shards", chosen["clips_per_s"]), ("files", raw["clips_per_s"])):
            feed = cores * per_core
            rate = min(gpu_rate, feed)
            wait = max(0.0, 1 - feed / gpu_rate)
            out.append(f"| {gpus} x H200, loading from {name}: one epoch of the birds | **{n_aves / rate / 60:.1f} min** "
                       f"({n_aves / rate / 3600:.3f} h) "
                       f"({'GPU-bound' if feed >= gpu_rate else f'loader-bound, GPU waits {wait:.0%}'}) | "
                       f"{n_aves:,.0f} clips / min(GPU {gpu_rate:,.0f}, {cores} cores x {per_core:.0f} = {feed:,.0f}) clips/s |")
            if name == "shards":
                runs = PAPER_DISTILLATIONS * PAPER_EPOCHS
                out.append(f"| {gpus} x H200 from shards: the paper config's {PAPER_DISTILLATIONS} distillations x "
                           f"{PAPER_EPOCHS} epochs | {runs * n_aves / rate / 3600:.1f} h | training only (no validation, "
                           "embedding or evaluation) |")
        bw = min(gpu_rate, cores * chosen["clips_per_s"]) * per_clip_bytes
        out.append(f"| {gpus} x H200: shard bytes read per second at that rate | {bw / GB:.1f} GB/s | a sample is read whole: "
                   f"{per_clip_bytes / 1e6:.2f} MB per bird recording on average |")
    if gpu_data:
        w = gpu_data.get("from_shards", {})
        if "data_wait_fraction" in w:
            out.append(f"| measured on the H200: step time waiting for data, training from shards | {w['data_wait_fraction']:.1%} | "
                       f"gpu.sh (bench_gpu_data, {w.get('workers')} loader workers) |")
    out += [
        "",
        f"The shards ({shard_bytes / GB:.0f} GB) fit in the page cache of a node with more RAM than that, and then the "
        "bytes per second above are memory reads; otherwise they come from disk, and a local NVMe array (or the node's "
        "RAM) is needed for 8 GPUs. Put the shards on node-local storage for the paper run; from a URL (`s3://...`) "
        "each clip is one ranged read. Not measured: DDP scaling beyond one GPU, the gather's cost across 8 GPUs, "
        "disk reads (the benchmark's data sits in the page cache).",
        "",
    ]
    return out


def gpu_data_section(gd: dict | None) -> list[str]:
    """``gpu_data.json`` from ``GPU_PARTS=data bash benchmarks/gpu.sh`` (not re-run by make bench)."""
    out = ["", "### Training from shards on the GPU; torch.compile and channels-last", ""]
    if not gd:
        return out + ["Not measured yet: no GPU was lent to the session that wrote this part "
                      "(`GPU_PARTS=data bash benchmarks/gpu.sh` writes `benchmarks/gpu_data.json`; target: the GPU waits "
                      "for data <= 10% of step time).", ""]
    s = gd.get("from_shards", {})
    if "error" in s:
        out.append(f"From shards: failed ({s['error']}).")
    else:
        out.append(f"{gd['device']}, {gd.get('cpu_cores')} CPU cores: batch {s['batch']}, {s['workers']} loader workers, "
                   f"{s['steps']} steps: the GPU waits for data **{s['data_wait_fraction']:.1%}** of step time; "
                   f"{s['clips_per_s']:,.0f} clips/s from shards vs {s['resident_batch_clips_per_s']:,.0f} on a resident batch.")
    c = gd.get("compile", {})
    out += ["", "| student step | clips/s | fraction of peak bf16 | first step (s) |", "|---|---:|---:|---:|"]
    for key, row in c.get("runs", {}).items():
        if "clips_per_s" in row:
            frac = f"{row['fraction_of_peak']:.1%}" if "fraction_of_peak" in row else "—"
            out.append(f"| {key} | {row['clips_per_s']:,.0f} | {frac} | {row['first_step_s']:.1f} |")
        else:
            out.append(f"| {key} | {row.get('error') or row.get('skipped')} | | |")
    return out + [""]
