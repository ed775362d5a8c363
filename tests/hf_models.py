"""Small random models built from ``transformers`` configs and exported to ONNX in the test.

Nothing is downloaded: every model is built from a config with random weights (seeded), so
tests and benchmarks can exercise the shapes real Hugging Face exports have (three integer
inputs with a dynamic batch and sequence, attention, LayerNorm, GELU) in a few seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

BERT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def bert_config(layers: int = 2, hidden: int = 128, heads: int = 4, vocab: int = 1000,
                max_positions: int = 128):
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, intermediate_size=4 * hidden,
                      max_position_embeddings=max_positions, attn_implementation="eager")


def bert_parameter_count(layers: int = 2, hidden: int = 128, vocab: int = 1000,
                         max_positions: int = 128) -> int:
    """Parameters of :func:`write_bert_embedder`'s model, by hand (no pooler)."""
    ffn = 4 * hidden
    embeddings = (vocab + max_positions + 2) * hidden + 2 * hidden
    layer = 4 * (hidden * hidden + hidden) + 2 * hidden * ffn + ffn + hidden + 4 * hidden
    return embeddings + layers * layer


def bert_macs(seq: int, layers: int = 2, hidden: int = 128, batch: int = 1) -> int:
    """Multiply-accumulates of one BERT encoder pass, by hand: four projections and the
    feed-forward (``12·s·h²`` a layer) plus the two attention products (``2·s²·h``)."""
    return batch * layers * (12 * seq * hidden * hidden + 2 * seq * seq * hidden)


def trained_like(module, seed: int = 0) -> None:
    """Give freshly initialised weights the spread trained ones have, in place.

    A fresh ``transformers`` model has zero biases and unit LayerNorm scales (identical
    tensors the exporter would fold into one) and weight rows of one scale, which makes any
    quantizer look perfect. Trained weights vary per output channel by an order of magnitude;
    that is what separates per-channel from per-tensor scales.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.named_parameters():
            noise = torch.randn(tensor.shape, generator=generator)
            if name.endswith("LayerNorm.weight"):
                tensor.copy_(1.0 + 0.1 * noise)
            elif name.endswith("bias"):
                tensor.copy_(0.02 * noise)
            elif tensor.ndim == 2 and "embeddings" not in name:
                rows = torch.exp(0.7 * torch.randn(tensor.shape[0], 1, generator=generator))
                tensor.mul_(rows)


def write_bert_embedder(path: Path, layers: int = 2, hidden: int = 128, heads: int = 4,
                        vocab: int = 1000, seed: int = 0) -> Path:
    """A random BERT encoder as a sentence embedder: ``last_hidden_state`` mean-pooled under
    the attention mask, exported the usual way (three int64 inputs, batch and sequence
    dynamic, one output ``embedding``)."""
    import torch

    from transformers import BertModel

    torch.manual_seed(seed)
    bert = BertModel(bert_config(layers, hidden, heads, vocab), add_pooling_layer=False).eval()
    trained_like(bert)

    class Embedder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden_states = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                                      token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
            return (hidden_states * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    example = tuple(torch.from_numpy(a) for a in bert_inputs(2, 16, vocab).values())
    axes = {name: {0: "batch", 1: "sequence"} for name in BERT_INPUTS}
    axes["embedding"] = {0: "batch"}
    with torch.no_grad():
        torch.onnx.export(Embedder().eval(), example, str(path), dynamo=False, opset_version=17,
                          input_names=list(BERT_INPUTS), output_names=["embedding"],
                          dynamic_axes=axes)
    return path


def bert_inputs(n: int, seq: int = 32, vocab: int = 1000, seed: int = 1) -> dict[str, np.ndarray]:
    """Token arrays for :func:`write_bert_embedder`: random ids, padded sentences of varied
    length, a sentence pair split in ``token_type_ids``."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(max(2, seq // 4), seq + 1, size=n)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(1, vocab, size=(n, seq)) * mask
    types = (np.arange(seq)[None, :] >= (lengths // 2)[:, None]).astype(np.int64) * mask
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def structured(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Per-input arrays as one structured array, a field per model input (the canonical
    dataset's ``X``)."""
    first = next(iter(arrays.values()))
    X = np.empty(len(first), dtype=[(n, a.dtype, a.shape[1:]) for n, a in arrays.items()])
    for name, array in arrays.items():
        X[name] = array
    return X


def write_canonical_tokens(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """An unlabelled canonical dataset (``X`` structured, ``y`` zeros) of token arrays, as a
    step's :class:`~tinymlaas.transformers.base.DatasetAccess` reads it."""
    X = structured(arrays)
    np.savez(path, X=X, y=np.zeros(len(X), np.int64))
    return path


def write_vit_classifier(path: Path, layers: int = 2, hidden: int = 64, heads: int = 2,
                         image: int = 32, patch: int = 8, classes: int = 10,
                         seed: int = 0) -> Path:
    """A random ViT image classifier (``ViTForImageClassification`` from a config), exported
    with one float input ``pixel_values`` (batch dynamic) and one output ``logits``."""
    import torch

    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    config = ViTConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                       intermediate_size=4 * hidden, image_size=image, patch_size=patch,
                       num_labels=classes, attn_implementation="eager")
    vit = ViTForImageClassification(config).eval()
    trained_like(vit)

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vit = vit

        def forward(self, pixel_values):
            return self.vit(pixel_values=pixel_values).logits

    example = torch.from_numpy(vit_images(2, image))
    with torch.no_grad():
        torch.onnx.export(Logits().eval(), (example,), str(path), dynamo=False,
                          opset_version=17, input_names=["pixel_values"],
                          output_names=["logits"],
                          dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}})
    return path


def vit_images(n: int, image: int = 32, seed: int = 1) -> np.ndarray:
    """Smooth random images (normalised, NCHW float32) for :func:`write_vit_classifier`."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=(n, 3, image // 4, image // 4)).astype(np.float32)
    return np.repeat(np.repeat(coarse, 4, axis=2), 4, axis=3)


CAUSAL_LM_INPUTS = ("input_ids", "attention_mask")


def write_causal_lm(path: Path, layers: int = 2, hidden: int = 64, heads: int = 2,
                    vocab: int = 256, positions: int = 64, seed: int = 0) -> Path:
    """A random GPT-2 causal LM (``GPT2LMHeadModel`` from a config, no cache), exported the
    usual way for scoring or generation without a cache: two int64 inputs ``input_ids`` and
    ``attention_mask`` (batch and sequence dynamic), one output ``logits`` of shape
    (batch, sequence, ``vocab``)."""
    import torch

    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=heads,
                        n_positions=positions, n_inner=4 * hidden, use_cache=False,
                        bos_token_id=vocab - 1, eos_token_id=vocab - 1,
                        attn_implementation="eager")
    lm = GPT2LMHeadModel(config).eval()
    trained_like(lm)

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lm = lm

        def forward(self, input_ids, attention_mask):
            return self.lm(input_ids=input_ids, attention_mask=attention_mask,
                           use_cache=False).logits

    arrays = causal_lm_inputs(2, 16, vocab)
    example = tuple(torch.from_numpy(arrays[name]) for name in CAUSAL_LM_INPUTS)
    axes = {name: {0: "batch", 1: "sequence"} for name in CAUSAL_LM_INPUTS}
    axes["logits"] = {0: "batch", 1: "sequence"}
    with torch.no_grad():
        torch.onnx.export(Logits().eval(), example, str(path), dynamo=False, opset_version=17,
                          input_names=list(CAUSAL_LM_INPUTS), output_names=["logits"],
                          dynamic_axes=axes)
    return path


def causal_lm_inputs(n: int, seq: int = 16, vocab: int = 256,
                     seed: int = 1) -> dict[str, np.ndarray]:
    """Random ids within ``vocab`` and an attention mask of ones (no padding), int64."""
    rng = np.random.default_rng(seed)
    return {"input_ids": rng.integers(0, vocab, size=(n, seq)).astype(np.int64),
            "attention_mask": np.ones((n, seq), np.int64)}
