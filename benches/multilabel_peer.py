"""The named peer of the multi-label task (experiments/tram-multi.toml): scikit-learn TF-IDF
(word 1-2 grams, sublinear) + one-vs-rest logistic regression, trained on exactly the train split
a synthcti run wrote (RUN_DIR/split/train.jsonl), its global threshold on predict_proba chosen
for micro-F1 on RUN_DIR/split/validation.jsonl, scored on RUN_DIR/split/test.jsonl with the
metrics synthcti writes (src/multilabel.rs): micro, macro (techniques with a test sentence),
samples (zero_division=1) and per-document F1 (a report's techniques = the union over its test
sentences). Then prints synthcti's cells of the same run beside it.

Usage: python3 benches/multilabel_peer.py RUN_DIR [RUN_DIR…]   → one JSON line per model, then a
table. Further run folders (e.g. the same manifest with another `data.multi_label_head`) must hold
byte-identical split files; their cells are listed too, named with the run's head. The
`validation_micro_f1` column is the figure to choose between heads by (never the test ones).
"""
import glob
import json
import os
import sys
import time
from collections import defaultdict

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import MultiLabelBinarizer


def read(path):
    rows = [json.loads(l) for l in open(path, encoding="utf-8")]
    # A multi-label row carries `labels`; a negative has none (label "none").
    return (
        [r["text"] for r in rows],
        [r.get("labels", []) for r in rows],
        [r.get("group") or f"row {i}" for i, r in enumerate(rows)],
    )


def choose_threshold(P, Y):
    """The observed score maximising micro-F1 (ties: the higher), as synthcti's sweep."""
    s = P.ravel()
    y = Y.ravel().astype(bool)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    k = np.arange(1, len(s) + 1)
    f1 = 2 * tp / (k + y.sum())
    # only the last index of each run of equal scores is a valid cut
    last = np.r_[s[1:] != s[:-1], True]
    f1 = np.where(last, f1, -1)
    i = int(np.argmax(f1))
    return float(s[i])


def doc_f1(Y, P, groups):
    gold, pred = defaultdict(set), defaultdict(set)
    for g, yr, pr in zip(groups, Y, P):
        gold[g] |= set(np.flatnonzero(yr))
        pred[g] |= set(np.flatnonzero(pr))
    tp = sum(len(gold[d] & pred[d]) for d in gold)
    npred = sum(len(pred[d]) for d in gold)
    ngold = sum(len(gold[d]) for d in gold)
    p = tp / npred if npred else 0.0
    r = tp / ngold if ngold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    means = [
        1.0 if not gold[d] and not pred[d] else 2 * len(gold[d] & pred[d]) / (len(gold[d]) + len(pred[d]))
        for d in gold
    ]
    return f, sum(means) / len(means)


run_dir = sys.argv[1]
for other in sys.argv[2:]:
    for name in ("train.jsonl", "validation.jsonl", "test.jsonl"):
        a = open(f"{run_dir}/split/{name}", "rb").read()
        b = open(f"{other}/split/{name}", "rb").read()
        assert a == b, f"{other}/split/{name} differs from {run_dir}'s: not the same split"
xt, yt, _ = read(f"{run_dir}/split/train.jsonl")
xv, yv, _ = read(f"{run_dir}/split/validation.jsonl")
xs, ys, gs = read(f"{run_dir}/split/test.jsonl")
mlb = MultiLabelBinarizer()
mlb.fit(yt + yv + ys)
Yt, Yv, Ys = mlb.transform(yt), mlb.transform(yv), mlb.transform(ys)

t0 = time.perf_counter()
vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
Xt = vec.fit_transform(xt)
clf = OneVsRestClassifier(LogisticRegression(solver="liblinear", C=10.0), n_jobs=1).fit(Xt, Yt)
secs = time.perf_counter() - t0
Pv = clf.predict_proba(vec.transform(xv))
t = choose_threshold(Pv, Yv)
Ps = (clf.predict_proba(vec.transform(xs)) >= t).astype(int)
support = Ys.sum(axis=0) > 0
labels = list(np.flatnonzero(support))
df, dmean = doc_f1(Ys, Ps, gs)
peer = {
    "model": "sklearn tfidf-word-1-2 + ovr-logreg",
    "threshold": t,
    "validation_micro_f1": f1_score(Yv, (Pv >= t).astype(int), average="micro", zero_division=0),
    "micro_f1": f1_score(Ys, Ps, average="micro", zero_division=0),
    "macro_f1": f1_score(Ys, Ps, average="macro", labels=labels, zero_division=0),
    "samples_f1": f1_score(Ys, Ps, average="samples", zero_division=1.0),
    "document_f1": df,
    "document_mean_f1": dmean,
    "train_seconds": secs,
    "test_rows": len(xs),
}
print(json.dumps(peer))

rows = [peer]
cells = [
    (d, p)
    for d in sys.argv[1:]
    for p in sorted(glob.glob(os.path.join(d, "cells", "*", "metrics.json")))
]
for d, p in cells:
    r = json.load(open(p))
    ml = r.get("multi_label")
    if not ml:
        continue
    head = "sigmoid" if "sigmoid" in ml["rule"] else "none-class"
    row = {
        "model": f"{r['cell']['name']} ({head})",
        "threshold": ml["validation"]["threshold"],
        "validation_micro_f1": ml["validation"]["f1"],
        "micro_f1": ml["micro_f1"],
        "macro_f1": ml["macro_f1"],
        "samples_f1": ml["samples_f1"],
        "document_f1": ml["document_f1"],
        "document_mean_f1": ml["document_mean_f1"],
        "train_seconds": r["train_seconds"],
        "test_rows": r["test_size"],
    }
    print(json.dumps(row))
    rows.append(row)

cols = ["validation_micro_f1", "micro_f1", "macro_f1", "samples_f1", "document_f1", "document_mean_f1", "threshold"]
print()
print("| model | " + " | ".join(cols) + " | micro / peer | doc / peer |")
print("|---|" + "---|" * (len(cols) + 2))
for r in rows:
    print(
        f"| {r['model']} | "
        + " | ".join(f"{r[c]:.4f}" for c in cols)
        + f" | {r['micro_f1'] / peer['micro_f1']:.3f} | {r['document_f1'] / peer['document_f1']:.3f} |"
    )
