"""``synthetic:world-mc``: multiple-choice questions over a generated world of creatures.

The world has kinds of creatures (fish, bird, ...), each with a fixed habitat, food
and sound, and named individuals with a kind and a colour. Three question types,
three choices each (chance = 1/3), mixed evenly:

* **habitat / food / sound** ("The zorim is a bird. Where does the zorim live?"):
  needs the kind -> property rule, which the pretraining corpus states in prose;
* **colour** ("The zorim is red and the kelta is blue. What colour is the kelta?"):
  needs reading the context.

The corpus (``corpus.txt``) states the rules and describes individuals in plain
sentences, never in the ``Q: ... A:`` format, so a briefly pretrained tiny model
knows the world but not the task; fine-tuning teaches the task. Everything is a
pure function of the options (seeded), so the data are identical on every machine.
"""

from __future__ import annotations

import random
from pathlib import Path

from ..config import ConfigError
from . import split_rows

DEFAULTS = {"n_train": 2000, "n_validation": 200, "n_test": 300, "seed": 0,
            "n_names": 400, "corpus_docs": 6000}

KINDS = {  # kind: (habitat, food, sound)
    "fish": ("river", "worms", "bubbles"),
    "bird": ("tree", "seeds", "songs"),
    "frog": ("pond", "flies", "croaks"),
    "mole": ("tunnel", "roots", "squeaks"),
    "goat": ("hill", "grass", "bleats"),
    "bear": ("cave", "berries", "growls"),
    "crab": ("beach", "shells", "clicks"),
    "bat": ("barn", "moths", "chirps"),
}
COLOURS = ["red", "blue", "green", "yellow", "white", "black", "brown", "grey"]
PROPERTY = {  # property index, question, prose template
    "habitat": (0, "Where does the {n} live?", "A {k} lives in the {v}."),
    "food": (1, "What does the {n} eat?", "A {k} eats {v}."),
    "sound": (2, "What sound does the {n} make?", "A {k} makes {v}."),
}
_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "sh", "tr", "kl", "br"]
_VOWELS = ["a", "e", "i", "o", "u"]


def make_names(n: int, rng: random.Random) -> list[str]:
    names: set[str] = set()
    while len(names) < n:
        syl = rng.choice([2, 2, 3])
        w = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syl)) + rng.choice(["", "m", "n", "k", "l"])
        names.add(w)
    return sorted(names)


def _choices(rng: random.Random, answer: str, pool: list[str], must: str | None = None) -> tuple[list[str], int]:
    others = [p for p in pool if p != answer and p != must]
    distract = ([must] if must and must != answer else []) + rng.sample(others, 2)
    opts = [answer] + distract[:2]
    rng.shuffle(opts)
    return opts, opts.index(answer)


def make_item(i: int, rng: random.Random, names: list[str], world: dict[str, tuple[str, str]]) -> dict:
    qtype = rng.choice(["habitat", "food", "sound", "colour"])
    n = rng.choice(names)
    kind, colour = world[n]
    if qtype == "colour":
        m = rng.choice([x for x in names if world[x][1] != colour])
        pair = [(n, colour), (m, world[m][1])]
        rng.shuffle(pair)
        context = f"The {pair[0][0]} is {pair[0][1]} and the {pair[1][0]} is {pair[1][1]}."
        question = f"What colour is the {n}?"
        choices, label = _choices(rng, colour, COLOURS, must=world[m][1])
    else:
        idx, q, _ = PROPERTY[qtype]
        context = f"The {n} is a {kind}."
        question = q.format(n=n)
        choices, label = _choices(rng, KINDS[kind][idx], [v[idx] for v in KINDS.values()])
    return {"id": f"world-{i}", "type": qtype, "context": context, "question": question,
            "choices": choices, "label": label}


def make_corpus(n_docs: int, rng: random.Random, names: list[str], world: dict[str, tuple[str, str]]) -> list[str]:
    docs = []
    for _ in range(n_docs):
        r = rng.random()
        if r < 0.4:  # the rules, in prose
            k = rng.choice(list(KINDS))
            parts = [PROPERTY[p][2].format(k=k, v=KINDS[k][PROPERTY[p][0]]) for p in rng.sample(list(PROPERTY), 3)]
            docs.append(" ".join(parts))
        elif r < 0.8:  # an individual
            n = rng.choice(names)
            k, c = world[n]
            p = rng.choice(list(PROPERTY))
            fact = PROPERTY[p][2].replace("A {k}", "The {k}").format(k=n, v=KINDS[k][PROPERTY[p][0]])
            docs.append(f"The {n} is a {c} {k}. {fact}")
        else:  # two individuals side by side
            a, b = rng.sample(names, 2)
            docs.append(f"The {a} is {world[a][1]}. The {b} is {world[b][1]}. The {a} and the {b} are friends.")
    return docs


def build(name: str, opts: dict, out: Path):
    if name != "world-mc":
        raise ConfigError(f"data.source = 'synthetic:{name}': unknown synthetic dataset; known: ['world-mc']")
    if opts["n_names"] < 2:
        raise ConfigError(f"data.options.n_names = {opts['n_names']}: the world needs at least 2 names")
    rng = random.Random(opts["seed"])
    names = make_names(opts["n_names"], rng)
    world = {n: (rng.choice(list(KINDS)), rng.choice(COLOURS)) for n in names}
    if len({c for _, c in world.values()}) < 2:  # colour questions need two colours
        raise ConfigError(f"data.options.n_names = {opts['n_names']}: every name drew the same colour; "
                          f"use more names")
    total = opts["n_train"] + opts["n_validation"] + opts["n_test"]
    items, seen = [], set()
    i = 0
    while len(items) < total and i < total * 20:
        it = make_item(i, rng, names, world)
        key = (it["context"], it["question"])
        i += 1
        if key in seen:
            continue
        seen.add(key)
        items.append(it)
    if len(items) < total:
        raise ConfigError(f"data.options: only {len(items)} distinct questions could be generated from "
                          f"n_names = {opts['n_names']} names, fewer than n_train + n_validation + n_test "
                          f"= {total}; raise n_names or lower the split sizes")
    splits = split_rows(items, opts["n_validation"], opts["n_test"], opts["n_train"], opts["seed"])
    corpus = make_corpus(opts["corpus_docs"], rng, names, world)
    meta = {"description": "generated creatures world: kind->habitat/food/sound rules and in-context colours",
            "chance": 1 / 3}
    return splits, meta, {"corpus.txt": "\n".join(corpus) + "\n"}
