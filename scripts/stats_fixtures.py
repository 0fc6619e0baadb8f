#!/usr/bin/env python3
"""Expected values pinned in src/stats.rs (test `macro_f1_over_matches_scikit_learn`).

Run: python3 scripts/stats_fixtures.py   (scikit-learn >= 1.3)
The vectors are written out literally so the Rust test holds the same data.
"""
import sklearn
from sklearn.metrics import f1_score

# 5 classes 0..4; class 4 never occurs in gold, class 3 occurs only in predictions.
gold = [0, 0, 0, 1, 1, 2, 2, 2, 2, 0, 1, 2]
pred = [0, 1, 0, 1, 3, 2, 2, 0, 2, 0, 1, 4]

cases = {
    "L = classes in gold [0,1,2]": [0, 1, 2],
    "L = [0,1,2,3] (3 only predicted)": [0, 1, 2, 3],
    "L = targets [1,2]": [1, 2],
    "L = [1,4] (4 only predicted)": [1, 4],
}
print("scikit-learn", sklearn.__version__)
for name, labels in cases.items():
    v = f1_score(gold, pred, labels=labels, average="macro", zero_division=0)
    print(f"{name}: {v!r}")
print("weighted L=[0,1,2]:", repr(f1_score(gold, pred, labels=[0, 1, 2], average="weighted", zero_division=0)))
print("gold[:4] vs itself, L=[0,1,2]:", repr(f1_score(gold[:4], gold[:4], labels=[0, 1, 2], average="macro", zero_division=0)))
