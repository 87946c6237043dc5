"""The official SAM 3 detection + memory-tracking loop: ``loop`` (buckets, memories, hot-start), ``planning``
(the per-frame rules as pure functions), ``tracking`` (one loop per prompt, for a run)."""
