"""The named peer: scikit-learn TF-IDF + LinearSVC (balanced), trained and scored on exactly the
split a synthcti run wrote (run_dir/split/*.jsonl). Prints one JSON line per set-up."""
import json
import sys
import time

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import f1_score
from sklearn.pipeline import FeatureUnion
from sklearn.svm import LinearSVC


def read(path):
    rows = [json.loads(l) for l in open(path, encoding="utf-8")]
    return [r["text"] for r in rows], [r["label"] for r in rows]


run_dir = sys.argv[1]
# The peer has no early stopping: it trains on train + validation, as synthcti's split holds out
# validation from the same 80%.
xt, yt = read(f"{run_dir}/split/train.jsonl")
xv, yv = read(f"{run_dir}/split/validation.jsonl")
xs, ys = read(f"{run_dir}/split/test.jsonl")
setups = {
    "tfidf-word-1-2+linearsvc": TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
    "tfidf-word-1-2+char-2-5+linearsvc": FeatureUnion([
        ("w", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)),
        ("c", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True)),
    ]),
}
for name, vec in setups.items():
    t0 = time.perf_counter()
    X = vec.fit_transform(xt + xv)
    clf = LinearSVC(class_weight="balanced").fit(X, yt + yv)
    secs = time.perf_counter() - t0
    pred = clf.predict(vec.transform(xs))
    print(json.dumps({
        "peer": name,
        "macro_f1": f1_score(ys, pred, average="macro"),
        "micro_f1": f1_score(ys, pred, average="micro"),
        "train_seconds": secs,
    }))
