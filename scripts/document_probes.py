"""Why the weakest document families fail: three probes on validation digits (never trained on).

    python scripts/document_probes.py --checkpoint raster --documents 200 --out runs/document_probes.json

- counting: teacher-forced on real documents, the chance the model stops (<eod>) rather than draws again
  (<boi>) after each image, by how many images the prompt asked for. A model that counts stops after the
  asked number and never before; one that ignores the prompt stops with the same chance whatever was asked.
- counting, guided: the same choices, guided as the sampler guides image tokens (by the document without its words),
  at several guidance scales: the chance of the right choice. Guidance sharpens only what the words change.
- counting in words (the stepping stone): teacher-forced, the chance of "." after the k-th digit word, by how many
  digits the prompt asked for. Its digits are a bigram (each word's successor); its stop needs the prompt's end
  word, so a model that stops by length alone shows the same chance after word k whatever was asked. With the
  pointer: the head's own chance of "." where it is due and where not, the gate, and where the pointer looks.
- counting in words, written: every one of its prompts (24, all of them training prompts) continued with the
  shipped settings; the share written right, and the wrong answers.
- swap, teacher-forced: the chance of each of the answer's two color tokens (the prompt's background color, then its
  digit color), given the real document up to it; a model that swaps puts both near one. With the pointer: at the
  first, its gate and where it points (the prompt's background color token, or its digit color token).
- counting, drawn: free-running, by how many images the prompt asked for, the share that drew as many, fewer or
  more, and per place in the answer how often the drawing shows the asked digit.
- counting, next digit: with the prompt and the real first k images (k = 0, 1, 2) as the prefix, the share of
  documents whose next image the sampler draws as the next digit of the count, or as the last one again. A model
  that counts draws every image right whatever k; one that only reads the start digit gets the first.
- addition: the greedy answer set against the two addends: how often it names the sum, the first or the
  second digit, or something else; how far the wrong answers are from the sum, and which sums are missed.
- edits (digit color): how many of the prompt image's 49 shape tokens the greedy answer image gets wrong,
  and where in the 7x7 grid. The patches tokenizer recolors a digit by repainting its two color tokens, so a
  perfect edit copies every shape token; a miscopied token's patch is compared with the prompt's, pixel by pixel.
- edit search: for the digit color edits the greedy answer gets wrong, is the exact copy likelier than that answer
  under the model (conditional, and guided as the sampler draws)? If not, a wider search (beam, best of n by
  likelihood) cannot find the copy.
- edits, teacher-forced: with the exact answer as the prefix, is the prompt's patch the likeliest token at each
  shape slot, and where it is not, its rank and the probability it keeps.
- edits, the pointer: teacher-forced as above, its gate and its weight on the prompt's patch at the same slot, and
  where the copy is not the likeliest token, which patch the pointer looks at instead.
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from tinychameleon.data.colored import DIGIT_WORDS, load_colored_mnist, load_splits
from tinychameleon.data.mnist import default_cache_dir
from tinychameleon.documents.batches import example_documents
from tinychameleon.documents.document import split_words
from tinychameleon.documents.families import DigitBank, examples
from tinychameleon.evaluation.documents import render
from tinychameleon.evaluation.judge import load_or_train_judge
from tinychameleon.io_utils import write_json
from tinychameleon.model import hidden_states, image_slots
from tinychameleon.pipeline import Pipeline
from tinychameleon.sampling import guided_logits


def teacher_forced(pipe: Pipeline, chosen: list, codes: torch.Tensor):
    """Each chosen example's real document read at once: yields (example, ids, (T, V) next-token probabilities,
    (T, C) final hidden states: what the output head and the pointer read)."""
    with hidden_states(pipe.model) as final:
        for example, ids in zip(chosen, example_documents(chosen, codes, pipe.image_tokenizer.recolor,
                                                          pipe.documents.tokenizer)):
            with torch.no_grad():
                probabilities = pipe.model(torch.tensor([ids], device=pipe.device))[0].float().softmax(-1)
            yield example, ids, probabilities, final["hidden"][0].float()


@torch.no_grad()
def pointer_at(model, hidden: torch.Tensor, ids: list[int], position: int) -> tuple[float, torch.Tensor]:
    """The pointer (model.copy) predicting the token after `position`, from one read's (T, C) final hidden states
    of `ids`: its gate (the share it copies) and its (position + 1,) weights over the positions so far."""
    keys = model.copy.key(hidden[None, :position + 1])                                         # (1, position + 1, kd)
    mask = torch.ones(1, 1, position + 1, dtype=torch.bool, device=hidden.device)
    slots = (None, None)
    if model.config.pointer_slots:
        every = image_slots(torch.tensor([ids[:position + 1]], device=hidden.device), model.config.image_tokens,
                            model.config.image_length, first_plan=model.config.first_plan)[0]  # (1, position + 1)
        slots = (every[:, -1:], every)
    weights, gate = model.copy.look(hidden[None, position:position + 1], keys, mask, *slots)   # (1, 1, p + 1), (1, 1, 1)
    return float(torch.sigmoid(gate)), weights[0, 0]


def rounded_means(chances: dict[str, list[float]]) -> dict:
    return {key: round(float(np.mean(values)), 3) for key, values in sorted(chances.items())}


@torch.no_grad()
def read_with_and_without_words(pipe: Pipeline, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """The two reads guidance mixes: (T, V) logits of the document and (T', V) logits of the document without its
    words (the sampler's unconditional stream), with the latter's ids (T' <= T: the words are gone)."""
    free_ids = pipe.documents.grammar.without_words(ids)
    conditional = pipe.model(torch.tensor([ids], device=pipe.device))[0].float()
    free = pipe.model(torch.tensor([free_ids], device=pipe.device))[0].float()
    return conditional, free, free_ids


def stop_chances(pipe: Pipeline, bank: DigitBank, codes: torch.Tensor, count: int) -> dict:
    """{"asked N, after image k": mean chance of <eod> against <boi>} over `count` counting documents."""
    vocab = pipe.vocab
    chances = defaultdict(list)
    for example, ids, probabilities, _ in teacher_forced(pipe, examples(bank, count, [0, 7, 23],
                                                                         families=["counting"]), codes):
        ends = [i for i, token in enumerate(ids) if token == vocab.end_image]   # what follows each image
        for k, i in enumerate(ends, 1):
            stop, draw = probabilities[i, vocab.end_document], probabilities[i, vocab.begin_image]
            chances[f"asked {len(example.answer_images)}, after image {k}"].append(float(stop / (stop + draw)))
    return rounded_means(chances)


def guided_stop_choices(pipe: Pipeline, bank: DigitBank, codes: torch.Tensor, count: int,
                        guidances=(1.0, 1.5, 2.0, 3.0, 4.0)) -> dict:
    """{"asked N, after image k": {guidance: mean chance of the right choice}}: teacher-forced as stop_chances, with
    the choice between <boi> and <eod> guided as the sampler guides image tokens (the unconditional stream is the
    document without its words). Guidance can only sharpen what the words change; if it moves every count's stop the
    same way, the words do not tell the counts apart."""
    vocab = pipe.vocab
    choices = [vocab.begin_image, vocab.end_document]
    right = defaultdict(lambda: defaultdict(list))
    chosen = examples(bank, count, [0, 7, 23], families=["counting"])
    for example, ids in zip(chosen, example_documents(chosen, codes, pipe.image_tokenizer.recolor,
                                                      pipe.documents.tokenizer)):
        conditional, free, free_ids = read_with_and_without_words(pipe, ids)
        ends = [i for i, token in enumerate(ids) if token == vocab.end_image]      # counting's images are all answers
        free_ends = [i for i, token in enumerate(free_ids) if token == vocab.end_image]
        for k, (i, j) in enumerate(zip(ends, free_ends), 1):
            stops = ids[i + 1] == vocab.end_document
            for guidance in guidances:
                stop = float(guided_logits(conditional[i], free[j], guidance)[choices].softmax(-1)[1])
                right[f"asked {len(example.answer_images)}, after image {k}"][guidance].append(
                    stop if stops else 1 - stop)
    return {key: {guidance: round(float(np.mean(values)), 3) for guidance, values in by_guidance.items()}
            for key, by_guidance in sorted(right.items())}


def word_stop_chances(pipe: Pipeline, bank: DigitBank, codes: torch.Tensor, count: int) -> dict:
    """{"asked N, after word k": mean chance of "." next} over `count` "counting in words" documents (the answer's
    words are its digits, then "."; the chance is read after each digit word). With the pointer, at the words
    where "." is due (the last) and where it is not (the others): the output head's own chance of ".", the
    pointer's gate, and how often it points at the prompt's end word (a "." it cannot copy: the prompt has none)."""
    full_stop = pipe.documents.tokenizer.word_to_id["."]
    chosen = examples(bank, count, [0, 7, 29], families=["counting in words"])
    chances = defaultdict(list)
    for example, ids, probabilities, hidden in teacher_forced(pipe, chosen, codes):
        asked = len(split_words(example.answer)) - 1
        answer_start = len(ids) - 1 - (asked + 1)                     # the answer's words, ".", then <eod>
        end_word = ids.index(pipe.documents.tokenizer.word_to_id["to"]) + 1         # "count from A to B :"
        with torch.no_grad():
            head = pipe.model.head(hidden).float().softmax(-1)[:, full_stop]   # (T,) the output head alone
        for k in range(1, asked + 1):
            position = answer_start + k - 1
            chances[f"asked {asked}, after word {k}"].append(float(probabilities[position, full_stop]))
            if pipe.config.model.copy_head:
                due = "stop due" if k == asked else "stop not due"
                gate, weights = pointer_at(pipe.model, hidden, ids, position)
                chances[f"pointer, {due}: the head's own chance of '.'"].append(float(head[position]))
                chances[f"pointer, {due}: gate"].append(gate)
                chances[f"pointer, {due}: points at the end word"].append(float(int(weights.argmax()) == end_word))
    return rounded_means(chances)


def counting_words_written(pipe: Pipeline, bank: DigitBank) -> dict:
    """Every "counting in words" prompt (the family's own, gathered from 2000 of its examples) continued once
    (seed 0): the share answered right, and the wrong answers."""
    chosen = examples(bank, 2000, [0, 9, 31], families=["counting in words"])
    asked = {example.prompt: example.answer for example in chosen}
    prompts = sorted(asked)
    written = [rows[0].text.strip() for rows in pipe.continue_documents(prompts, n=1, seed=0)]
    return {"prompts": len(prompts), "right": sum(asked[p] == w for p, w in zip(prompts, written)) / len(prompts),
            "wrong": {p: w for p, w in zip(prompts, written) if asked[p] != w}}


def swap_colors(pipe: Pipeline, bank: DigitBank, codes: torch.Tensor, count: int) -> dict:
    """Mean chance of the swap answer's first and second color tokens, teacher-forced, over `count` swaps; with the
    pointer (model.copy), where it stands at the first: its gate, and its weight on the prompt's two color tokens."""
    chosen = examples(bank, count, [0, 5, 23], families=["swap"])
    first, second, pointer = [], [], []
    for _, ids, probabilities, hidden in teacher_forced(pipe, chosen, codes):
        prompt, answer = [i for i, token in enumerate(ids) if token == pipe.vocab.begin_image]      # the <boi>s
        first.append(float(probabilities[answer, ids[answer + 1]]))
        second.append(float(probabilities[answer + 1, ids[answer + 2]]))
        if pipe.config.model.copy_head:
            gate, weights = pointer_at(pipe.model, hidden, ids, answer)
            pointer.append((gate, float(weights[prompt + 2]), float(weights[prompt + 1])))
    results = {"first color (the prompt's background)": round(float(np.mean(first)), 3),
               "second color (the prompt's digit), given the first": round(float(np.mean(second)), 3)}
    if pointer:
        gate, background, digit = np.mean(pointer, 0)
        results["pointer at the first: gate, weight on the prompt's background / digit color"] = \
            [round(float(gate), 3), round(float(background), 3), round(float(digit), 3)]
    return results


def counting_next_digits(pipe: Pipeline, bank: DigitBank, split, judge, count: int) -> dict:
    """{"after k real images": share of documents whose next drawn image is the right digit, or the previous again}
    over counting documents asking for three or four images (the sampler's shipped settings)."""
    decoder = pipe.documents
    chosen = [e for e in examples(bank, 3 * count, [0, 11, 23], families=["counting"]) if len(e.answer_images) >= 3]
    chosen = chosen[:count]
    settings = pipe.resolve_settings(pipe.document_overrides({}))
    shares = {}
    for given in (0, 1, 2):
        rows = decoder.prompt_ids([example.prompt for example in chosen], [[] for _ in chosen])
        for ids, example in zip(rows, chosen):       # the real answer images so far, as the prompt's continuation
            real = render(example.answer_images[:given], split)
            encoded = pipe.image_tokenizer.encode(torch.from_numpy(real)).cpu() if given else []
            for picture, picture_codes in zip(example.answer_images[:given], encoded):    # with its plan, if any
                ids += decoder.tokenizer.segment_ids([decoder.tokenizer.planned(picture_codes, picture.digit)])
        generator = torch.Generator(device=pipe.device).manual_seed(0)
        drawn = [decoder.continuation(ids).images[:1] for ids in decoder.write(rows, settings, generator)]
        judged = np.array([judge.predict(images)["digit"][0] if len(images) else -1 for images in drawn])
        wanted = np.array([example.answer_images[given].digit for example in chosen])
        shares[f"after {given} real images"] = {"right": float(np.mean(judged == wanted)),
                                                "previous again": float(np.mean(judged == wanted - 1)),
                                                "none": float(np.mean(judged == -1))}
    return shares


def counting_images_drawn(pipe: Pipeline, bank: DigitBank, split, judge, count: int) -> dict:
    """Free-running counting documents (the shipped settings): by images asked, the share that drew as many, fewer
    or more; by place in the answer, the share of drawings that show the asked digit (of those drawn there)."""
    chosen = examples(bank, count, [0, 12, 23], families=["counting"])
    drawn, places = defaultdict(Counter), defaultdict(list)
    for example, continuation in zip(chosen, continued(pipe, chosen, split)):
        asked = [picture.digit for picture in example.answer_images]
        judged = judge.predict(continuation.images)["digit"].tolist() if len(continuation.images) else []
        drawn[f"asked {len(asked)}"][("as many" if len(judged) == len(asked) else
                                      "fewer" if len(judged) < len(asked) else "more")] += 1
        for place, (wanted, got) in enumerate(zip(asked, judged), 1):
            places[f"image {place}"].append(wanted == got)
    counts = {asked: {key: round(number / sum(found.values()), 3) for key, number in found.items()}
              | {"documents": sum(found.values())} for asked, found in sorted(drawn.items())}
    return {"drawn": counts, "digit right": {place: round(float(np.mean(right)), 3) for place, right in sorted(places.items())}}


@torch.no_grad()
def continued(pipe: Pipeline, chosen: list, split) -> list:
    images = [list(render(example.prompt_images, split)) for example in chosen]
    return [rows[0] for rows in pipe.continue_documents([e.prompt for e in chosen], images, n=1, seed=0)]


def answered_digit(text: str) -> int | None:
    """The digit an answer's first word names, or None when it names none."""
    first = split_words(text)[:1]
    return DIGIT_WORDS.index(first[0]) if first and first[0] in DIGIT_WORDS else None


def addition_answers(pipe: Pipeline, bank: DigitBank, split, count: int) -> dict:
    """Shares of greedy answers naming the sum, the first addend, the second, or something else; of the wrong
    answers, their distance from the sum (None: no digit), and per sum how many of its documents were wrong."""
    chosen = examples(bank, count, [0, 8, 23], families=["addition"])
    named, off_by, asked, wrong = Counter(), Counter(), Counter(), Counter()
    for example, continuation in zip(chosen, continued(pipe, chosen, split)):
        first, second = (picture.digit for picture in example.prompt_images)
        total, digit = first + second, answered_digit(continuation.text)
        named["sum" if digit == total else "first" if digit == first else
              "second" if digit == second else "other"] += 1
        asked[total] += 1
        if digit != total:
            wrong[total] += 1
            off_by[None if digit is None else digit - total] += 1
    return {**{key: named[key] / count for key in ("sum", "first", "second", "other")},
            "wrong_answer_minus_sum": dict(off_by.most_common()),
            "wrong_by_sum": {total: f"{wrong[total]}/{asked[total]}" for total in sorted(asked)}}


def next_digit_words(pipe: Pipeline, bank: DigitBank, split, count: int) -> dict:
    """"<image> what comes next ?": shares of answers whose word names the next digit, the shown one again, another,
    or none (the shipped settings)."""
    chosen = examples(bank, count, [0, 9, 23], families=["what comes next"])
    named = Counter()
    for example, continuation in zip(chosen, continued(pipe, chosen, split)):
        shown = example.prompt_images[0].digit
        digit = answered_digit(continuation.text)
        named["none" if digit is None else "next" if digit == shown + 1 else "shown" if digit == shown else "other"] += 1
    return {key: named[key] / count for key in ("next", "shown", "other", "none")}


def copy_errors(pipe: Pipeline, bank: DigitBank, split, count: int) -> dict:
    """Digit color edits decoded greedily: documents by miscopied shape tokens, and errors per grid cell."""
    chosen = examples(bank, count, [0, 3, 23], families=["digit color"])
    pairs = [(render(example.prompt_images, split)[0], continuation.images[0])      # documents that drew an image
             for example, continuation in zip(chosen, continued(pipe, chosen, split)) if len(continuation.images)]
    asked, answered = (pipe.image_tokenizer.encode(torch.from_numpy(np.stack(side))) for side in zip(*pairs))
    wrong = (asked[:, 2:] != answered[:, 2:]).numpy()                                  # (N, 49): shape tokens
    side = int(round(wrong.shape[1] ** 0.5))
    # How far off is a miscopied patch? Both shapes drawn in the prompt's two colors, pixels compared per cell.
    recolored = answered.clone()
    recolored[:, :2] = asked[:, :2]
    same_colors = [pipe.image_tokenizer.decode(ids).numpy() for ids in (asked, recolored)]
    cell = same_colors[0].shape[1] // side
    differ = (same_colors[0] != same_colors[1]).any(-1)                                  # (N, 28, 28)
    per_cell = differ.reshape(len(differ), side, cell, side, cell).sum((2, 4)).reshape(len(differ), -1)   # (N, 49)
    return {"documents_by_miscopied_tokens": dict(sorted(Counter(wrong.sum(1).tolist()).items())),
            "exact_copies": float((wrong.sum(1) == 0).mean()),
            "errors_per_cell": wrong.sum(0).reshape(side, side).tolist(),
            "miscopied_tokens_by_pixels_off": dict(sorted(Counter(per_cell[wrong].tolist()).items()))}


def exact_edits(pipe: Pipeline, bank: DigitBank, codes: torch.Tensor, count: int) -> list[tuple[list[int], list[int]]]:
    """`count` digit color edits of the validation digits as (prompt ids up to <eop>, the exact answer's ids)."""
    chosen = examples(bank, count, [0, 3, 23], families=["digit color"])
    full = example_documents(chosen, codes, pipe.image_tokenizer.recolor, pipe.documents.tokenizer)
    ends = [ids.index(pipe.vocab.end_prompt) + 1 for ids in full]
    return [(ids[:end], ids[end:]) for ids, end in zip(full, ends)]


def answer_logits(pipe: Pipeline, prompt: list[int], answer: list[int], guidance: float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(len(answer), V) logits predicting each answer token, conditional and guided as the sampler draws (the
    unconditional stream reads the document without its words, which all sit in the prompt)."""
    conditional, free, _ = read_with_and_without_words(pipe, prompt + answer)
    conditional, free = conditional[-len(answer) - 1:-1], free[-len(answer) - 1:-1]
    return conditional, guided_logits(conditional, free, guidance)


def copy_search(pipe: Pipeline, bank: DigitBank, codes: torch.Tensor, count: int) -> dict:
    """Digit color edits: the share written exactly, and among the others how often the exact answer is likelier
    than the written one (log-likelihood of the answer's tokens, conditional and guided), with the mean gap."""
    edits = exact_edits(pipe, bank, codes, count)
    settings = pipe.resolve_settings(pipe.document_overrides({}))
    written = pipe.documents.write([prompt for prompt, _ in edits], settings, torch.Generator().manual_seed(0))

    def likelihood(prompt: list[int], answer: list[int]) -> tuple[float, float]:
        target = torch.tensor(answer, device=pipe.device)[:, None]
        return tuple(float(F.log_softmax(logits, -1).gather(1, target).sum())
                     for logits in answer_logits(pipe, prompt, answer, settings.guidance))

    gaps = []
    for (prompt, exact), answer in zip(edits, written):
        if answer != exact:
            (exact_c, exact_g), (own_c, own_g) = likelihood(prompt, exact), likelihood(prompt, answer)
            gaps.append((exact_c - own_c, exact_g - own_g))
    gaps = np.array(gaps).reshape(-1, 2)
    return {"exact": 1 - len(gaps) / count, "wrong": len(gaps),
            "exact_likelier_conditional": float((gaps[:, 0] > 0).mean()) if len(gaps) else None,
            "exact_likelier_guided": float((gaps[:, 1] > 0).mean()) if len(gaps) else None,
            "mean_gap_nats_conditional": float(gaps[:, 0].mean()) if len(gaps) else None,
            "mean_gap_nats_guided": float(gaps[:, 1].mean()) if len(gaps) else None}


def copy_teacher_forced(pipe: Pipeline, bank: DigitBank, codes: torch.Tensor, count: int) -> dict:
    """Digit color edits read with the exact answer as the prefix (teacher forcing), guided as the sampler draws:
    at each of the answer's shape tokens, is the prompt's patch the likeliest token, and when not, how far down
    it is and how much probability it keeps beside the likeliest. A copy that is near but not first points at
    codes the model cannot tell apart; one far down, at a copy never attempted."""
    settings = pipe.resolve_settings(pipe.document_overrides({}))
    plan = int(pipe.vocab.plan_tokens)                  # the answer: <boi>, two colors, its plan if any, the shape, ...
    shape = slice(1 + 2 + plan, 1 + pipe.vocab.image_length + plan)
    first, ranks, kept, top = [], Counter(), [], []
    for prompt, answer in exact_edits(pipe, bank, codes, count):
        probs = F.softmax(answer_logits(pipe, prompt, answer, settings.guidance)[1][shape], -1)
        target = torch.tensor(answer[shape], device=pipe.device)
        p_target = probs.gather(1, target[:, None])[:, 0]
        rank = (probs > p_target[:, None]).sum(1) + 1                                       # 1 = the likeliest
        first.append(rank == 1)
        for r, pt, pmax in zip(rank.tolist(), p_target.tolist(), probs.max(1).values.tolist()):
            if r > 1:
                ranks[r if r <= 4 else "5+"] += 1
                kept.append(pt)
                top.append(pmax)
    first = torch.stack(first)
    return {"shape_tokens_first": float(first.float().mean()),
            "documents_all_first": float(first.all(1).float().mean()),
            "rank_when_not_first": {str(key): ranks[key] for key in (2, 3, 4, "5+")},
            "mean_probability_of_the_copy_when_not_first": float(np.mean(kept)) if kept else None,
            "mean_probability_of_the_likeliest_then": float(np.mean(top)) if top else None}


def copy_pointer(pipe: Pipeline, bank: DigitBank, codes: torch.Tensor, count: int) -> dict:
    """Digit color edits read with the exact answer as the prefix: at each of the answer's shape tokens, the pointer's
    gate and its weight on the prompt image's patch at the same slot; at the slots where the copy is not the likeliest
    token, where the pointer's heaviest weight lies, as an offset in slots from that patch (+-1: the patch beside it,
    +-7: the one above or below in the 7x7 grid)."""
    chosen = examples(bank, count, [0, 3, 23], families=["digit color"])
    gates, aligned, offsets = [], [], Counter()
    plan = int(pipe.vocab.plan_tokens)                          # the answer's shape sits one further past its plan
    for _, ids, probabilities, hidden in teacher_forced(pipe, chosen, codes):
        prompt, answer = (i + 1 for i, token in enumerate(ids) if token == pipe.vocab.begin_image)   # first slots
        for slot in range(2, pipe.vocab.image_length):
            position = answer + plan + slot - 1                        # predicts the answer's token at this slot
            gate, weights = pointer_at(pipe.model, hidden, ids, position)
            gates.append(gate)
            aligned.append(float(weights[prompt + slot]))
            if int(probabilities[position].argmax()) != ids[answer + plan + slot]:
                offsets[int(weights.argmax()) - (prompt + slot)] += 1
    return {"shape_slots": len(gates), "mean_gate": round(float(np.mean(gates)), 3),
            "mean_weight_on_the_same_slot": round(float(np.mean(aligned)), 3),
            "copy_not_likeliest": sum(offsets.values()),
            "pointer_offset_there": dict(offsets.most_common(8))}


# name -> probe(pipe, inputs); inputs holds the validation bank, split, token codes, judge and count.
PROBES = {
    "counting_stop_chance": lambda pipe, inputs: stop_chances(pipe, inputs.bank, inputs.codes, inputs.count),
    "counting_guided_stop": lambda pipe, inputs: guided_stop_choices(pipe, inputs.bank, inputs.codes, inputs.count),
    "counting_words_stop_chance": lambda pipe, inputs: word_stop_chances(pipe, inputs.bank, inputs.codes,
                                                                        inputs.count),
    "counting_words_written": lambda pipe, inputs: counting_words_written(pipe, inputs.bank),
    "swap_colors": lambda pipe, inputs: swap_colors(pipe, inputs.bank, inputs.codes, inputs.count),
    "counting_next_digit": lambda pipe, inputs: counting_next_digits(pipe, inputs.bank, inputs.split, inputs.judge(),
                                                                     inputs.count),
    "counting_images_drawn": lambda pipe, inputs: counting_images_drawn(pipe, inputs.bank, inputs.split,
                                                                         inputs.judge(), inputs.count),
    "addition_answers": lambda pipe, inputs: addition_answers(pipe, inputs.bank, inputs.split, inputs.count),
    "next_digit_words": lambda pipe, inputs: next_digit_words(pipe, inputs.bank, inputs.split, inputs.count),
    "digit_color_copies": lambda pipe, inputs: copy_errors(pipe, inputs.bank, inputs.split, inputs.count),
    "digit_color_search": lambda pipe, inputs: copy_search(pipe, inputs.bank, inputs.codes, inputs.count),
    "digit_color_teacher_forced": lambda pipe, inputs: copy_teacher_forced(pipe, inputs.bank, inputs.codes,
                                                                           inputs.count),
    "digit_color_pointer": lambda pipe, inputs: copy_pointer(pipe, inputs.bank, inputs.codes, inputs.count),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="raster")
    parser.add_argument("--documents", type=int, default=200, help="documents per probe")
    parser.add_argument("--probes", nargs="*", default=list(PROBES), choices=list(PROBES), metavar="PROBE",
                        help=f"which probes to run (default all: {', '.join(PROBES)})")
    parser.add_argument("--out", default="runs/document_probes.json")
    args = parser.parse_args()
    pipe = Pipeline.from_pretrained(args.checkpoint)
    split = load_splits(pipe.config.data_seed).validation
    bank = DigitBank(split.digits, split.foreground, split.background)
    codes = pipe.image_tokenizer.encode(torch.as_tensor(split.images))
    judge = lambda: load_or_train_judge(load_colored_mnist(pipe.config.data_seed)[0], default_cache_dir(),  # noqa: E731
                                        pipe.config.data_seed)                          # trained once, then cached
    inputs = SimpleNamespace(bank=bank, split=split, codes=codes, judge=judge, count=args.documents)
    results = {"checkpoint": args.checkpoint, "documents": args.documents}
    for name in args.probes:
        results[name] = PROBES[name](pipe, inputs)
    for key, value in results.items():
        print(f"{key}: {value}")
    write_json(args.out, results)


if __name__ == "__main__":
    main()
