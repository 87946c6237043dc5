"""The official SAM 3.1 multiplex loop: ``loop`` (multiplex states of 16-slot buckets), ``planning`` (the rules
that differ from SAM 3's), ``tracking`` (one loop per prompt, for a run)."""
