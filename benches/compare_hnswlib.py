#!/usr/bin/env python3
"""Runs hnswlib on exactly the vectors `agentnet-bench index --export DIR` wrote, and prints
hnswlib's single-thread QPS at the recall agentnet reached, next to agentnet's own figure.

    cargo run --release -p agentnet-benches --bin agentnet-bench -- \
        index --n 100000 --dim 384 --queries 1000 --export /tmp/vecs --json > /tmp/agentnet.json
    pip install hnswlib numpy
    python3 benches/compare_hnswlib.py /tmp/vecs /tmp/agentnet.json

hnswlib gets the same M (16) and efConstruction (128); ef is raised from 10 until its
recall@10 matches or exceeds agentnet's, and the QPS at that ef is compared.
"""
import json
import sys
import time

import hnswlib
import numpy as np


def read_fvecs(path):
    raw = np.fromfile(path, dtype=np.int32)
    dim = raw[0]
    return raw.reshape(-1, dim + 1)[:, 1:].copy().view(np.float32)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    vec_dir, report_path = sys.argv[1], sys.argv[2]
    ours = json.load(open(report_path))
    base = read_fvecs(f"{vec_dir}/base.fvecs")
    queries = read_fvecs(f"{vec_dir}/query.fvecs")
    n, dim = base.shape
    # Exact ground truth by inner product (the vectors are unit length).
    truth = np.argsort(-(queries @ base.T), axis=1)[:, :10]

    index = hnswlib.Index(space="ip", dim=dim)
    index.init_index(max_elements=n, M=16, ef_construction=128)
    started = time.perf_counter()
    index.add_items(base, np.arange(n), num_threads=2)
    build_s = time.perf_counter() - started
    index.set_num_threads(1)

    best = None
    for ef in [10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]:
        index.set_ef(ef)
        started = time.perf_counter()
        labels = [index.knn_query(q, k=10)[0][0] for q in queries]
        elapsed = time.perf_counter() - started
        recall = np.mean([len(set(l) & set(t)) / 10 for l, t in zip(labels, truth)])
        best = {"ef": ef, "recall_at_10": recall, "qps": len(queries) / elapsed}
        if recall >= ours["recall_at_10"]:
            break
    print(json.dumps({
        "agentnet_recall_at_10": ours["recall_at_10"],
        "agentnet_qps": ours["qps"],
        "hnswlib": best,
        "hnswlib_build_s": build_s,
        "qps_ratio_agentnet_over_hnswlib": ours["qps"] / best["qps"],
        "note": "hnswlib is timed from Python, one query per call, which adds per-call overhead",
    }, indent=2))


if __name__ == "__main__":
    main()
