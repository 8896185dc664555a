"""A small world of facts: real moons and planets, real cities and countries, fictional people.

The facts come as :class:`Fact` triples (:func:`facts_world`) and are rendered
as sentences (:func:`facts_corpus`), question/answer pairs
(:func:`facts_questions`) and sentences with exact BIO named-entity tags
(:func:`ner_dataset`). Corpora are Hugging Face ``datasets.Dataset`` objects
(``datasets`` is imported inside the functions).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..checks import check_int

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset

__all__ = ["Fact", "facts_world", "facts_corpus", "facts_questions", "ner_dataset", "NER_LABELS"]


# Moons are real (IAU names); cities are real and in the right countries;
# people are fictional (a first name and a surname drawn at random).

_MOONS = {  # planet -> some of its moons
    "Earth": ["the Moon"],
    "Mars": ["Phobos", "Deimos"],
    "Jupiter": ["Io", "Europa", "Ganymede", "Callisto", "Amalthea", "Himalia", "Thebe", "Metis"],
    "Saturn": ["Titan", "Enceladus", "Mimas", "Tethys", "Dione", "Rhea", "Iapetus", "Hyperion", "Phoebe", "Janus"],
    "Uranus": ["Miranda", "Ariel", "Umbriel", "Titania", "Oberon", "Puck"],
    "Neptune": ["Triton", "Nereid", "Proteus", "Larissa"],
}
_CITIES = {  # country -> some of its cities
    "Argentina": ["Buenos Aires", "Rosario"], "Australia": ["Sydney", "Melbourne", "Perth"],
    "Brazil": ["Rio de Janeiro", "Recife"], "Canada": ["Toronto", "Montreal", "Vancouver"],
    "China": ["Beijing", "Shanghai"], "Egypt": ["Cairo", "Alexandria"], "France": ["Paris", "Lyon", "Marseille"],
    "Germany": ["Berlin", "Hamburg", "Munich"], "Greece": ["Athens", "Thessaloniki"],
    "India": ["Mumbai", "New Delhi", "Chennai"], "Ireland": ["Dublin", "Cork"], "Italy": ["Rome", "Milan", "Naples"],
    "Japan": ["Tokyo", "Osaka", "Kyoto"], "Kenya": ["Nairobi", "Mombasa"], "Mexico": ["Mexico City", "Guadalajara"],
    "Morocco": ["Casablanca", "Marrakesh"], "New Zealand": ["Auckland", "Wellington"], "Nigeria": ["Lagos", "Abuja"],
    "Norway": ["Oslo", "Bergen"], "Peru": ["Lima", "Cusco"], "Poland": ["Warsaw", "Krakow"],
    "Portugal": ["Lisbon", "Porto"], "South Africa": ["Cape Town", "Johannesburg"], "South Korea": ["Seoul", "Busan"],
    "Spain": ["Madrid", "Barcelona", "Seville"], "Sweden": ["Stockholm", "Gothenburg"],
    "Thailand": ["Bangkok", "Chiang Mai"], "Turkey": ["Istanbul", "Ankara"], "Vietnam": ["Hanoi", "Da Nang"],
}
_FIRST_NAMES = ["Ada", "Bruno", "Chiara", "Dmitri", "Elena", "Farid", "Grace", "Hiroshi", "Ines", "Jonas", "Kofi",
                "Lena", "Mateo", "Nadia", "Oskar", "Priya", "Quentin", "Rosa", "Samir", "Tove", "Umar", "Vera",
                "Wei", "Ximena", "Yusuf", "Zara"]
_SURNAMES = ["Almeida", "Brandt", "Castellano", "Duarte", "Eriksen", "Fontaine", "Greaves", "Hollis", "Ivanova",
             "Jansen", "Kowalski", "Lindqvist", "Moreau", "Nakamura", "Okafor", "Petrov", "Quist", "Rinaldi", "Sato",
             "Tanaka", "Ueda", "Varga", "Whitlock", "Yilmaz", "Zielinski"]
_JOBS = ["accountant", "architect", "astronomer", "baker", "carpenter", "chemist", "dentist", "doctor",
         "electrician", "engineer", "farmer", "gardener", "journalist", "lawyer", "librarian", "musician", "nurse",
         "painter", "photographer", "pilot", "plumber", "teacher", "translator", "veterinarian"]

NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ASTRO", "I-ASTRO"]
"""BIO labels of :func:`ner_dataset`: PER people, LOC cities and countries, ASTRO moons and planets."""

# Templates: {s} subject, {o} object, {a_o} object with its article ("an engineer").
_SENTENCES = {
    "moon_of": ["{s} is a moon of {o}.", "{s} orbits {o}.", "{o} has a moon called {s}.",
                "{s} is one of the moons of {o}."],
    "city_in": ["{s} is a city in {o}.", "{s} is in {o}.", "{s} lies in {o}."],
    "lives_in": ["{s} lives in {o}.", "{s} comes from {o}.", "The home town of {s} is {o}."],
    "works_as": ["{s} works as {a_o}.", "{s} is {a_o}.", "The job of {s} is {o}."],
}
_QUESTIONS = {
    "moon_of": ["Which planet does {s} orbit?", "What planet is {s} a moon of?"],
    "city_in": ["Where is {s}?", "In which country is {s}?"],
    "lives_in": ["Where does {s} live?", "In which city does {s} live?"],
    "works_as": ["What is the job of {s}?", "What does {s} do for a living?"],
    "lives_in_country": ["In which country does {s} live?"],  # two hops: person -> city -> country
}
_TOKEN = re.compile(r"'s\b|\w+(?:-\w+)*|[^\w\s]")  # words, "'s", single punctuation marks


@dataclass(frozen=True)
class Fact:
    """One fact: ``Fact("Ganymede", "moon_of", "Jupiter", "ASTRO", "ASTRO")``.

    relation is ``"moon_of"``, ``"city_in"``, ``"lives_in"`` or ``"works_as"``;
    the types are ``"ASTRO"``, ``"LOC"``, ``"PER"`` or ``"JOB"`` (jobs are not entities).
    """

    subject: str
    relation: str
    object: str
    subject_type: str
    object_type: str


def facts_world(seed: int = 0, n_people: int = 40) -> list[Fact]:
    """The facts of a small world, in a fixed order: moons, then cities, then people.

    Moons and cities are real and always the same; ``n_people`` fictional
    people get a distinct name, a home town and a job from ``random.Random(seed)``.
    Example: ``Fact("Ganymede", "moon_of", "Jupiter", "ASTRO", "ASTRO")`` is always there.
    """
    max_people = len(_FIRST_NAMES) * len(_SURNAMES)
    check_int("n_people", n_people, 0)
    if n_people > max_people:
        raise ValueError(f"n_people must be <= {max_people}, got {n_people}")
    rng = random.Random(seed)
    facts = [Fact(m, "moon_of", p, "ASTRO", "ASTRO") for p, moons in _MOONS.items() for m in moons]
    facts += [Fact(c, "city_in", k, "LOC", "LOC") for k, cities in _CITIES.items() for c in cities]
    cities = [c for cs in _CITIES.values() for c in cs]
    names = rng.sample([f"{f} {s}" for f in _FIRST_NAMES for s in _SURNAMES], n_people)
    for name in names:
        facts.append(Fact(name, "lives_in", rng.choice(cities), "PER", "LOC"))
        facts.append(Fact(name, "works_as", rng.choice(_JOBS), "PER", "JOB"))
    return facts


def _entity_tokens(name: str, kind: str, sentence_start: bool) -> list[tuple[str, str]]:
    """Tokens and BIO tags of one filled slot: ``("the Moon", "ASTRO")`` -> ``[("the","O"), ("Moon","B-ASTRO")]``."""
    if sentence_start:
        name = name[0].upper() + name[1:]
    words = _TOKEN.findall(name)
    article = 1 if words[0].lower() == "the" and kind != "JOB" else 0
    out = [(w, "O") for w in words[:article]]
    for i, w in enumerate(words[article:]):
        out.append((w, "O" if kind == "JOB" else ("B-" if i == 0 else "I-") + kind))
    return out


def _render(template: str, fact: Fact) -> tuple[str, list[str], list[str]]:
    """Fill a template: returns (sentence, tokens, BIO tags), the tokens being exactly those of the sentence."""
    article = "an" if fact.object[0] in "aeiou" else "a"
    slots = {"s": (fact.subject, fact.subject_type), "o": (fact.object, fact.object_type),
             "a_o": (f"{article} {fact.object}", fact.object_type)}
    text, pairs = "", []
    for piece in re.split(r"(\{\w+\})", template):
        if piece.startswith("{"):
            value, kind = slots[piece[1:-1]]
            pairs += _entity_tokens(value, kind, sentence_start=text == "")
            text += value[0].upper() + value[1:] if text == "" else value
        elif piece:
            pairs += [(w, "O") for w in _TOKEN.findall(piece)]
            text += piece
    return text, [w for w, _ in pairs], [t for _, t in pairs]


def _world_or_default(world: list[Fact] | None, seed: int) -> list[Fact]:
    if world is None:
        return facts_world(seed)
    if not all(isinstance(f, Fact) for f in world):
        raise TypeError("world must be a list of Fact, as returned by facts_world()")
    return list(world)


def _sentences(world: list[Fact], seed: int, templates_per_fact: int | None, shuffle: bool) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for fact in world:
        templates = list(enumerate(_SENTENCES[fact.relation]))
        if templates_per_fact is not None:
            check_int("templates_per_fact", templates_per_fact, 1)
            templates = rng.sample(templates, min(templates_per_fact, len(templates)))
        for index, template in templates:
            text, tokens, tags = _render(template, fact)
            rows.append({"text": text, "tokens": tokens, "tags": tags, "relation": fact.relation,
                         "subject": fact.subject, "object": fact.object, "template": index})
    if shuffle:
        rng.shuffle(rows)
    return rows


def facts_corpus(world: list[Fact] | None = None, seed: int = 0, templates_per_fact: int | None = None,
                 shuffle: bool = True) -> "Dataset":
    """Sentences stating each fact with several templates: "Ganymede orbits Jupiter."

    Columns: ``text``, ``relation``, ``subject``, ``object``, ``template`` (index
    of the template used). ``templates_per_fact=None`` uses every template; an
    int samples that many per fact (to hold paraphrases out). ``world`` defaults
    to ``facts_world(seed)``.
    """
    from datasets import Dataset

    rows = _sentences(_world_or_default(world, seed), seed, templates_per_fact, shuffle)
    keys = ["text", "relation", "subject", "object", "template"]
    return Dataset.from_dict({k: [r[k] for r in rows] for k in keys})


def facts_questions(world: list[Fact] | None = None, seed: int = 0, two_hop: bool = True,
                    shuffle: bool = True) -> "Dataset":
    """Question/answer pairs about the facts: "Which planet does Ganymede orbit?" / "Jupiter".

    Columns: ``question``, ``answer``, ``prompt`` (``"Q: <question> A:"``),
    ``text`` (``"Q: <question> A: <answer>"``), ``relation``, ``subject``.
    With ``two_hop=True`` it adds "In which country does <person> live?",
    answerable only by chaining two facts (relation ``"lives_in_country"``).
    """
    from datasets import Dataset

    world = _world_or_default(world, seed)
    country_of = {f.subject: f.object for f in world if f.relation == "city_in"}
    triples = [(f.relation, f.subject, f.object) for f in world]
    if two_hop:
        triples += [("lives_in_country", f.subject, country_of[f.object])
                    for f in world if f.relation == "lives_in" and f.object in country_of]
    rows = []
    for relation, subject, answer in triples:
        for template in _QUESTIONS[relation]:
            question = template.format(s=subject)
            question = question[0].upper() + question[1:]
            rows.append({"question": question, "answer": answer, "prompt": f"Q: {question} A:",
                         "text": f"Q: {question} A: {answer}", "relation": relation, "subject": subject})
    if shuffle:
        random.Random(seed).shuffle(rows)
    return Dataset.from_dict({k: [r[k] for r in rows] for k in rows[0]} if rows else {"question": []})


def ner_dataset(world: list[Fact] | None = None, seed: int = 0, templates_per_fact: int | None = None,
                shuffle: bool = True) -> "Dataset":
    """Named-entity tags for the sentences of :func:`facts_corpus` (same arguments, same order).

    Columns: ``text``, ``tokens`` (words and punctuation), ``tags`` (BIO strings
    from :data:`NER_LABELS`) and ``tag_ids`` (their indices). The tags are exact:
    they come from the template slots, not from a tagger.
    Example: "Ganymede orbits Jupiter." -> tokens ``["Ganymede", "orbits", "Jupiter", "."]``,
    tags ``["B-ASTRO", "O", "B-ASTRO", "O"]``.
    """
    from datasets import Dataset

    rows = _sentences(_world_or_default(world, seed), seed, templates_per_fact, shuffle)
    index = {label: i for i, label in enumerate(NER_LABELS)}
    return Dataset.from_dict({"text": [r["text"] for r in rows], "tokens": [r["tokens"] for r in rows],
                              "tags": [r["tags"] for r in rows],
                              "tag_ids": [[index[t] for t in r["tags"]] for r in rows]})

