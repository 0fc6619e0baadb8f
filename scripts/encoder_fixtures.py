#!/usr/bin/env python3
"""Reference outputs of transformers' encoders for tests/encoder_parity.rs, and the random
albert-base-sized model of benches/albert.sh.

    python3 scripts/encoder_fixtures.py fixtures [DATA_DIR]
        Writes tests/fixtures/encoders/<name>/ for four tiny random models, each a complete
        Hugging Face model folder (config.json, model.safetensors, tokenizer.json) plus
        expected.json: the token ids of a few sentences and transformers' outputs for them.
          albert-tiny    AlbertForPreTraining (keys `albert.*`, pooler, MLM and SOP heads),
                         3 passes through one shared layer, embedding 16 → hidden 32, gelu_new,
                         a Unigram tokenizer (ALBERT's kind)
          albert-groups  AlbertModel (no prefix), 4 passes over 2 groups of 2 layers, gelu
          roberta-tiny   RobertaForMaskedLM (keys `roberta.*`, SecureBERT's layout), positions
                         from pad_token_id + 1, type_vocab_size 1, a byte-level BPE tokenizer
          bert-tiny      BertModel (no prefix), a WordPiece tokenizer
        and two in the layouts of older Hub repositories, with no tokenizer.json: their
        expected token ids come from transformers' own tokenizer (AutoTokenizer) loaded from the
        folder, on CTI_TEXTS (IPs, hashes, file names, unicode, literal special tokens):
          roberta-securebert  ehsanaghaei/SecureBERT's layout: RobertaForMaskedLM saved with
                         torch.save as pytorch_model.bin (with the old `position_ids` buffer),
                         vocab.json + merges.txt (byte-level BPE), tokenizer_config.json,
                         special_tokens_map.json
          bert-vocab     BertModel in model.safetensors, WordPiece vocab.txt only, a cased
                         tokenizer (tokenizer_config.json: do_lower_case false)
        The tokenizers are trained on DATA_DIR/tram/single_label.json (default
        $SYNTHCTI_DATA_DIR or ../shared/data), vocabularies of a few hundred tokens so each
        folder stays small. Weights are drawn from a fixed seed with scales large enough that
        attention is far from uniform and every bias and LayerNorm parameter matters.

    python3 scripts/encoder_fixtures.py vocab-fixtures [DATA_DIR]
        Only roberta-securebert and bert-vocab (the others unchanged).

    python3 scripts/encoder_fixtures.py albert-base OUT_DIR [TOKENIZER_JSON]
        A random ALBERT with albert-base-v2's config.json (hidden 768, 12 passes through one
        layer, 12 heads, embedding 128, intermediate 3072, gelu_new) for speed measurements: the
        real weights are not reachable here and do not change the arithmetic. vocab_size is that
        of TOKENIZER_JSON (default models/all-MiniLM-L6-v2/tokenizer.json, WordPiece, 30,522;
        albert-base-v2's own SentencePiece vocabulary has 30,000 and similar token counts).

Needs torch, transformers and safetensors (pip install torch transformers safetensors).
"""
import json
import os
import shutil
import sys

import torch
import transformers
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "encoders")
SEED = 13
TEXTS = [
    "APT29 used PowerShell to download a second-stage payload.",
    "The malware encrypts files with AES.",
    "Credentials were dumped from LSASS memory, then exfiltrated over HTTPS to a C2 server.",
]


CTI_TEXTS = [
    "The dropper beaconed to 185.220.101.47:443 and hxxp://update-check[.]example.com/gate.php?id=42.",
    "SHA-256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 matched svchost.exe in C:\\Windows\\Temp\\a.dll.",
    "APT28 (Fancy Bear) exploited CVE-2017-11882; the mutex was Global\\{8F6F0AC4-B9A1-45fd-A8CF-72F04E6BDE8F}.",
    "Die Malware verschlüsselt Dateien — naïve café, 日本語, Ünïcödé, emoji 🔒 and ½.",
    "  Leading spaces,\ttabs and\nnewlines   around T1059.001 PowerShell -EncodedCommand JABzAD0A  ",
    "A literal <mask> and [MASK] and </s> in a report, MD5 d41d8cd98f00b204e9800998ecf8427e.",
]


def corpus(data_dir):
    rows = json.load(open(os.path.join(data_dir, "tram", "single_label.json")))
    return [r["text"] for r in rows]


def unigram_tokenizer(texts, vocab):
    """ALBERT's tokenizer.json layout: normalizer, Metaspace, Unigram, [CLS] $A [SEP]."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([
        normalizers.Replace("``", '"'), normalizers.Replace("''", '"'), normalizers.NFKD(),
        normalizers.StripAccents(), normalizers.Lowercase(), normalizers.Replace(Regex(" {2,}"), " "),
    ])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    specials = ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(texts, trainers.UnigramTrainer(vocab_size=vocab, special_tokens=specials,
                                                           unk_token="<unk>", show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    return tok


def bpe_tokenizer(texts, vocab):
    """RoBERTa's layout: byte-level BPE, <s> $A </s>, <pad> = 1."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return tok


def wordpiece_tokenizer(texts, vocab):
    """BERT's layout: BertNormalizer, BertPreTokenizer, WordPiece, [CLS] $A [SEP]."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab, special_tokens=specials,
                                                             show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    return tok


def randomize(model, gen):
    """Every parameter drawn again: weights N(0, 0.2²), biases N(0, 0.1²), LayerNorm gains
    1 + N(0, 0.1²), embeddings N(0, 0.5²)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn(p.shape, generator=gen))
            elif "embeddings" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))


def padded(seqs, pad):
    l = max(len(s) for s in seqs)
    ids = [s + [pad] * (l - len(s)) for s in seqs]
    mask = [[1] * len(s) + [0] * (l - len(s)) for s in seqs]
    return ids, mask


def rounded(t):
    """Floats as JSON numbers that read back as the same f32."""
    return json.loads(json.dumps(t.tolist()))


def write_fixture(name, cls, config, tok, core, gen):
    out = os.path.join(FIXTURES, name)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    torch.manual_seed(SEED)
    model = cls(config).eval()
    randomize(model, gen)
    model.save_pretrained(out, safe_serialization=True)
    tok.save(os.path.join(out, "tokenizer.json"))
    encoder = core(model)
    pad = config.pad_token_id
    text_ids = [e.ids for e in tok.encode_batch(TEXTS)]
    # A second batch of ids drawn at random (never the pad id, which RoBERTa's positions read),
    # the second row much shorter than the first.
    rand = torch.randint(5, config.vocab_size, (2, 20), generator=gen).tolist()
    batches = []
    for seqs in (text_ids, [rand[0], rand[1][:9]]):
        ids, mask = padded(seqs, pad)
        with torch.no_grad():
            o = encoder(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
        pooler = getattr(o, "pooler_output", None)
        batches.append({
            "ids": ids, "mask": mask,
            "last_hidden_state": rounded(o.last_hidden_state),
            "pooler_output": rounded(pooler) if pooler is not None else None,
        })
    # Sentence embeddings as synthcti computes them: mean over real tokens, L2-normalized.
    h = torch.tensor(batches[0]["last_hidden_state"])
    m = torch.tensor(batches[0]["mask"]).unsqueeze(-1).float()
    v = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=1)
    expected = {
        "generated_by": "scripts/encoder_fixtures.py",
        "torch": torch.__version__, "transformers": transformers.__version__,
        "architecture": cls.__name__, "seed": SEED,
        "texts": TEXTS, "text_ids": text_ids,
        "batches": batches, "sentence_embeddings": rounded(v),
    }
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f)
    sizes = {f: os.path.getsize(os.path.join(out, f)) for f in sorted(os.listdir(out))}
    print(name, sizes)


def fixtures(data_dir):
    texts = corpus(data_dir)
    gen = torch.Generator().manual_seed(SEED)
    small = dict(hidden_size=32, num_attention_heads=4, intermediate_size=37, hidden_dropout_prob=0.0,
                 attention_probs_dropout_prob=0.0)
    uni = unigram_tokenizer(texts, 400)
    albert = dict(vocab_size=uni.get_vocab_size(), embedding_size=16, max_position_embeddings=64,
                  pad_token_id=0, bos_token_id=2, eos_token_id=3, classifier_dropout_prob=0.0, **small)
    from transformers import (AlbertConfig, AlbertForPreTraining, AlbertModel, BertConfig, BertModel,
                              RobertaConfig, RobertaForMaskedLM)
    write_fixture("albert-tiny", AlbertForPreTraining,
                  AlbertConfig(num_hidden_layers=3, num_hidden_groups=1, inner_group_num=1,
                               hidden_act="gelu_new", **albert),
                  uni, lambda m: m.albert, gen)
    write_fixture("albert-groups", AlbertModel,
                  AlbertConfig(num_hidden_layers=4, num_hidden_groups=2, inner_group_num=2, hidden_act="gelu",
                               **albert),
                  uni, lambda m: m, gen)
    bpe = bpe_tokenizer(texts, 400)
    write_fixture("roberta-tiny", RobertaForMaskedLM,
                  RobertaConfig(vocab_size=bpe.get_vocab_size(), num_hidden_layers=2, max_position_embeddings=66,
                                type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                                layer_norm_eps=1e-5, **small),
                  bpe, lambda m: m.roberta, gen)
    wp = wordpiece_tokenizer(texts, 400)
    write_fixture("bert-tiny", BertModel,
                  BertConfig(vocab_size=wp.get_vocab_size(), num_hidden_layers=2, max_position_embeddings=64,
                             pad_token_id=0, **small),
                  wp, lambda m: m, gen)


def run_batches(encoder, config, text_ids, gen):
    """transformers' outputs on the texts' ids and on a random batch (see write_fixture)."""
    pad = config.pad_token_id
    rand = torch.randint(5, config.vocab_size, (2, 20), generator=gen).tolist()
    batches = []
    for seqs in (text_ids, [rand[0], rand[1][:9]]):
        ids, mask = padded(seqs, pad)
        with torch.no_grad():
            o = encoder(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
        pooler = getattr(o, "pooler_output", None)
        batches.append({
            "ids": ids, "mask": mask,
            "last_hidden_state": rounded(o.last_hidden_state),
            "pooler_output": rounded(pooler) if pooler is not None else None,
        })
    h = torch.tensor(batches[0]["last_hidden_state"])
    m = torch.tensor(batches[0]["mask"]).unsqueeze(-1).float()
    v = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=1)
    return batches, rounded(v)


def write_vocab_fixture(name, cls, config, write_tokenizer, core, weights, gen):
    """A model folder without tokenizer.json: `write_tokenizer(out)` writes the vocabulary
    files, transformers' AutoTokenizer reads them back for the expected ids."""
    out = os.path.join(FIXTURES, name)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    torch.manual_seed(SEED)
    model = cls(config).eval()
    randomize(model, gen)
    config.save_pretrained(out)
    if weights == "pytorch":
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        # Checkpoints of transformers < 4.31 (SecureBERT's among them) carry this buffer.
        state["roberta.embeddings.position_ids"] = torch.arange(config.max_position_embeddings).unsqueeze(0)
        torch.save(state, os.path.join(out, "pytorch_model.bin"))
    else:
        model.save_pretrained(out, safe_serialization=True)
    write_tokenizer(out)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert tok.is_fast, type(tok)
    assert not os.path.exists(os.path.join(out, "tokenizer.json"))
    text_ids = tok(CTI_TEXTS)["input_ids"]
    batches, embeddings = run_batches(core(model), config, text_ids, gen)
    expected = {
        "generated_by": "scripts/encoder_fixtures.py",
        "torch": torch.__version__, "transformers": transformers.__version__,
        "architecture": cls.__name__, "seed": SEED, "tokenizer": type(tok).__name__,
        "texts": CTI_TEXTS, "text_ids": text_ids,
        "tokens": [tok.convert_ids_to_tokens(i) for i in text_ids],
        "batches": batches, "sentence_embeddings": embeddings,
    }
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f)
    sizes = {f: os.path.getsize(os.path.join(out, f)) for f in sorted(os.listdir(out))}
    print(name, sizes)


def securebert_tokenizer(texts):
    """vocab.json + merges.txt of a byte-level BPE, and SecureBERT's tokenizer_config.json and
    special_tokens_map.json (RobertaTokenizer, `<mask>` stripping the space before it)."""
    bpe = bpe_tokenizer(texts, 500)

    def write(out):
        bpe.model.save(out)
        specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
                    "pad_token": "<pad>", "cls_token": "<s>",
                    "mask_token": {"content": "<mask>", "single_word": False, "lstrip": True,
                                   "rstrip": False, "normalized": False}}
        config = {"errors": "replace", "add_prefix_space": False, "trim_offsets": True,
                  "model_max_length": 512, "tokenizer_class": "RobertaTokenizer", **specials}
        json.dump(specials, open(os.path.join(out, "special_tokens_map.json"), "w"))
        json.dump(config, open(os.path.join(out, "tokenizer_config.json"), "w"))
    return bpe, write


def cased_vocab_txt(texts):
    """A cased WordPiece vocab.txt (tokenizer_config.json: BertTokenizer, do_lower_case false)."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=500, special_tokens=specials,
                                                             show_progress=False))

    def write(out):
        vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
        with open(os.path.join(out, "vocab.txt"), "w", encoding="utf-8") as f:
            f.write("".join(t + "\n" for t, _ in vocab))
        json.dump({"do_lower_case": False, "tokenizer_class": "BertTokenizer", "model_max_length": 512},
                  open(os.path.join(out, "tokenizer_config.json"), "w"))
    return tok, write


def vocab_fixtures(data_dir):
    texts = corpus(data_dir)
    gen = torch.Generator().manual_seed(SEED + 1)
    small = dict(hidden_size=32, num_attention_heads=4, intermediate_size=37, hidden_dropout_prob=0.0,
                 attention_probs_dropout_prob=0.0)
    from transformers import BertConfig, BertModel, RobertaConfig, RobertaForMaskedLM
    bpe, write_bpe = securebert_tokenizer(texts)
    write_vocab_fixture("roberta-securebert", RobertaForMaskedLM,
                        RobertaConfig(vocab_size=bpe.get_vocab_size(), num_hidden_layers=2,
                                      max_position_embeddings=258, type_vocab_size=1, pad_token_id=1,
                                      bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5,
                                      architectures=["RobertaForMaskedLM"], **small),
                        write_bpe, lambda m: m.roberta, "pytorch", gen)
    wp, write_wp = cased_vocab_txt(texts)
    write_vocab_fixture("bert-vocab", BertModel,
                        BertConfig(vocab_size=wp.get_vocab_size(), num_hidden_layers=2, max_position_embeddings=256,
                                   pad_token_id=0, **small),
                        write_wp, lambda m: m, "safetensors", gen)


def albert_base(out, tokenizer_json):
    from transformers import AlbertConfig, AlbertModel
    tok = Tokenizer.from_file(tokenizer_json)
    # albert-base-v2's config.json, but for vocab_size (see the docstring).
    config = AlbertConfig(vocab_size=tok.get_vocab_size(), embedding_size=128, hidden_size=768,
                          num_hidden_layers=12, num_hidden_groups=1, inner_group_num=1, num_attention_heads=12,
                          intermediate_size=3072, hidden_act="gelu_new", hidden_dropout_prob=0.0,
                          attention_probs_dropout_prob=0.0, max_position_embeddings=512, type_vocab_size=2,
                          layer_norm_eps=1e-12, pad_token_id=tok.token_to_id("[PAD]") or 0)
    torch.manual_seed(SEED)
    model = AlbertModel(config).eval()
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    shutil.copy(tokenizer_json, os.path.join(out, "tokenizer.json"))
    print(out, sum(p.numel() for p in model.parameters()), "parameters")


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "fixtures":
        data = sys.argv[2] if len(sys.argv) > 2 else os.environ.get(
            "SYNTHCTI_DATA_DIR", os.path.join(ROOT, "..", "shared", "data"))
        fixtures(data)
        vocab_fixtures(data)
    elif len(sys.argv) >= 2 and sys.argv[1] == "vocab-fixtures":
        data = sys.argv[2] if len(sys.argv) > 2 else os.environ.get(
            "SYNTHCTI_DATA_DIR", os.path.join(ROOT, "..", "shared", "data"))
        vocab_fixtures(data)
    elif len(sys.argv) >= 3 and sys.argv[1] == "albert-base":
        albert_base(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else
                    os.path.join(ROOT, "models", "all-MiniLM-L6-v2", "tokenizer.json"))
    else:
        sys.exit(__doc__)
