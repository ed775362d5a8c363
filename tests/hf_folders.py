"""Hugging Face model folders built in the test: a tiny random BERT (``save_pretrained``) with
a WordPiece tokenizer made by the ``tokenizers`` library, and the Hub cache layout
(``models--ORG--NAME/snapshots/<commit>``, ``refs/main``) around it. Nothing is downloaded.
"""

from __future__ import annotations

import shutil
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"
WORDS = ("the", "a", "cat", "dog", "sat", "on", "mat", "is", "good", "bad", "very", "movie",
         "film", "great", "awful", "plot", "acting", "love", "hate", "it", "was", "not", "and",
         "but", "this", "that")
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def vocabulary() -> list[str]:
    """Special tokens, words, their ``##`` suffixes and filler tokens: 200 in all."""
    tokens = SPECIAL + list(WORDS) + [f"##{s}" for s in ("s", "ed", "ing", "ly")]
    return tokens + [f"tok{i}" for i in range(200 - len(tokens))]


def tiny_tokenizer():
    """A BERT-style WordPiece tokenizer (lower-cased, [CLS] a [SEP] b [SEP])."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    from transformers import BertTokenizerFast

    vocab = {token: i for i, token in enumerate(vocabulary())}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return BertTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                             cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def write_bert_folder(folder: Path, seed: int = 0, classes: int | None = None) -> Path:
    """``save_pretrained`` of a 2-layer, 32-wide random BERT (a sequence classifier with
    ``classes`` labels when given) and its tokenizer: config.json, model.safetensors,
    tokenizer.json, tokenizer_config.json."""
    import torch

    from transformers import BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocabulary()), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    if classes is None:
        model = BertModel(config)
    else:
        config.num_labels = classes
        model = BertForSequenceClassification(config)
    model.eval().save_pretrained(folder, safe_serialization=True)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def write_hub_cache(cache: Path, repo_id: str, folder: Path, commit: str = COMMIT) -> Path:
    """Lay ``folder``'s files out as the Hub cache does: ``models--ORG--NAME`` with the files
    in ``snapshots/<commit>`` and ``refs/main`` naming the commit. Returns the repo folder."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for file in folder.iterdir():
        shutil.copy(file, snapshot / file.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return repo
