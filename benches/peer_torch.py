"""PyTorch peer for benches/encoder.rs: the same measurements with transformers' BertModel on the
CPU with 2 threads. Prints one JSON line per measurement. Usage: python3 peer_torch.py DATA RUNS"""
import json, statistics, sys, time

import torch
from transformers import AutoModel, AutoTokenizer

torch.set_num_threads(2)
data, runs = sys.argv[1], int(sys.argv[2])
model_dir = "models/all-MiniLM-L6-v2"
rows = json.load(open(f"{data}/tram/single_label.json"))
texts = [r["text"] for r in rows]
tok = AutoTokenizer.from_pretrained(model_dir)
model = AutoModel.from_pretrained(model_dir).eval()


def embed(batch):
    enc = tok(batch, padding="longest", truncation=True, max_length=128, return_tensors="pt")
    out = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    v = (out * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(v, dim=1)


rates = []
with torch.inference_mode():
    first = embed(["Hello world"])[0][:6].tolist()
    for _ in range(runs):
        t = time.perf_counter()
        for i in range(0, len(texts), 32):
            embed(texts[i : i + 32])
        rates.append(len(texts) / (time.perf_counter() - t))
print(json.dumps({"impl": f"pytorch-{torch.__version__}", "what": "embed", "sentences": len(texts),
                  "batch": 32, "runs": runs, "sentences_per_s": statistics.median(rates), "all": rates,
                  "hello_world": first}))

labels = [r["label"] for r in rows]
classes = sorted(set(labels))
head = torch.nn.Linear(model.config.hidden_size, len(classes))
model.train()
params = list(model.parameters()) + list(head.parameters())
opt = torch.optim.AdamW(params, lr=5e-5, weight_decay=0.01)
secs = []
for s in range(2 + 5 * runs):
    lo = (s * 32) % (len(texts) - 32)
    t = time.perf_counter()
    enc = tok(texts[lo : lo + 32], padding="longest", truncation=True, max_length=128, return_tensors="pt")
    out = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    pooled = (out * m).sum(1) / m.sum(1).clamp(min=1e-9)
    y = torch.tensor([classes.index(l) for l in labels[lo : lo + 32]])
    loss = torch.nn.functional.cross_entropy(head(torch.nn.functional.dropout(pooled, 0.1)), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    if s >= 2:
        secs.append(time.perf_counter() - t)
print(json.dumps({"impl": f"pytorch-{torch.__version__}", "what": "finetune_step", "batch": 32,
                  "steps": len(secs), "seconds_per_step": statistics.median(secs), "all": secs}))
