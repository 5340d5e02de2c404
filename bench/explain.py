"""Time to explain a typical complaint (~300 tokens) with the explainer's own code path; target < 10
s.

    python -m bench.explain [--package DIR ...] [--texts 5] [--max-evals 300] [--sub-batch 1 8]
                            [--masking remove mask_token] [--threads N]

For each package (default: the MiniLM-sized int8 package of ``bench.common``), masking and sub-batch
size: load the model as the explainer does (``explainer.model_cache.load_model``), compile shap's
kernels once (not timed), then explain the decided ``team`` label of real CFPB complaints whose
tokenisation is 270-330 tokens (the package's long-text policy may cut them to its max length, as in
production). Reports seconds per explanation (p50, max), model evaluations, ms per evaluation and
the worst additivity error. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import cfpb_texts, minilm_package
from consumer.inference import cpu_limit
from consumer.package import load_package
from explainer.attribution import Masking, warm_up
from explainer.model_cache import load_model

TARGET_S = 10.0


def typical_texts(package_dir: Path, n: int, low: int = 270, high: int = 330) -> list[str]:
    """``n`` real complaints whose full tokenisation (before any cut) has ``low``..``high``
    tokens."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(load_package(package_dir).tokenizer_path))
    tok.no_truncation()
    tok.no_padding()
    out = []
    for _, text in cfpb_texts(3000):
        if low <= len(tok.encode(text).ids) <= high:
            out.append(text)
            if len(out) == n:
                break
    return out


def measure(
    package_dir: Path,
    texts: list[str],
    max_evals: int,
    threads: int,
    sub_batch: int,
    masking: Masking,
) -> dict[str, Any]:
    package = load_package(package_dir)
    started = time.perf_counter()
    loaded = load_model(package, threads, sub_batch, masking)
    load_s = time.perf_counter() - started
    loaded.shap.explain(
        texts[0][:200], "team", package.heads["team"].labels[0], 20, 600
    )  # session warm-up
    seconds, evals, errors, tokens = [], [], [], []
    head = package.heads["team"]
    for text in texts:
        probs = loaded.model.run(loaded.shap.tokens.encoder.encode([text]))["team"][0]
        label = head.labels[int(np.argmax(probs))]
        att = loaded.shap.explain(text, "team", label, max_evals, 600)
        seconds.append(att.seconds)
        evals.append(att.evals)
        errors.append(att.additivity_error)
        tokens.append(len(att.view.body))
    return {
        "package": package.ref,
        "quantization": package.manifest["onnx"]["quantization"],
        "max_length": package.max_length,
        "masking": masking,
        "sub_batch": sub_batch,
        "threads": threads,
        "max_evals": max_evals,
        "texts": len(texts),
        "tokens_explained_mean": statistics.mean(tokens),
        "load_s": round(load_s, 3),
        "p50_s": round(statistics.median(seconds), 3),
        "max_s": round(max(seconds), 3),
        "evals_mean": statistics.mean(evals),
        "ms_per_eval": round(1000 * sum(seconds) / sum(evals), 2),
        "max_additivity_error": max(errors),
        "under_target": max(seconds) < TARGET_S,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.explain",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--package", action="append", help="model package folder (repeatable)")
    p.add_argument("--texts", type=int, default=5, help="complaints to explain per configuration")
    p.add_argument(
        "--max-evals", type=int, default=300, help="as ALLOCATOR_EXPLAINER_MAX_EVALS (default 300)"
    )
    p.add_argument(
        "--sub-batch", type=int, nargs="+", default=[1, 8], help="texts per onnxruntime call"
    )
    p.add_argument(
        "--masking", nargs="+", default=["remove", "mask_token"], choices=["remove", "mask_token"]
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="onnxruntime threads (0: as `explain serve`, CPUs / 2 slots)",
    )
    args = p.parse_args(argv)
    packages = [Path(d) for d in args.package] if args.package else [minilm_package()]
    threads = args.threads or max(
        1, cpu_limit() // 2
    )  # the serve default: concurrency 2 shares the CPUs
    t0 = time.perf_counter()
    warm_up()
    print(
        "shap import + kernel compilation (once per process, not counted): "
        f"{time.perf_counter() - t0:.1f} s",
        file=sys.stderr,
    )
    results = []
    for package_dir in packages:
        texts = typical_texts(package_dir, args.texts)
        for masking, sub_batch in [(m, b) for m in args.masking for b in args.sub_batch]:
            r = measure(package_dir, texts, args.max_evals, threads, sub_batch, masking)
            results.append(r)
            print(
                f"{r['package']} ({r['quantization']}, max_length {r['max_length']}) {masking}, "
                "sub-batch "
                f"{sub_batch}, {threads} thread(s): "
                f"p50 {r['p50_s']} s, max {r['max_s']} s, {r['evals_mean']:.0f} evals, "
                f"{r['ms_per_eval']} ms/eval, "
                f"{r['tokens_explained_mean']:.0f} tokens, additivity error <= "
                f"{r['max_additivity_error']:.1e}",
                file=sys.stderr,
            )
    print(json.dumps({"target_s": TARGET_S, "cpus": cpu_limit(), "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
