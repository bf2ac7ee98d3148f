"""The on-disk embedding store: each (model, text) embedded once, read back bit-identical,
keyed by the model's contents, safe for several processes at once."""

from __future__ import annotations

import multiprocessing as mp
import shutil
from pathlib import Path

import numpy as np
import pytest

from mnemoray.index.embedder import Embedder, default_model_path
from mnemoray.index.embedding_store import EmbeddingStore, model_fingerprint, resolve_store_dir, text_key

TEXTS = ["Caroline went to the LGBTQ support group.", "Melanie painted a sunrise last year.",
         "What did Caroline research?", "Caroline went to the LGBTQ support group."]


def test_vectors_are_computed_once_and_read_back_identical(tmp_path):
    first = Embedder(store=tmp_path)
    computed = first.encode(TEXTS)
    assert (first.store.misses, first.store.hits) == (3, 1)  # the repeated text is embedded once
    again = Embedder(store=tmp_path)  # another process would open the same file
    read = again.encode(TEXTS[::-1])
    assert (again.store.misses, again.store.hits) == (0, 4)
    np.testing.assert_array_equal(read, computed[::-1])
    plain = Embedder(store=None).encode(TEXTS)
    np.testing.assert_allclose(read[::-1], plain, atol=1e-6)
    assert read.dtype == np.float32 and np.allclose(np.linalg.norm(read, axis=1), 1.0, atol=1e-5)


def test_empty_and_partial_batches(tmp_path):
    emb = Embedder(store=tmp_path)
    assert emb.encode([]).shape == (0, emb.dim)
    emb.encode(TEXTS[:1])
    mixed = emb.encode(TEXTS[:2])
    assert emb.store.misses == 2 and emb.store.hits == 1
    np.testing.assert_allclose(mixed, Embedder(store=None).encode(TEXTS[:2]), atol=1e-6)


def test_settings_that_change_vectors_get_their_own_file(tmp_path):
    full = Embedder(store=tmp_path, max_seq_length=256)
    short = Embedder(store=tmp_path, max_seq_length=8)
    assert full.store.path != short.store.path
    long_text = "word " * 40
    assert not np.allclose(full.encode([long_text]), short.encode([long_text]), atol=1e-3)


def test_fingerprint_follows_the_files_not_the_path(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
        (folder / "config.json").write_text('{"hidden": 8}')
        (folder / "weights.bin").write_bytes(bytes(range(256)) * 9000)  # > 1 MiB: head and tail hashed
    assert model_fingerprint(str(a)) == model_fingerprint(str(b))
    (b / "config.json").write_text('{"hidden": 16}')
    assert model_fingerprint(str(b), "x") != model_fingerprint(str(a), "x")
    c = tmp_path / "c"
    shutil.copytree(a, c)
    with open(c / "weights.bin", "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x00")  # a retrained model at the same size: the tail differs
    assert model_fingerprint(str(c), "y") != model_fingerprint(str(a), "y")
    assert model_fingerprint(default_model_path()) == model_fingerprint(default_model_path())


def test_a_vector_of_the_wrong_size_is_recomputed(tmp_path):
    store = EmbeddingStore(tmp_path, "fp", dim=4)
    store.put({text_key("a"): np.ones(3, dtype=np.float32)})  # not ours (wrong dim)
    calls = []

    def encode(texts):
        calls.append(list(texts))
        return np.full((len(texts), 4), 0.5, dtype=np.float32)

    out = store.encode_through(["a", "b"], encode)
    assert calls == [["a", "b"]] and out.shape == (2, 4)


def test_store_dir_setting(monkeypatch, tmp_path):
    monkeypatch.delenv("MNEMORAY_EMBEDDING_CACHE", raising=False)
    assert resolve_store_dir("default") == Path("~/.cache/mnemoray/embeddings").expanduser()
    assert resolve_store_dir(None) is None and resolve_store_dir("off") is None
    assert resolve_store_dir(str(tmp_path)) == tmp_path
    monkeypatch.setenv("MNEMORAY_EMBEDDING_CACHE", str(tmp_path / "env"))
    assert resolve_store_dir("default") == tmp_path / "env"
    monkeypatch.setenv("MNEMORAY_EMBEDDING_CACHE", "off")
    assert resolve_store_dir("default") is None


def _writer(folder: str, start: int, out) -> None:
    store = EmbeddingStore(folder, "shared", dim=8)
    texts = [f"text {i}" for i in range(start, start + 300)]
    vecs = store.encode_through(texts, lambda ts: np.stack([np.full(8, float(t.split()[1]), np.float32) for t in ts]))
    out.put(bool(np.all(vecs[:, 0] == np.arange(start, start + 300))))


def test_two_processes_share_one_store(tmp_path):
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), start, out)) for start in (0, 150)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert [out.get(timeout=5), out.get(timeout=5)] == [True, True]
    store = EmbeddingStore(tmp_path, "shared", dim=8)
    got = store.get([text_key(f"text {i}") for i in range(450)])
    assert len(got) == 450 and all(got[text_key(f"text {i}")][0] == i for i in range(450))


@pytest.mark.parametrize("setting", [None, "off"])
def test_index_config_can_turn_the_store_off(setting):
    from mnemoray.config import IndexConfig

    assert Embedder.from_index_config(IndexConfig(embedding_cache=setting)).store is None
