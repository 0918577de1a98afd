"""Retrieval: the contrastive loss, the faiss index, memory banks, the shipped retriever and `search`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tinychameleon.cli import main
from tinychameleon.data.colored import caption_of, colorize
from tinychameleon.errors import MemoryFolderError, PromptError
from tinychameleon.imaging import save_png
from tinychameleon.retrieval.clip import contrastive_loss
from tinychameleon.retrieval.index import VectorIndex
from tinychameleon.retrieval.memory import folder_bank, training_bank
from tinychameleon.retrieval.retriever import Retriever
from tinychameleon.tokenizers.text import PaletteWarning
from tinychameleon.training.retriever_trainer import draw_texts, positives_of


def test_contrastive_loss_on_a_hand_made_batch():
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    scale = torch.tensor(2.0)
    # Each row: logits (2, 0) with the right answer first -> -log(e^2 / (e^2 + 1)), both directions alike.
    assert contrastive_loss(text, image, scale).item() == pytest.approx(math.log(1 + math.exp(-2)))
    # Swapped images: every right answer now has logit 0 against a wrong one at 2.
    assert contrastive_loss(text, image.flip(0), scale).item() == pytest.approx(math.log(1 + math.exp(2)))
    # Text 0 true of both images: its target is (1/2, 1/2); image 1 then has two right texts, image 0 one.
    positives = torch.tensor([[True, True], [False, True]])
    loss = contrastive_loss(text, image, scale, positives).item()
    log_p = lambda logits, index: logits[index] - math.log(sum(math.exp(v) for v in logits))  # noqa: E731
    text_side = (-(0.5 * log_p([2, 0], 0) + 0.5 * log_p([2, 0], 1)) - log_p([0, 2], 1)) / 2
    image_side = (-log_p([2, 0], 0) - (0.5 * log_p([0, 2], 0) + 0.5 * log_p([0, 2], 1))) / 2
    assert loss == pytest.approx((text_side + image_side) / 2)


def test_partial_texts_name_what_they_say_and_fit_every_image_they_describe():
    rng = np.random.default_rng(0)
    digits, foreground, background = np.array([8, 8, 3]), np.array([4, 4, 0]), np.array([0, 3, 3])
    texts, named = draw_texts(digits, foreground, background, rng)
    for text, row, digit, fg, bg in zip(texts, named, digits, foreground, background):
        assert text in caption_of(digit, fg, bg)  # whole captions or a part of one
        assert (row[0] == digit) and row[1] in (-1, fg) and row[2] in (-1, bg)
    truth = torch.tensor([[8, 4, 0], [8, 4, 3], [3, 0, 3]])
    named = torch.tensor([[8, -1, -1], [8, 4, 3], [3, -1, 3]])
    assert positives_of(named, truth).tolist() == [[True, True, False], [False, True, False], [False, False, True]]


def clustered(count: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((200, dim))
    vectors = centres[rng.integers(0, 200, count)] + 0.3 * rng.standard_normal((count, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def test_exact_index_returns_the_brute_force_neighbours(tmp_path):
    vectors, queries = clustered(3000, 16, 0), clustered(25, 16, 1)
    index = VectorIndex.build(vectors)
    assert index.kind == "exact"
    scores, ids = index.search(queries, 7)
    brute = np.argsort(-(queries @ vectors.T), axis=1)[:, :7]
    assert (ids == brute).all()
    assert np.allclose(scores, np.take_along_axis(queries @ vectors.T, brute, axis=1), atol=1e-5)
    index.save(tmp_path / "index.faiss")
    assert (VectorIndex.load(tmp_path / "index.faiss").search(queries, 7)[1] == ids).all()


def test_approximate_index_keeps_its_stated_recall(tmp_path):
    """IVF with the default lists and probes: recall@10 against exact search >= 0.95 on clustered vectors
    (BENCHMARKS.md states the figure at 1 M entries)."""
    vectors, queries = clustered(40_000, 32, 0), clustered(100, 32, 1)
    approximate = VectorIndex.build(vectors, kind="ivf")
    assert approximate.kind == "ivf" and approximate.probes >= 1
    exact_ids = VectorIndex.build(vectors, kind="exact").search(queries, 10)[1]
    ids = approximate.search(queries, 10)[1]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact_ids, ids)])
    assert recall >= 0.95
    approximate.save(tmp_path / "ivf.faiss")
    loaded = VectorIndex.load(tmp_path / "ivf.faiss")
    assert loaded.kind == "ivf" and (loaded.search(queries, 10)[1] == ids).all()


@pytest.fixture(scope="module")
def retriever():
    return Retriever.from_pretrained()


def test_retriever_refuses_unknown_words_naming_the_closest(retriever):
    with pytest.raises(PromptError, match="eihgt.*eight"):
        retriever.embed_texts(["plain red eihgt"])
    with pytest.warns(PaletteWarning, match="'plain red' is not a palette color.*normal red"):
        retriever.embed_texts(["plain red eight"])
    with pytest.raises(PromptError, match="at least one word"):
        retriever.embed_texts(["  "])
    with pytest.raises(PromptError, match="too long"):
        retriever.embed_texts(["eight " * 100])


def test_shipped_retriever_reads_test_digits_zero_shot(retriever, colored):
    test = colored[1].subset(slice(0, 300))
    read = retriever.read(test.images)
    assert (read["digit"] == test.digits).mean() >= 0.95
    assert ((read["foreground"] == test.foreground) & (read["background"] == test.background)).mean() >= 0.97


@pytest.fixture(scope="module")
def memory_folder(tmp_path_factory, colored):
    """Six real test digits with their captions, in the manifest format `generate` writes."""
    folder = tmp_path_factory.mktemp("memory")
    test = colored[1].subset(slice(0, 6))
    rows = []
    for row, (image, caption) in enumerate(zip(test.images, test.captions())):
        save_png(image, folder / f"{row:04d}_000.png")
        rows.append({"prompt": caption, "file": f"{row:04d}_000.png", "sample": 0, "caption": caption})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder, test


def run_search(capsys, *argv) -> tuple[int, list[dict], str]:
    code = main(["search", *argv])
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()] if "--json" in argv and code == 0 else []
    return code, rows, err


def test_search_a_memory_folder_by_text_and_image(capsys, memory_folder, tmp_path):
    folder, test = memory_folder
    code, rows, _ = run_search(capsys, test.captions()[2], "--memory", str(folder), "-k", "3", "--json",
                               "--cache-dir", str(tmp_path))
    assert code == 0 and [row["rank"] for row in rows] == [1, 2, 3]
    assert set(rows[0]) == {"query", "rank", "score", "caption", "file"} and rows[0]["query"] == 0
    assert rows[0]["caption"] == test.captions()[2] and rows[0]["file"].endswith("0002_000.png")
    assert rows[0]["score"] >= rows[1]["score"] >= rows[2]["score"]
    code, rows, _ = run_search(capsys, "--image", str(folder / "0004_000.png"), "--memory", str(folder), "-k", "1",
                               "--json", "--cache-dir", str(tmp_path))
    assert code == 0 and rows[0]["file"].endswith("0004_000.png")
    assert (tmp_path / "memory").is_dir() and not list(folder.glob(".*"))  # cached outside the user's folder


def test_search_queries_file_mixes_texts_and_images_in_order(capsys, memory_folder, tmp_path):
    folder, test = memory_folder
    queries = tmp_path / "queries.jsonl"
    queries.write_text(json.dumps({"image": str(folder / "0001_000.png")}) + "\n" +
                       json.dumps({"text": test.captions()[5]}) + "\n")
    code, rows, _ = run_search(capsys, "--queries-file", str(queries), "--memory", str(folder), "-k", "2", "--json",
                               "--cache-dir", str(tmp_path))
    assert code == 0 and [(row["query"], row["rank"]) for row in rows] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert rows[0]["caption"] == test.captions()[1] and rows[2]["caption"] == test.captions()[5]


def test_search_the_training_digits_by_partial_text(capsys, retriever, cache_dir):
    bank = training_bank(retriever, cache_dir)
    assert len(bank) == 55_000
    code, rows, _ = run_search(capsys, "normal red eight", "-k", "5", "--json")
    assert code == 0 and len(rows) == 5 and all(set(row) == {"query", "rank", "score", "caption", "index"}
                                                 for row in rows)
    assert all(row["caption"].startswith("normal red eight on") for row in rows)
    assert all(bank.captions[row["index"]] == row["caption"] for row in rows)
    code, rows, _ = run_search(capsys, "seven on dark blue", "-k", "5", "--json", "--min-score", "-1")
    assert code == 0 and all(row["caption"].endswith("seven on dark blue") for row in rows)
    # --min-score is applied: no document is as similar as 1.
    assert run_search(capsys, "seven on dark blue", "--json", "--min-score", "1")[1] == []


def test_memory_folders_that_cannot_serve_get_one_clear_error(capsys, memory_folder, tmp_path, retriever):
    folder, _ = memory_folder
    broken = tmp_path / "broken"
    broken.mkdir()
    cases = [("has no manifest.jsonl", None),
             ("line 1 is not JSON", "{not json\n"),
             ('must hold {"file"', json.dumps({"file": "a.png"}) + "\n"),
             ("missing.png is not a file", json.dumps({"file": "missing.png", "caption": "normal red eight"}) + "\n")]
    for message, manifest in cases:
        if manifest is not None:
            (broken / "manifest.jsonl").write_text(manifest)
        code, _, err = run_search(capsys, "normal red eight", "--memory", str(broken), "--cache-dir", str(tmp_path))
        assert code == 2 and message in err and err.count("\n") == 1, err
    save_png(np.zeros((28, 28, 3), np.uint8), broken / "a.png")
    (broken / "manifest.jsonl").write_text(json.dumps({"file": "a.png", "caption": "plain red eihgt"}) + "\n")
    with pytest.raises(MemoryFolderError, match="row 1.*eihgt.*eight"):
        folder_bank(retriever, broken, tmp_path)


def test_search_flags_are_checked(capsys):
    for argv, message in ((["normal red eight", "--image", "a.png"], "one of TEXT"), ([], "one of TEXT"),
                          (["normal red eight", "-k", "0"], "-k must be"),
                          (["normal red eight", "--min-score", "2"], "--min-score"),
                          (["plain red eihgt"], "did you mean")):
        code, _, err = run_search(capsys, *argv)
        assert code == 2 and message in err, (argv, err)


def test_a_changed_memory_folder_is_re_embedded(capsys, memory_folder, tmp_path, retriever):
    folder, test = memory_folder
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in folder.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    first = folder_bank(retriever, copy, tmp_path)
    # Repaint image 0 as another digit and caption it so: the cache must not answer with the old bank.
    other = colorize(np.zeros((1, 28, 28), np.uint8), np.array([0]), np.array([3]))[0]
    save_png(other, copy / "0000_000.png")
    lines = (copy / "manifest.jsonl").read_text().splitlines()
    lines[0] = json.dumps({"file": "0000_000.png", "caption": "plain black one on plain white"})
    (copy / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    second = folder_bank(retriever, copy, tmp_path)
    assert second.captions[0] == "plain black one on plain white" != first.captions[0]
    assert not np.allclose(second.vectors[0], first.vectors[0])
    assert np.allclose(second.vectors[1:], first.vectors[1:], atol=1e-6)


def test_generate_and_caption_read_retrieved_neighbours(capsys, document_run, document_pipeline, memory_folder,
                                                        tmp_path, monkeypatch):
    """--retrieve K and --memory DIR change what the model reads: K documents of that bank, nearest first."""
    from tinychameleon.documents.document import DocumentTokenizer

    folder, test = memory_folder
    read = []
    write = document_pipeline.documents.write
    monkeypatch.setattr(document_pipeline.documents, "write", lambda rows, *rest, **options: read.extend(rows) or
                        write(rows, *rest, **options))
    tokenizer = DocumentTokenizer(document_pipeline.vocab)
    prompt = test.captions()[4]
    images, captions = document_pipeline.draw_from_memory(prompt, n=2, seed=3, retrieve=2, memory=folder)
    assert images.shape == (2, 28, 28, 3) and images.max() <= 3 and captions == [prompt, prompt]
    document = tokenizer.decode(read[0])
    # Two retrieved documents, the query's own caption (it is in the folder) first, then the prompt and <boi>.
    assert document.text.startswith(f"<image> {prompt} . <image> ") and document.text.endswith(f". {prompt}")
    assert len(document.images) == 2 and read[0][-1] == document_pipeline.vocab.begin_image
    read.clear()
    document_pipeline.draw_from_memory(prompt, seed=3, retrieve=1)            # the training digits instead
    assert len(tokenizer.decode(read[0]).images) == 1
    read.clear()
    assert len(document_pipeline.caption_from_memory(test.images[:3], retrieve=3, memory=folder)) == 3
    assert all(len(tokenizer.decode(row).images) == 4 and tokenizer.decode(row).text.endswith(". <image>")
               for row in read)
    read.clear()
    document_pipeline.continue_documents("<image> swap the colors .", [test.images[2]], retrieve=1, memory=folder)
    assert tokenizer.decode(read[0]).text == f"<image> {test.captions()[2]} . <image> swap the colors ."
    # Through the CLI: one manifest row per image, the prompt as its caption.
    out = tmp_path / "drawn"
    assert main(["generate", prompt, "-n", "2", "--retrieve", "2", "--memory", str(folder), "--checkpoint",
                 str(document_run), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [row["caption"] for row in rows] == [prompt, prompt] and all((out / row["file"]).exists() for row in rows)
    capsys.readouterr()
    assert main(["caption", str(folder), "--retrieve", "1", "--json", "--checkpoint", str(document_run)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(test)


def test_retrieval_flags_are_checked(capsys, tiny_run, document_run, tmp_path):
    # The most neighbours is the checkpoint's: a run trained without train.retrieve > 3 has room for three.
    for argv, message in ((["--retrieve", "0"], "--retrieve must be at least 1"),
                          (["--retrieve", "4", "--checkpoint", str(document_run)], "retrieve must be 1..3 for this "
                                                                                   "checkpoint"),
                          (["--memory", str(tmp_path)], "--memory DIR needs --retrieve"),
                          (["--retrieve", "1", "--views", "2"], "drop --views"),
                          (["--retrieve", "1", "--checkpoint", str(tiny_run)], "trained without documents")):
        code = main(["generate", "dark green eight on bright cyan", "--out", str(tmp_path / "x"), *argv])
        assert code == 2 and message in capsys.readouterr().err, argv
    # Best of n applies where the model draws, not where it reads.
    code = main(["caption", str(tmp_path), "--retrieve", "1", "--candidates", "3"])
    assert code == 2 and "drop --candidates" in capsys.readouterr().err


def test_drawing_from_memory_keeps_the_best_of_n_by_clip(document_pipeline, memory_folder):
    """image_candidates N with clip_rerank: N drawings after the same retrieved context, CLIP's favourite kept."""
    folder, test = memory_folder
    prompt = test.captions()[4]
    options = dict(seed=5, retrieve=1, memory=folder, temperature=1.0, guidance=1.0)
    drawn, _ = document_pipeline.draw_from_memory(prompt, n=3, image_candidates=1, **options)
    best, _ = document_pipeline.draw_from_memory(prompt, image_candidates=3, clip_rerank=True, **options)
    scores = document_pipeline._load_retriever().similarity([prompt] * 3, drawn)
    assert len(best) == 1 and len({image.tobytes() for image in drawn}) > 1
    assert (best[0] == drawn[int(np.argmax(scores))]).all()


def test_sampling_json_retrieved_entry_sets_drawing_after_retrieval(document_pipeline, memory_folder, monkeypatch):
    """sampling.retrieved overrides the pair settings for drawings after retrieval; the call's own still win."""
    from dataclasses import replace

    from tinychameleon.config import SamplingConfig
    from tinychameleon.errors import ConfigError

    folder, test = memory_folder
    prompts = test.captions()[:4]
    options = dict(seed=2, retrieve=1, memory=folder, temperature=1.0, image_candidates=1)
    guided, _ = document_pipeline.draw_from_memory(prompts, guidance=3.0, **options)
    plain, _ = document_pipeline.draw_from_memory(prompts, guidance=1.0, **options)
    assert not np.array_equal(guided, plain)
    monkeypatch.setattr(document_pipeline, "sampling", replace(document_pipeline.sampling, retrieved={"guidance": 3.0}))
    assert np.array_equal(document_pipeline.draw_from_memory(prompts, **options)[0], guided)
    assert np.array_equal(document_pipeline.draw_from_memory(prompts, guidance=1.0, **options)[0], plain)
    with pytest.raises(ConfigError, match="sampling.retrieved may set"):
        SamplingConfig(retrieved={"caption_views": 2}).validate()
    with pytest.raises(ConfigError, match="sampling.retrieved: guidance"):
        SamplingConfig(retrieved={"guidance": -1.0}).validate()


def test_an_interrupted_retriever_training_resumes_to_the_same_weights(tmp_path, cache_dir):
    from safetensors.torch import load_file

    from tinychameleon.errors import TinyChameleonError
    from tinychameleon.training.retriever_trainer import train_retriever

    settings = dict(epochs=2, batch_size=256, max_examples=1024, shifted_share=0.5,
                    cache_dir=cache_dir)
    train_retriever(tmp_path / "whole", log=lambda line: None, **settings)

    def stop_after_first_epoch(line):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_retriever(tmp_path / "cut", log=stop_after_first_epoch, **settings)
    assert not (tmp_path / "cut" / "clip.safetensors").exists()      # not finished: no weights to load by mistake
    with pytest.raises(TinyChameleonError, match="--resume"):
        train_retriever(tmp_path / "cut", log=lambda line: None, **settings)
    with pytest.raises(TinyChameleonError, match="--shifted 0.5; resume with those"):
        train_retriever(tmp_path / "cut", resume=True, log=lambda line: None, **{**settings, "shifted_share": 0.0})
    lines = []
    train_retriever(tmp_path / "cut", resume=True, log=lines.append, **settings)
    assert len(lines) == 1 and lines[0].startswith("epoch 2 ")         # only the missing epoch ran
    whole, resumed = (load_file(str(tmp_path / name / "clip.safetensors")) for name in ("whole", "cut"))
    assert all(torch.equal(whole[key], resumed[key]) for key in whole)
    metrics = json.loads((tmp_path / "cut" / "retriever_metrics.json").read_text())
    assert [row["epoch"] for row in metrics["epochs"]] == [1, 2] and metrics["shifted"] == 0.5


def test_the_image_encoders_shape_plane_reads_the_same_strokes_alike_and_old_configs_load_without_it(tmp_path):
    from tinychameleon.checkpoint import save_weights
    from tinychameleon.data.colored import recolor
    from tinychameleon.retrieval.clip import Clip, ClipConfig
    from tinychameleon.retrieval.retriever import CONFIG_FILE, WEIGHTS_FILE, Retriever

    torch.manual_seed(0)
    encoder = Clip(ClipConfig()).image
    first_conv = encoder.features[0]
    assert encoder.shape_plane and first_conv.in_channels == 13
    images = np.zeros((2, 28, 28, 3), dtype=np.uint8)
    images[:, 8:20, 12:15] = 3                                    # a white stroke on black ...
    images = recolor(images, np.array([5, 9]), np.array([20, 2]))  # ... in two other color pairs
    seen = {}
    first_conv.register_forward_hook(lambda module, inputs, output: seen.update(planes=inputs[0]))
    encoder(torch.from_numpy(images))
    shape = seen["planes"][:, 12]                                 # (2, 28, 28): the 13th plane
    assert torch.equal(shape[0], shape[1]) and shape[0].sum() == 36 and shape[0, 8:20, 12:15].all()
    # A retriever written before the plane existed (its config has no such field) loads as it was trained.
    old = Clip(ClipConfig(shape_plane=False))
    config = {key: value for key, value in old.config.to_dict().items() if key != "shape_plane"}
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    save_weights(old, tmp_path / WEIGHTS_FILE)
    loaded = Retriever.from_pretrained(tmp_path)
    assert not loaded.config.shape_plane and loaded.clip.image.features[0].in_channels == 12
    assert np.allclose(loaded.embed_images(images), old.eval().image(torch.from_numpy(images)).detach().numpy(),
                       atol=1e-6)


def test_distinct_hits_skip_near_duplicates_of_the_query_and_of_each_other():
    from tinychameleon.retrieval.memory import MemoryBank

    rng = np.random.default_rng(0)
    base = rng.standard_normal((4, 16)).astype(np.float32)
    vectors = np.concatenate([base[:1], base[:1] + 0.01, base[1:], base[:1] + 0.02 * rng.standard_normal(16)])
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    bank = MemoryBank("hand-made", [f"doc {i}" for i in range(len(vectors))], vectors, VectorIndex.build(vectors), None)
    query = vectors[:1] * 0.7 + 0.3 * vectors[2:3]               # near the copies, not one of them
    query = query / np.linalg.norm(query)
    plain = [hit.position for hit in bank.search(query, 3)[0]]
    assert set(plain[:3]) == {0, 1, 5}                          # three copies of one document fill the top 3
    distinct = [hit.position for hit in bank.search(query, 3, distinct=0.99)[0]]
    assert distinct[0] in (0, 1, 5) and len(set(distinct) & {0, 1, 5}) == 1 and len(distinct) == 3
    # The query's own copy in the bank is skipped too.
    assert 0 not in [hit.position for hit in bank.search(vectors[:1], 2, distinct=0.999)[0]]


def test_search_distinct_flag_changes_the_hits(capsys):
    captions = {tuple(row["caption"] for row in run_search(capsys, "seven on dark blue", "-k", "4", "--json",
                                                            *extra)[1])
                for extra in ([], ["--distinct", "0.9"])}
    plain, distinct = sorted(captions, key=lambda c: len(set(c)))
    assert len(set(plain)) < 4 and len(set(distinct)) == 4     # a caption repeated, then four kinds of seven
    assert all(caption.endswith("seven on dark blue") for caption in plain + distinct)


def test_clip_rerank_keeps_the_candidate_the_retriever_prefers(tiny_pipeline, monkeypatch):
    seen = {}

    def similarity(self, captions, images):
        seen["captions"], seen["images"] = captions, images
        scores = np.zeros(len(images))
        scores[2::4] = 1.0                                   # the third candidate of each prompt
        return scores

    monkeypatch.setattr(Retriever, "similarity", similarity)
    prompts = ["dark green eight on bright cyan", "plain white one on plain black"]
    images = tiny_pipeline.generate_images(prompts, seed=0, image_candidates=4, clip_rerank=True)
    assert seen["captions"] == [prompts[0]] * 4 + [prompts[1]] * 4
    assert (images[0] == seen["images"][2]).all() and (images[1] == seen["images"][6]).all()
    seen.clear()
    tiny_pipeline.generate_images(prompts, seed=0, image_candidates=4)     # self-reranking: CLIP is not asked
    assert not seen
