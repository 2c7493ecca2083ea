"""Build seeded sample data for sluice from text already on the machine.

The clean text is the Python standard library's own documentation: the docstrings of its
modules, classes and functions (via `inspect.getdoc`) for the web-like documents and the
instruction data, and the language reference that `pydoc` ships (`pydoc_data.topics`) for
the book-like second source. Into the web documents the script mixes the kinds of rows a
cleaning recipe must handle: exact and near duplicates, boilerplate pages, spam, HTML,
very short texts, other languages and malformed lines. Every injected row is labelled in
`ground_truth.json` so tests can check that a recipe finds them.

The same seed gives byte-identical files on the same Python version (docstrings change
between Python releases).

    python examples/make_sample_data.py [--out DIR] [--seed 0] [--docs 3000]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib
import inspect
import io
import json
import pkgutil
import random
import re
import sys
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

# Modules with side effects on import (a browser, a GUI, printed text) or tests, not docs.
SKIP_MODULES = {"antigravity", "this", "idlelib", "turtledemo", "tkinter", "turtle", "test",
                "lib2to3", "ensurepip", "pydoc_data"}
# Clean documents must differ from each other: a candidate sharing this share of its word
# 5-grams with an earlier one (mirrored docs such as posixpath/ntpath) is left out, so the
# only near duplicates in the data are the injected ones.
NATURAL_SIMILARITY_LIMIT = 0.3
NEAR_DUPLICATE_RATES = (0.02, 0.05, 0.1, 0.2)

# Share of all web rows (both shards) per injected kind; the rest are clean documents.
WEB_KIND_SHARES = {
    "exact_duplicate": 0.05,
    "near_duplicate": 0.05,
    "boilerplate": 0.03,
    "spam": 0.03,
    "html": 0.03,
    "short": 0.03,
    "non_english": 0.03,
    "broken_json": 0.004,
    "non_object_json": 0.001,
    "missing_text": 0.003,
    "numeric_text": 0.002,
    "null_text": 0.002,
}
SFT_KIND_SHARES = {
    "exact_duplicate": 0.05,
    "empty_output": 0.02,
    "repetitive_output": 0.02,
    "broken_json": 0.01,
    "missing_text": 0.01,
    "null_text": 0.005,
}
MALFORMED_KINDS = ("broken_json", "non_object_json", "missing_text", "numeric_text",
                   "null_text")

NON_ENGLISH = {
    "de": [
        "Das Wetter ist heute sehr schön, deshalb gehen wir am Nachmittag im Park spazieren.",
        "Die Bibliothek öffnet am Montag um neun Uhr und schließt am Abend um acht.",
        "Mein Bruder arbeitet seit drei Jahren als Ingenieur in einer kleinen Firma in Hamburg.",
        "Wir haben gestern Abend ein ausgezeichnetes Restaurant in der Altstadt gefunden.",
        "Der Zug nach München hatte leider wieder einmal zwanzig Minuten Verspätung.",
        "Im Sommer fahren viele Familien an die Ostsee, um sich am Strand zu erholen.",
        "Die neue Ausstellung im Museum zeigt Gemälde aus dem neunzehnten Jahrhundert.",
        "Kannst du mir bitte erklären, wie diese Maschine richtig funktioniert?",
        "Nach dem Abendessen haben wir noch lange über Politik und Geschichte gesprochen.",
        "Der Garten hinter dem Haus ist voller Blumen, Apfelbäume und alter Sträucher.",
    ],
    "fr": [
        "Le marché du samedi matin est toujours plein de fruits frais et de fromages locaux.",
        "Nous avons visité un petit village au bord de la mer pendant les vacances d'été.",
        "La bibliothèque municipale propose des ateliers d'écriture pour les enfants.",
        "Mon grand-père racontait souvent des histoires de sa jeunesse à la campagne.",
        "Il faut réserver une table à l'avance, car ce restaurant est très populaire.",
        "Le train pour Lyon partira avec un retard d'environ quinze minutes.",
        "Elle apprend le piano depuis trois ans et joue déjà des morceaux difficiles.",
        "Après la pluie, les rues de la vieille ville brillent sous la lumière des lampadaires.",
        "Pourriez-vous m'indiquer le chemin le plus court pour aller à la gare ?",
        "Les étudiants préparent leurs examens dans une ambiance calme et studieuse.",
    ],
    "es": [
        "El mercado central abre todos los días desde muy temprano por la mañana.",
        "Mis amigos y yo fuimos a la playa el fin de semana pasado para descansar.",
        "La película que vimos anoche tenía una historia muy emocionante y bien contada.",
        "Necesitamos comprar pan, leche y algunas frutas antes de volver a casa.",
        "El museo de la ciudad tiene una colección impresionante de arte moderno.",
        "Mi abuela cocina la mejor paella de toda la familia cada domingo.",
        "Durante el invierno, las montañas del norte se cubren completamente de nieve.",
        "¿Sabes a qué hora sale el próximo autobús hacia el centro de la ciudad?",
        "Los niños juegan en el parque mientras sus padres conversan en un banco.",
        "Estudiar otro idioma abre muchas puertas en el mundo profesional.",
    ],
    "zh": [
        "今天天气很好，我们打算下午去公园散步。",
        "这家餐厅的饺子非常好吃，每到周末都有很多人排队。",
        "我的妹妹正在大学学习计算机科学，她很喜欢编程。",
        "图书馆每天早上八点开门，晚上十点关门。",
        "春节期间，很多人会回到家乡和家人一起过年。",
        "这本小说讲述了一个年轻人在大城市奋斗的故事。",
        "请问去火车站应该坐哪一路公交车？",
        "我们昨天晚上看了一场非常精彩的足球比赛。",
        "山上的空气很新鲜，风景也特别美丽。",
        "学习一门新的语言需要耐心和坚持。",
    ],
    "ru": [
        "Сегодня утром мы долго гуляли по набережной и смотрели на реку.",
        "Моя сестра работает врачом в большой городской больнице.",
        "В этом магазине всегда можно купить свежий хлеб и вкусные пирожки.",
        "Летом мы обычно ездим на дачу к бабушке и дедушке.",
        "Поезд в Москву отправляется с третьей платформы через десять минут.",
        "Эта книга рассказывает о жизни простых людей в маленьком городе.",
        "Вчера вечером в театре показывали новую постановку известной пьесы.",
        "Скажите, пожалуйста, как пройти к ближайшей станции метро?",
        "Зимой в лесу очень тихо, и снег лежит до самой весны.",
        "Дети с удовольствием помогали родителям украшать ёлку.",
    ],
}

COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Soylent",
             "Tyrell", "Cyberdyne", "Wonka", "Stark", "Gringotts"]
NAV_ITEMS = ["Home", "About", "Blog", "Products", "Pricing", "Contact", "Login", "Sign up",
             "Careers", "Support", "FAQ", "Docs", "News", "Shop", "Events", "Partners"]
COOKIE_BANNERS = [
    "We use cookies to improve your experience. By continuing to browse, you agree to our "
    "use of cookies.",
    "This site uses cookies. Accept all | Reject all | Manage preferences",
    "Cookies help us deliver our services. Accept cookies",
    "We value your privacy. Accept | Customize | Decline",
]
CALLS_TO_ACTION = [
    "Click here to subscribe to our newsletter!", "Click here for more information.",
    "Read more »", "Share: Facebook | Twitter | LinkedIn | Email", "Back to top ↑",
    "Skip to main content", "Sign in to leave a comment.", "Related posts",
    "« Previous | Next »", "Loading comments...", "Click here to download the app!",
]
FOOTERS = ["© 2026 {company}. All rights reserved.",
           "Privacy Policy | Terms of Service | Cookie Settings | Sitemap",
           "Powered by {company} CMS", "Follow {company} on social media"]
SPAM_PHRASES = ["buy now", "cheap pills", "best price", "limited offer", "act fast",
                "free money", "work from home", "lose weight fast", "casino bonus",
                "miracle cure", "win big", "click here", "100% guaranteed", "order today"]
SPAM_SYMBOLS = ["★★★", "☆☆☆", ">>>", "<<<", "###", "$$$", "%%%", "@@@", "^^^", "~~~", "***",
                "(((", ")))", "!!!", "|||", "+++", "€€€", "♥♥♥"]
SPAM_TLDS = ["biz", "info", "xyz", "top", "club"]
SHORT_TEMPLATES = ["See {w}.", "{W}?", "Thanks!", "+1", "{W} rocks", "Re: {w}", "lol {w}",
                   "{W} {w2}", "Page not found", "Loading...", "ok {w}", "TODO: {w}"]
INSTRUCTIONS = [
    "Explain what `{qual}` does.",
    "Summarize the following Python documentation in one sentence.",
    "Which standard library module defines `{name}`?",
    "Write the docstring for `{qual}`.",
]
REPETITIVE_OUTPUTS = ["I don't know.", "lol", "yes", "As an AI,", "Please try again."]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "data",
                        help="output folder (default: examples/data beside this script)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--docs", type=int, default=3000,
                        help="web rows in both shards; the other files scale with it "
                             "(default 3000)")
    args = parser.parse_args(argv)
    if args.docs < 60:
        parser.error("--docs must be at least 60 so that every kind of row occurs")
    truth = build(args.out, args.seed, args.docs)
    print_counts(truth)


def build(out: Path, seed: int, docs: int) -> dict:
    """Write every sample file under `out` and return the ground truth (also written)."""
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    docstrings = collect_docstrings()
    vocabulary = sorted({w for _, _, d in docstrings for w in re.findall(r"\b[a-z]{3,12}\b", d)})
    keys = KeySet()
    truth = {"seed": seed, "docs": docs, "python": sys.version.split()[0], "files": {}}

    web_rows, web_summary = build_web(docstrings, vocabulary, keys, rng, docs)
    pairs = write_web(out, web_rows, docs - docs // 6, truth, rng)
    kinds = collections.Counter(r["kind"] for r in web_rows)
    truth["web"] = {"kinds": dict(sorted(kinds.items())), **web_summary, **pairs}

    sft_lines, sft_labels = build_sft(docstrings, rng, docs // 3)
    (out / "sft.jsonl").write_text("".join(line + "\n" for line in sft_lines), encoding="utf-8")
    truth["files"]["sft.jsonl"] = file_truth(sft_labels)

    books = build_books(docs // 6)
    pq.write_table(pa.Table.from_pylist(books), out / "books.parquet")
    truth["files"]["books.parquet"] = {"rows": len(books)}

    (out / "ground_truth.json").write_text(json.dumps(truth, indent=1, ensure_ascii=False) + "\n",
                                           encoding="utf-8")
    return truth


# --- source text ------------------------------------------------------------------------


def collect_docstrings() -> list[tuple[str, str, str]]:
    """(module, qualified name, docstring) for public stdlib objects, sorted, each text once."""
    found: dict[str, tuple[str, str]] = {}
    for module in import_stdlib():
        for qualname, obj in public_objects(module):
            doc = inspect.getdoc(obj)
            if doc and doc not in found and prose_like(doc):
                found[doc] = (module.__name__, qualname)
    return sorted((m, q, d) for d, (m, q) in found.items())


def import_stdlib() -> list:
    modules = []
    # Private modules too (_strptime, _collections_abc): their mirrors of public ones are
    # left out later as too similar.
    names = sorted(n for n in sys.stdlib_module_names
                   if not n.startswith("__") and n not in SKIP_MODULES)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        for name in names:
            module = try_import(name)
            if module is None:
                continue
            modules.append(module)
            for info in pkgutil.iter_modules(getattr(module, "__path__", []), name + "."):
                leaf = info.name.rsplit(".", 1)[-1]
                if not leaf.startswith("_") and "test" not in leaf:
                    sub = try_import(info.name)
                    if sub is not None:
                        modules.append(sub)
    return sorted(modules, key=lambda m: m.__name__)


def try_import(name: str):
    try:
        return importlib.import_module(name)
    except BaseException:  # noqa: BLE001 - a module that cannot import here is just skipped
        return None


def public_objects(module) -> list[tuple[str, object]]:
    """The module and the public classes, functions, methods and properties it defines."""
    objects = [(module.__name__, module)]
    for name in dir(module):
        value = getattr(module, name, None)
        if name.startswith("_") or getattr(value, "__module__", None) != module.__name__:
            continue
        if not (inspect.isclass(value) or inspect.isroutine(value)):
            continue
        objects.append((f"{module.__name__}.{name}", value))
        if inspect.isclass(value):
            for attr, member in sorted(vars(value).items()):
                if not attr.startswith("_") and (inspect.isroutine(member)
                                                 or inspect.isdatadescriptor(member)):
                    objects.append((f"{module.__name__}.{name}.{attr}", member))
    return objects


def prose_like(doc: str) -> bool:
    """Docstrings that read as text, not code listings or signatures alone."""
    letters = sum(ch.isalpha() for ch in doc)
    return len(doc) >= 40 and letters / len(doc) >= 0.6 and ">>>" not in doc


def reference_topics() -> list[tuple[str, str]]:
    from pydoc_data.topics import topics

    return sorted(topics.items())


# --- web documents ----------------------------------------------------------------------


class KeySet:
    """Texts already used, compared the way the most forgiving exact dedup would: lowercase
    letters only. No two generated texts may collide unless one is meant as a duplicate."""

    def __init__(self):
        self.keys: set[str] = set()

    @staticmethod
    def key(text: str) -> str:
        return "".join(ch for ch in text.lower() if ch.isalpha())

    def __contains__(self, text: str) -> bool:
        return self.key(text) in self.keys

    def add(self, text: str) -> bool:
        """Record `text`; False (and nothing recorded) if an equal one is already there."""
        key = self.key(text)
        if key in self.keys:
            return False
        self.keys.add(key)
        return True


def build_web(docstrings, vocabulary, keys: KeySet, rng: random.Random, total: int):
    """All web rows, shuffled: dicts {kind, record|line, group, ...}."""
    counts = {kind: max(1, round(total * share)) for kind, share in WEB_KIND_SHARES.items()}
    clean_needed = total - sum(counts.values())
    pool = distinct_documents(docstrings, keys, rng)
    if len(pool) < clean_needed + counts["html"]:
        raise SystemExit(f"not enough distinct docstrings for --docs {total}; at most "
                         f"about {len(pool) * 3 // 4}")
    rng.shuffle(pool)
    clean, pool = pool[:clean_needed], pool[clean_needed:]
    rows = [web_row("clean", doc, group=i) for i, doc in enumerate(clean)]

    sources = rng.sample(range(len(clean)), counts["exact_duplicate"] + counts["near_duplicate"])
    exact_sources, near_sources = (sources[:counts["exact_duplicate"]],
                                   sources[counts["exact_duplicate"]:])
    for n, i in enumerate(exact_sources):
        variant = ("identical", "whitespace", "case")[n % 3]
        doc = dict(clean[i], text=vary(clean[i]["text"], variant),
                   url=clean[i]["url"].replace("docs.example.org", f"mirror{n % 7}.example.net"))
        rows.append(web_row("exact_duplicate", doc, group=i, variant=variant))
    for n, i in enumerate(near_sources):
        rate = NEAR_DUPLICATE_RATES[n % len(NEAR_DUPLICATE_RATES)]
        text = unique(keys, lambda: edit_words(clean[i]["text"], rate, vocabulary, rng))
        doc = dict(clean[i], text=text, url=clean[i]["url"] + f"?rev={n}")
        rows.append(web_row("near_duplicate", doc, group=i, rate=rate,
                            jaccard=round(jaccard(clean[i]["text"], text), 3)))

    for n, doc in enumerate(pool[:counts["html"]]):
        html = unique(keys, lambda: to_html(doc, rng))
        rows.append(web_row("html", dict(doc, text=html, url=f"https://www.example.com/p/{n}")))
    modules = sorted({m for m, _, _ in docstrings})
    names = [q.rsplit(".", 1)[-1] for _, q, _ in docstrings]
    makers = {"boilerplate": lambda: boilerplate_page(modules, rng),
              "spam": lambda: spam_page(rng), "short": lambda: short_text(names, modules, rng)}
    for kind, make in makers.items():
        for n in range(counts[kind]):
            text = unique(keys, make)
            rows.append(web_row(kind, synthetic(text, kind, n)))
    languages = sorted(NON_ENGLISH)
    for n in range(counts["non_english"]):
        lang = languages[n % len(languages)]
        text = unique(keys, lambda: foreign_text(lang, rng))
        rows.append(web_row("non_english", synthetic(text, "non_english", n, lang), lang=lang))
    for kind in MALFORMED_KINDS:
        rows.extend(malformed_row(kind, n, rng) for n in range(counts[kind]))

    rng.shuffle(rows)
    originals_first(rows)
    summary = {
        "exact_duplicate_variants": tally(rows, "variant"),
        "near_duplicate_rates": tally(rows, "rate"),
        "non_english_languages": tally(rows, "lang"),
    }
    return rows, summary


def originals_first(rows: list[dict]) -> None:
    """Swap each duplicate that the shuffle put before its original, so that the first of a
    group in reading order is the clean document a dedup should keep."""
    first_seen: dict[int, int] = {}
    for i, row in enumerate(rows):
        if "group" not in row:
            continue
        j = first_seen.setdefault(row["group"], i)
        if j != i and row["kind"] == "clean":
            rows[i], rows[j] = rows[j], rows[i]


def tally(rows: list[dict], field: str) -> dict[str, int]:
    return dict(sorted(collections.Counter(str(r[field]) for r in rows if field in r).items()))


def distinct_documents(docstrings, keys: KeySet, rng: random.Random) -> list[dict]:
    """Join each module's docstring paragraphs, in order, into documents of about 120 to 600
    characters, leaving out any that resembles an earlier one (NATURAL_SIMILARITY_LIMIT)."""
    by_module = collections.defaultdict(list)
    for module, qualname, doc in docstrings:
        by_module[module] += [(qualname, p) for p in doc.split("\n\n")]
    pool = DocumentPool(keys)
    for module in sorted(by_module):
        parts, target = [], rng.randint(120, 560)
        for qualname, paragraph in by_module[module]:
            parts.append((qualname, paragraph))
            if sum(len(p) for _, p in parts) >= target:
                pool.add(module, parts)
                parts, target = [], rng.randint(120, 560)
        if sum(len(p) for _, p in parts) >= 120:
            pool.add(module, parts)
    return pool.docs


class DocumentPool:
    """Documents that share under NATURAL_SIMILARITY_LIMIT of their word 5-grams with each
    other (an inverted index from 5-gram to documents finds the overlaps)."""

    def __init__(self, keys: KeySet):
        self.keys, self.docs, self.sizes = keys, [], []
        self.index: dict[tuple, list[int]] = collections.defaultdict(list)

    def add(self, module: str, parts: list[tuple[str, str]]) -> None:
        text = "\n\n".join(p for _, p in parts)
        grams = shingles(text)
        if text in self.keys:
            return
        overlap = collections.Counter(j for g in grams for j in self.index.get(g, ()))
        for j, shared in overlap.items():
            if shared / (len(grams) + self.sizes[j] - shared) >= NATURAL_SIMILARITY_LIMIT:
                return
        self.keys.add(text)
        for g in grams:
            self.index[g].append(len(self.docs))
        slug = parts[0][0].replace(".", "/")
        self.docs.append({"text": text,
                          "url": f"https://docs.example.org/{slug}/{len(self.docs)}.html",
                          "meta": {"lang": "en", "source": f"pydoc:{module}"}})
        self.sizes.append(len(grams))


def shingles(text: str, n: int = 5) -> set:
    words = text.lower().split()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / max(1, len(sa | sb))


def web_row(kind: str, doc: dict, **extra) -> dict:
    record = {"text": doc["text"], "url": doc["url"], "meta": doc["meta"]}
    return {"kind": kind, "line": json.dumps(record, ensure_ascii=False), **extra}


def synthetic(text: str, kind: str, n: int, lang: str = "en") -> dict:
    host = {"non_english": "www.example.eu", "short": "forum.example.net"}.get(kind,
                                                                             "www.example.biz")
    return {"text": text, "url": f"https://{host}/{kind}/{n}",
            "meta": {"lang": lang, "source": "crawl"}}


def unique(keys: KeySet, make) -> str:
    """Call `make` until it returns a text no earlier row has (bounded)."""
    for _ in range(1000):
        text = make()
        if keys.add(text):
            return text
    raise RuntimeError("could not generate a distinct text; the templates are too narrow")


def vary(text: str, variant: str) -> str:
    """An exact duplicate that is byte-identical or differs only in whitespace or case."""
    if variant == "whitespace":
        return "  " + text.replace(". ", ".  ").replace("\n", " \n") + "\n"
    if variant == "case":
        return text.upper() if len(text) < 200 else text[:200].upper() + text[200:]
    return text


def edit_words(text: str, rate: float, vocabulary: list[str], rng: random.Random) -> str:
    """Substitute, insert or delete about `rate` of the alphabetic words."""
    pairs = re.findall(r"(\S+)(\s*)", text)
    words = [i for i, (w, _) in enumerate(pairs) if w.isalpha()]
    chosen = sorted(rng.sample(words, max(1, min(len(words), round(rate * len(pairs))))),
                    reverse=True)
    for i in chosen:
        op = rng.choice(("substitute", "insert", "delete"))
        word, space = pairs[i]
        if op == "delete":
            del pairs[i]
        elif op == "insert":
            pairs.insert(i, (rng.choice(vocabulary), " "))
        else:
            new = rng.choice(vocabulary)
            while new == word.lower():
                new = rng.choice(vocabulary)
            pairs[i] = (new, space)
    return text[: len(text) - len(text.lstrip())] + "".join(w + s for w, s in pairs)


def to_html(doc: dict, rng: random.Random) -> str:
    title = doc["meta"]["source"].split(":", 1)[1]
    paragraphs = "".join(f"<p>{p}</p>\n" for p in doc["text"].split("\n\n"))
    css = rng.choice(["content", "main", "article-body", "post"])
    return (f"<!DOCTYPE html>\n<html><head><title>{title}</title></head>\n<body>\n"
            f"<div class=\"{css}\">\n<h1>{title}</h1>\n{paragraphs}"
            f"<a href=\"https://www.example.com/{title}\">More about {title}</a>\n"
            f"</div>\n</body></html>")


def boilerplate_page(modules: list[str], rng: random.Random) -> str:
    """A blog listing page: navigation, a cookie banner, the same teaser lines under every
    post title, and a footer."""
    company = rng.choice(COMPANIES)
    module = rng.choice(modules)
    lines = [f"{module} - {company} Blog", "Skip to main content",
             *rng.sample(NAV_ITEMS, rng.randint(8, 14)), rng.choice(COOKIE_BANNERS)]
    teaser = ["Posted by admin | 0 comments", *rng.sample(CALLS_TO_ACTION, 3)]
    for _ in range(rng.randint(6, 14)):
        lines += [f"{rng.choice(NAV_ITEMS)}: {module}", *teaser]
    lines += [f.format(company=company) for f in rng.sample(FOOTERS, 2)]
    return "\n".join(lines)


def spam_page(rng: random.Random) -> str:
    flavours = rng.sample([spam_repeated_words, spam_stretched, spam_links, spam_symbols],
                          rng.randint(1, 2))
    return "\n".join(f(rng) for f in flavours)


def spam_repeated_words(rng: random.Random) -> str:
    """Keyword stuffing: one block of phrases, repeated."""
    block = " ".join(rng.sample(SPAM_PHRASES, rng.randint(2, 4)))
    return " ".join([block] * rng.randint(8, 30))


def spam_stretched(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(8, 25)):
        word = rng.choice(SPAM_PHRASES).split()[-1]
        parts.append(word[:-1] + word[-1] * rng.randint(5, 15) + "!" * rng.randint(3, 12))
    return " ".join(parts)


def spam_links(rng: random.Random) -> str:
    items = []
    for _ in range(rng.randint(10, 30)):
        a, b = rng.sample(SPAM_PHRASES, 2)
        host = f"{a.split()[0]}-{b.split()[-1]}.example.{rng.choice(SPAM_TLDS)}"
        items.append(rng.choice([f"http://{host}/offer?id={rng.randint(1, 99999)}",
                                 f"{b.split()[0]}{rng.randint(1, 999)}@{host}"]))
    return "Visit " + " ".join(items)


def spam_symbols(rng: random.Random) -> str:
    parts = [rng.choice(SPAM_SYMBOLS) if rng.random() < 0.7 else rng.choice(SPAM_PHRASES).upper()
             for _ in range(rng.randint(20, 60))]
    return " ".join(parts)


def short_text(names: list[str], modules: list[str], rng: random.Random) -> str:
    w, w2 = rng.choice(names), rng.choice(modules)
    return rng.choice(SHORT_TEMPLATES).format(w=w, W=w.capitalize(), w2=w2)


def foreign_text(lang: str, rng: random.Random) -> str:
    sentences = NON_ENGLISH[lang]
    low = 5 if lang == "zh" else 3
    chosen = rng.sample(sentences, rng.randint(low, len(sentences) - 2))
    return ("" if lang == "zh" else " ").join(chosen)


def malformed_row(kind: str, n: int, rng: random.Random) -> dict:
    meta = {"lang": "en", "source": "crawl"}
    url = f"https://www.example.org/bad/{kind}/{n}"
    if kind == "broken_json":
        line = rng.choice([
            f'{{"text": "This line was cut off in the middle of a wo, "url": "{url}"',
            f"{{'text': 'single quotes are not JSON', 'url': '{url}'}}",
            f'{{"text": "trailing garbage", "url": "{url}"}} <EOF>',
            f'{{text: "unquoted key", url: "{url}"}}',
        ])
        return {"kind": kind, "line": line}
    record = {
        "non_object_json": ["a list", "not an object", n],
        "missing_text": {"content": f"The text sits under another key ({n}).", "url": url,
                         "meta": meta},
        "numeric_text": {"text": rng.choice([n, n + 0.5]), "url": url, "meta": meta},
        "null_text": {"text": None, "url": url, "meta": meta},
    }[kind]
    return {"kind": kind, "line": json.dumps(record)}


def write_web(out: Path, rows: list[dict], first_rows: int, truth: dict,
              rng: random.Random) -> dict:
    """web.jsonl (`first_rows` rows plus one blank line) and web2.jsonl.zst (the rest), read
    in that order. Returns where each duplicate and the document it copies are."""
    first, second = rows[:first_rows], rows[first_rows:]
    first.insert(rng.randint(1, len(first) - 1), {"kind": "blank_line", "line": ""})
    originals, pairs = {}, {"exact_duplicates": [], "near_duplicates": []}
    for name, part in (("web.jsonl", first), ("web2.jsonl.zst", second)):
        for line_no, row in enumerate(part, start=1):
            if row["kind"] == "clean":
                originals[row["group"]] = [name, line_no]
            elif "group" in row:
                entry = {"line": [name, line_no], "of": originals[row["group"]]}
                if row["kind"] == "near_duplicate":
                    pairs["near_duplicates"].append(entry | {"rate": row["rate"],
                                                             "jaccard": row["jaccard"]})
                else:
                    pairs["exact_duplicates"].append(entry | {"variant": row["variant"]})
        truth["files"][name] = file_truth([r["kind"] for r in part])
    (out / "web.jsonl").write_text("".join(r["line"] + "\n" for r in first), encoding="utf-8")
    data = "".join(r["line"] + "\n" for r in second).encode()
    (out / "web2.jsonl.zst").write_bytes(zstandard.ZstdCompressor(level=10).compress(data))
    return pairs


def file_truth(labels: list[str]) -> dict:
    return {"lines": len(labels), "kinds": dict(sorted(collections.Counter(labels).items())),
            "labels": labels}


# --- instruction data -------------------------------------------------------------------


def build_sft(docstrings, rng: random.Random, total: int) -> tuple[list[str], list[str]]:
    counts = {kind: max(1, round(total * share)) for kind, share in SFT_KIND_SHARES.items()}
    clean_needed = total - sum(counts.values())
    candidates = [(m, q, d) for m, q, d in docstrings if q != m]
    picked = rng.sample(candidates, clean_needed + counts["empty_output"]
                        + counts["repetitive_output"] + counts["missing_text"]
                        + counts["null_text"])
    examples = [instruction_example(m, q, d, n) for n, (m, q, d) in enumerate(picked)]
    rows = [("clean", e) for e in examples[:clean_needed]]
    rest = iter(examples[clean_needed:])
    for _ in range(counts["empty_output"]):
        e = dict(next(rest), output="")
        rows.append(("empty_output", e | {"text": sft_text(e)}))
    for _ in range(counts["repetitive_output"]):
        e = dict(next(rest), output=" ".join([rng.choice(REPETITIVE_OUTPUTS)] * rng.randint(20, 60)))
        rows.append(("repetitive_output", e | {"text": sft_text(e)}))
    for _ in range(counts["missing_text"]):
        e = next(rest)
        rows.append(("missing_text", {k: v for k, v in e.items() if k != "text"}))
    for _ in range(counts["null_text"]):
        rows.append(("null_text", dict(next(rest), text=None)))
    for i in rng.sample(range(clean_needed), counts["exact_duplicate"]):
        rows.append(("exact_duplicate", examples[i]))
    rng.shuffle(rows)
    lines = [json.dumps(e, ensure_ascii=False) for _, e in rows]
    labels = [kind for kind, _ in rows]
    # Duplicates are labelled by reading order: the first copy is the clean one.
    seen = set()
    for i, line in enumerate(lines):
        if labels[i] in ("clean", "exact_duplicate"):
            labels[i] = "exact_duplicate" if line in seen else "clean"
            seen.add(line)
    for n in range(counts["broken_json"]):
        at = rng.randint(0, len(lines))
        lines.insert(at, '{"instruction": "Explain `%d`.", "output": "cut off' % n)
        labels.insert(at, "broken_json")
    return lines, labels


def instruction_example(module: str, qualname: str, doc: str, n: int) -> dict:
    name = qualname.rsplit(".", 1)[-1]
    first = doc.split("\n\n")[0].replace("\n", " ")
    template = INSTRUCTIONS[n % len(INSTRUCTIONS)]
    instruction = template.format(qual=qualname, name=name)
    inp, output = "", first
    if template.startswith("Summarize"):
        inp, output = doc[:1500], re.split(r"(?<=[.!?])\s", first, maxsplit=1)[0]
    elif template.startswith("Which"):
        output = f"`{name}` is defined in the `{module}` module: {first}"
    elif template.startswith("Write"):
        output = doc
    example = {"instruction": instruction, "input": inp, "output": output}
    return example | {"text": sft_text(example)}


def sft_text(example: dict) -> str:
    parts = [f"### Instruction:\n{example['instruction']}"]
    if example["input"]:
        parts.append(f"### Input:\n{example['input']}")
    parts.append(f"### Response:\n{example['output']}")
    return "\n\n".join(parts)


# --- books --------------------------------------------------------------------------------


def build_books(total: int) -> list[dict]:
    """`total` chunks of the language reference, cut at paragraph boundaries."""
    topics = reference_topics()
    size = sum(len(t) for _, t in topics) // total
    books = chunk_topics(topics, size)
    while len(books) < total and size > 100:
        size = size * 3 // 4
        books = chunk_topics(topics, size)
    step = len(books) / total
    return [dict(books[int(i * step)], chapter=i) for i in range(min(total, len(books)))]


def chunk_topics(topics: list[tuple[str, str]], size: int) -> list[dict]:
    chunks = []
    for topic, text in topics:
        chunk: list[str] = []
        for paragraph in text.split("\n\n"):
            chunk.append(paragraph)
            if sum(map(len, chunk)) >= size:
                chunks.append({"text": "\n\n".join(chunk), "title": topic})
                chunk = []
        if chunk:
            chunks.append({"text": "\n\n".join(chunk), "title": topic})
    return chunks


def print_counts(truth: dict) -> None:
    for name, info in truth["files"].items():
        if "kinds" in info:
            print(f"{name}: {info['lines']} lines: "
                  + ", ".join(f"{k}={v}" for k, v in info["kinds"].items()))
        else:
            print(f"{name}: {info['rows']} rows")
    web = truth["web"]
    print("web total: " + ", ".join(f"{k}={v}" for k, v in web["kinds"].items()))
    print("near-duplicate rates: " + ", ".join(f"{k}={v}" for k, v in
                                                 web["near_duplicate_rates"].items()))
    print("exact-duplicate variants: " + ", ".join(f"{k}={v}" for k, v in
                                                     web["exact_duplicate_variants"].items()))
    print("non-English: " + ", ".join(f"{k}={v}" for k, v in
                                       web["non_english_languages"].items()))


if __name__ == "__main__":
    main()
