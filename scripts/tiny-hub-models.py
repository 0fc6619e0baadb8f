#!/usr/bin/env python3
"""Write the tiny random encoders that tests/paper.rs serves through its 127.0.0.1 Hub server.

    pip install numpy safetensors tokenizers
    python3 scripts/tiny-hub-models.py ../shared/data/tram/single_label.json tests/fixtures/hub

Each model is a Hugging Face folder in the transformers layout (`config.json`, `tokenizer.json`,
`model.safetensors` with `bert.` / `roberta.` tensor names): a BERT with a WordPiece tokenizer and
a RoBERTa (SecureBERT's architecture) with a byte-level BPE tokenizer, both trained on the TRAM
texts with a vocabulary of 500 and random weights (numpy, seed 0; hidden 32, 2 layers, 2 heads).
They stand in for ALBERT-base and SecureBERT in the CI-sized paper comparison: the point is the
Hub path and the fine-tuning loop, not the scores.
"""

import json
import os
import sys

import numpy as np
from safetensors.numpy import save_file
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

HIDDEN, LAYERS, HEADS, INTER, POSITIONS, VOCAB = 32, 2, 2, 64, 64, 500


def texts(path):
    with open(path) as f:
        return [r["text"] for r in json.load(f)]


def bert_tokenizer(corpus):
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=VOCAB, special_tokens=special))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tok.decoder = decoders.WordPiece()
    return tok


def roberta_tokenizer(corpus):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=VOCAB, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")))
    tok.decoder = decoders.ByteLevel()
    return tok


def weights(prefix, vocab, positions, type_vocab, rng):
    def w(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    t = {
        f"{prefix}.embeddings.word_embeddings.weight": w(vocab, HIDDEN),
        f"{prefix}.embeddings.position_embeddings.weight": w(positions, HIDDEN),
        f"{prefix}.embeddings.token_type_embeddings.weight": w(type_vocab, HIDDEN),
        f"{prefix}.embeddings.LayerNorm.weight": np.ones(HIDDEN, np.float32),
        f"{prefix}.embeddings.LayerNorm.bias": np.zeros(HIDDEN, np.float32),
    }
    for i in range(LAYERS):
        p = f"{prefix}.encoder.layer.{i}"
        for name in ["query", "key", "value"]:
            t[f"{p}.attention.self.{name}.weight"] = w(HIDDEN, HIDDEN)
            t[f"{p}.attention.self.{name}.bias"] = w(HIDDEN)
        t[f"{p}.attention.output.dense.weight"] = w(HIDDEN, HIDDEN)
        t[f"{p}.attention.output.dense.bias"] = w(HIDDEN)
        t[f"{p}.attention.output.LayerNorm.weight"] = np.ones(HIDDEN, np.float32)
        t[f"{p}.attention.output.LayerNorm.bias"] = np.zeros(HIDDEN, np.float32)
        t[f"{p}.intermediate.dense.weight"] = w(INTER, HIDDEN)
        t[f"{p}.intermediate.dense.bias"] = w(INTER)
        t[f"{p}.output.dense.weight"] = w(HIDDEN, INTER)
        t[f"{p}.output.dense.bias"] = w(HIDDEN)
        t[f"{p}.output.LayerNorm.weight"] = np.ones(HIDDEN, np.float32)
        t[f"{p}.output.LayerNorm.bias"] = np.zeros(HIDDEN, np.float32)
    return t


def write(out, name, tok, config, tensors):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    tok.save(os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    save_file(tensors, os.path.join(d, "model.safetensors"))


def main():
    data, out = sys.argv[1], sys.argv[2]
    corpus = texts(data)
    common = {
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "intermediate_size": INTER,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "layer_norm_eps": 1e-12,
        "vocab_size": VOCAB,
    }
    bert = bert_tokenizer(corpus)
    write(
        out,
        "tiny-bert",
        bert,
        {**common, "model_type": "bert", "architectures": ["BertModel"], "max_position_embeddings": POSITIONS,
         "type_vocab_size": 2, "pad_token_id": bert.token_to_id("[PAD]")},
        weights("bert", VOCAB, POSITIONS, 2, np.random.default_rng(0)),
    )
    roberta = roberta_tokenizer(corpus)
    pad = roberta.token_to_id("<pad>")
    # RoBERTa's positions start after the padding index: max_position_embeddings = positions + pad + 1.
    write(
        out,
        "tiny-roberta",
        roberta,
        {**common, "model_type": "roberta", "architectures": ["RobertaModel"],
         "max_position_embeddings": POSITIONS + pad + 1, "type_vocab_size": 1, "pad_token_id": pad,
         "bos_token_id": roberta.token_to_id("<s>"), "eos_token_id": roberta.token_to_id("</s>"),
         "layer_norm_eps": 1e-5},
        weights("roberta", VOCAB, POSITIONS + pad + 1, 1, np.random.default_rng(1)),
    )


if __name__ == "__main__":
    main()
