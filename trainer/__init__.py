"""Retraining job (DESIGN section 8): data -> multi-task fine-tune -> ONNX package -> challenger
report.

Modules, one concern each: ``labels`` (versioned label maps), ``data`` (loaders, splits, digest),
``tokens`` (truncation policy shared by training and scoring), ``model`` (shared encoder + one
linear head per task), ``train`` (the loop), ``calibrate`` (thresholds on validation), ``export``
(optimum ONNX export, parity, int8), ``packaging`` (manifest), ``scoring`` (onnxruntime scorer),
``compare`` (champion vs challenger), ``tracking`` (W&B), ``tiny`` (random-weight test package),
``cli`` (``python -m trainer``). Torch is imported only by the modules that need it, so
``scoring``/``compare`` run without it.
"""
