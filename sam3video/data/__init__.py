"""Synthetic data: a world of moving flat shapes with exact ground truth (``synthetic``), its writers
(``writers``) and single-frame training examples (``training``); ``train/`` trains the demo model.
Domain randomisation (opt-in, ``WorldConfig.style``): ``styles`` (ranges, splits), ``styled`` (clips),
``scenes`` (backgrounds), ``appearance`` (object looks), ``effects`` (camera and sensor)."""
