"""PyTorch peer of `cargo bench --bench encoder -- RUNS albert`: transformers' AlbertModel on the
CPU with 2 threads, the same model folder, the same tokenizer.json (through the tokenizers
library, padding to the longest text of each batch, truncation at 128), the first N TRAM
sentences in file order, batch 32, mean pooling and L2 normalization. Prints one JSON line.
Usage: python3 peer_torch_albert.py DATA MODEL_DIR RUNS N"""
import json, statistics, sys, time

import torch
from tokenizers import Tokenizer
from transformers import AlbertModel

torch.set_num_threads(2)
data, model_dir, runs, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
texts = [r["text"] for r in json.load(open(f"{data}/tram/single_label.json"))][:n]
model = AlbertModel.from_pretrained(model_dir, add_pooling_layer=False).eval()
tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
pad = model.config.pad_token_id
tok.enable_padding(pad_id=pad, pad_token=tok.id_to_token(pad))
tok.enable_truncation(max_length=128)


def embed(batch):
    enc = tok.encode_batch(batch)
    ids = torch.tensor([e.ids for e in enc])
    mask = torch.tensor([e.attention_mask for e in enc])
    out = model(input_ids=ids, attention_mask=mask).last_hidden_state
    m = mask.unsqueeze(-1).float()
    v = (out * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(v, dim=1)


rates = []
with torch.inference_mode():
    embed(texts[:32])  # one warm-up batch (ours has none)
    for _ in range(runs):
        t = time.perf_counter()
        for i in range(0, len(texts), 32):
            embed(texts[i : i + 32])
        rates.append(len(texts) / (time.perf_counter() - t))
print(json.dumps({"impl": f"pytorch-{torch.__version__}", "what": "albert_embed", "sentences": len(texts),
                  "batch": 32, "max_length": 128, "runs": runs, "sentences_per_s": statistics.median(rates),
                  "all": rates}))
