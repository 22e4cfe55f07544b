"""A sentence-transformers BERT model (the packaged all-MiniLM-L6-v2) run in plain numpy, for fast starts.

``llmfti search`` embeds one query per process. Loading the model the usual way imports torch,
transformers and sentence-transformers (2-7 s before the first vector; ``import torch`` alone is
~1.8 s on an idle 2-core machine). This module reads the same files (``tokenizer.json`` through
``tokenizers``, ``model.safetensors`` through ``safetensors.numpy``) and runs the same forward pass
(BERT encoder, mean pooling over the attention mask, L2 normalisation) with numpy, in ~0.3 s from a
cold process. Its :class:`~llmfti.embedders.base.EmbedderInfo` is computed the way
:class:`~llmfti.embedders.sentence_transformer.SentenceTransformerEmbedder` computes it, so an index
accepts it only where it would accept the full model; tests check the vectors agree (cosine >= 0.9999).

It reads only the shape it knows: a folder whose ``modules.json`` is Transformer -> mean Pooling
[-> Normalize] over a ``bert`` model with a ``tokenizer.json``; :func:`supports` says whether a folder
has it. Anything else (and registry embedder versions) is left to the full loader.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmfti.embedders.base import EmbedderInfo
from llmfti.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

    from llmfti.config import EmbedderSettings

_MODULES = ["sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling"]
_NORMALIZE = "sentence_transformers.models.Normalize"


def model_folder(settings: EmbedderSettings) -> Path | None:
    """The local folder of ``embedder.model`` if this module can run it, else None."""
    from llmfti.embedders.registry_embedder import is_registry_ref
    from llmfti.embedders.sentence_transformer import resolve_model_path

    if is_registry_ref(settings.model):
        return None
    try:
        folder = Path(resolve_model_path(settings.model))
    except ConfigError:  # MissingDependencyError included: the full loader reports it
        return None
    return folder if supports(folder) else None


def supports(folder: Path) -> bool:
    """True for a sentence-transformers folder holding a BERT encoder with mean pooling, a tokenizer.json and
    a max_seq_length."""
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        pooling = json.loads((folder / modules[1]["path"] / "config.json").read_text(encoding="utf-8"))
        st_config = json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return False
    modes = {k for k, v in pooling.items() if k.startswith("pooling_mode") and v}
    return ([m.get("type") for m in modules] in (_MODULES, [*_MODULES, _NORMALIZE])
            and config.get("model_type") == "bert"
            and config.get("hidden_act") == "gelu"
            and config.get("position_embedding_type", "absolute") == "absolute"
            and modes == {"pooling_mode_mean_tokens"}
            and isinstance(st_config.get("max_seq_length"), int)
            and not st_config.get("do_lower_case")
            and (folder / "tokenizer.json").is_file()
            and (folder / "model.safetensors").is_file())


class NumpyBertEmbedder:
    """The :class:`~llmfti.embedders.base.Embedder` protocol over a BERT sentence-transformers folder, in numpy."""

    def __init__(self, settings: EmbedderSettings, folder: Path):
        import numpy as np
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        if not supports(folder):
            raise ConfigError(f"{folder} is not a BERT sentence-transformers model with mean pooling",
                              expected="modules Transformer -> Pooling(mean) [-> Normalize], model_type bert, "
                                       "tokenizer.json, model.safetensors, sentence_bert_config.json",
                              fix="load it with the sentence-transformers embedder (llmfti.embedders.load_embedder)")
        self._batch_size = settings.batch_size
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        limit = int(json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))["max_seq_length"])
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        backend = tokenizer.to_str()  # before truncation/padding are changed below: the fingerprint's input
        specials = tokenizer.num_special_tokens_to_add(False)
        self.info = EmbedderInfo(
            name=settings.model,
            dimension=int(config["hidden_size"]),
            max_tokens=limit - specials,
            tokenizer_fingerprint=hashlib.sha256(f"{backend}\x00{limit}".encode()).hexdigest()[:16],
        )
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=limit)
        self._tokenizer = tokenizer
        self._spans = Tokenizer.from_str(backend)
        self._spans.no_padding()
        self._spans.no_truncation()
        self._heads = int(config["num_attention_heads"])
        self._eps = float(config.get("layer_norm_eps", 1e-12))
        self._layers = int(config["num_hidden_layers"])
        # Linear weights stored transposed and contiguous (x @ W): a transposed view would drop numpy's
        # stacked matmul from BLAS to a plain loop (30x slower).
        self._w: dict[str, Any] = {
            k: np.ascontiguousarray(v.T if k.endswith("dense.weight") or k.endswith(("query.weight", "key.weight",
                                                                                      "value.weight")) else v,
                                    dtype=np.float32)
            for k, v in load_file(str(folder / "model.safetensors")).items() if v.dtype != np.int64}
        self._prefix = "bert." if "bert.embeddings.word_embeddings.weight" in self._w else ""

    def encode(self, texts: Sequence[str], *, batch_size: int | None = None) -> np.ndarray:
        import numpy as np
        from threadpoolctl import threadpool_limits

        texts = [str(t).strip() for t in texts]  # as sentence-transformers does
        size = batch_size or self._batch_size
        out = np.zeros((len(texts), self.info.dimension), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))  # similar lengths pad less
        with threadpool_limits(limits=1, user_api="blas"):  # see _embed
            for start in range(0, len(order), size):
                self._embed_batch(encodings, order[start:start + size], out)
        return out

    def _embed_batch(self, encodings: list[Any], batch: list[int], out: np.ndarray) -> None:
        """Embed the texts at positions ``batch`` into ``out``, padded to the longest of them."""
        import numpy as np

        width = max(len(encodings[i].ids) for i in batch)
        ids = np.zeros((len(batch), width), dtype=np.int64)
        types = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.float32)
        for row, i in enumerate(batch):
            n = len(encodings[i].ids)
            ids[row, :n], types[row, :n], mask[row, :n] = encodings[i].ids, encodings[i].type_ids, 1.0
        out[batch] = self._embed(ids, types, mask)

    def token_spans(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        if not texts:
            return []
        encoded = self._spans.encode_batch(list(texts), add_special_tokens=False)
        return [[(int(a), int(b)) for a, b in e.offsets] for e in encoded]

    # ----------------------------------------------------------------- the forward pass
    def _embed(self, ids: np.ndarray, types: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Mean-pooled, L2-normalised last hidden states of a padded batch.

        Run with one BLAS thread: a query's matrices are small, and on a busy 2-core machine OpenBLAS's
        default two threads made one query 30x slower (1.3 s instead of 40 ms).
        """
        import numpy as np

        w, p = self._w, self._prefix
        positions = np.arange(ids.shape[1])
        x = (w[f"{p}embeddings.word_embeddings.weight"][ids]
             + w[f"{p}embeddings.position_embeddings.weight"][positions][None]
             + w[f"{p}embeddings.token_type_embeddings.weight"][types])
        x = self._norm(x, f"{p}embeddings.LayerNorm")
        bias = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]  # padding gets no attention
        for layer in range(self._layers):
            x = self._block(x, bias, f"{p}encoder.layer.{layer}.")
        summed = (x * mask[:, :, None]).sum(axis=1)
        pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def _block(self, x: np.ndarray, bias: np.ndarray, name: str) -> np.ndarray:
        import numpy as np

        batch, width, hidden = x.shape
        d = hidden // self._heads

        def heads(t: np.ndarray, *order: int) -> np.ndarray:  # contiguous: numpy's stacked matmul stays on BLAS
            return np.ascontiguousarray(t.reshape(batch, width, self._heads, d).transpose(*order))

        q = heads(self._linear(x, f"{name}attention.self.query"), 0, 2, 1, 3)
        k = heads(self._linear(x, f"{name}attention.self.key"), 0, 2, 3, 1)
        v = heads(self._linear(x, f"{name}attention.self.value"), 0, 2, 1, 3)
        scores = q @ k / np.float32(math.sqrt(d)) + bias
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        context = (scores / scores.sum(axis=-1, keepdims=True)) @ v
        context = context.transpose(0, 2, 1, 3).reshape(batch, width, hidden)
        x = self._norm(self._linear(context, f"{name}attention.output.dense") + x, f"{name}attention.output.LayerNorm")
        inner = _gelu(self._linear(x, f"{name}intermediate.dense"))
        return self._norm(self._linear(inner, f"{name}output.dense") + x, f"{name}output.LayerNorm")

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        weight = self._w[f"{name}.weight"]  # (in, out)
        return (x.reshape(-1, weight.shape[0]) @ weight).reshape(*x.shape[:-1], weight.shape[1]) + self._w[
            f"{name}.bias"]

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        import numpy as np

        mean = x.mean(axis=-1, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        return (x - mean) / np.sqrt(var + np.float32(self._eps)) * self._w[f"{name}.weight"] + self._w[f"{name}.bias"]


def _gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact GELU, x * Phi(x), with erf from Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7)."""
    import numpy as np

    z = np.abs(x) / np.float32(math.sqrt(2.0))
    t = 1.0 / (1.0 + np.float32(0.3275911) * z)
    poly = t * (np.float32(0.254829592) + t * (np.float32(-0.284496736) + t * (
        np.float32(1.421413741) + t * (np.float32(-1.453152027) + t * np.float32(1.061405429)))))
    erf = np.sign(x) * (1.0 - poly * np.exp(-z * z))
    return np.float32(0.5) * x * (1.0 + erf)
