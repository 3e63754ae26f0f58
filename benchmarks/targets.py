"""What ``make bench`` must show, read by the runner (:mod:`.run_all`) and the report (:mod:`.report`)."""

TARGETS = {  # key: (comparison, threshold, what)
    "step_speedup": (">=", 3.0, "distillation step, ours vs naive (samples/s ratio)"),
    "frontend_speedup": (">=", 10.0, "audio front end, torch vs HF extractor"),
    "search_ms_per_query": ("<=", 5.0, "search ms/query over 1M x 768"),
    "search_recall_at_10": (">=", 0.95, "search recall@10 vs exact"),
}
