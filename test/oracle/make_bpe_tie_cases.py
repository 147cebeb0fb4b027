"""Writes fixtures/tokenizer/bpe-ties.json: strings where BPE meets equal-rank pairs, with the ids OpenAI's
encoder.py algorithm (gpt2_reference.Encoder) gives them.

Ranks identify pairs, so two candidate merges tie only when they are the same pair at two places; the
order matters only when those places overlap, i.e. a run of three or more copies of one part ("aaa",
"ab ab ab" once "ab" is a token, three copies of a multi-byte character): leftmost-first (GPT-2,
tiktoken) merges "aa|a", rightmost-first "a|aa". The cases are runs of such units (single letters,
digits, punctuation, spaces and newlines, pairs that become tokens early, multi-byte characters) of
every length up to 17, with and without a leading space, between other text, and random mixtures.
Each is kept only if the merge loop meets a tie on it; the script counts how many a rightmost-first
merge loop (the planted bug) would encode differently.

Run by hand with a python3 that has the `regex` package (as gpt2_reference.py; no torch needed):
    python3 test/oracle/make_bpe_tie_cases.py
Deterministic (fixed seed); the output is committed and the tests never run Python.
"""
import json
import pathlib
import random
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from gpt2_reference import PAT, Encoder, bytes_to_unicode  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "fixtures/tokenizer/bpe-ties.json"

UNITS = [
    "a", "e", "l", "o", "s", "x", "z", "A", "E", "I", "0", "1", "5", "9", "-", "=", "!", ".", "*", "#", "/", "_", "~",
    " ", "\n", "\t",
    "ab", "an", "er", "la", "ha", "na", "ma", "ll", "ss", "00", "12", "99", "-=", "==", "..", "!?", "ab-", "xy",
    "\u00e9", "\u00df", "\u00fc", "\u0430", "\u05d0", "\u4e2d", "\u30fc", "\uac00", "\U0001F600", "\U0001F44D", "\u2014",
]


def merge_with_ties(encoder, piece, rightmost):
    """tiktoken's loop: merge the lowest-rank adjacent pair, leftmost (or rightmost) on ties. Returns the
    parts and whether a tie between overlapping places of one pair was met."""
    parts = list(piece)
    ranks = encoder.bpe_ranks
    tie = False
    while len(parts) > 1:
        scored = [(ranks.get((parts[i], parts[i + 1]), float("inf")), i) for i in range(len(parts) - 1)]
        best = min(r for r, _ in scored)
        if best == float("inf"):
            break
        places = [i for r, i in scored if r == best]
        tie |= any(b - a == 1 for a, b in zip(places, places[1:]))
        i = places[-1] if rightmost else places[0]
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return parts, tie


def analyse(encoder, byte_encoder, text):
    """(encoder.py ids, whether a tie is met, whether rightmost-first gives other ids)."""
    ids = encoder.encode(text)
    tie, differs = False, False
    for token in PAT.findall(text):
        piece = "".join(byte_encoder[b] for b in token.encode("utf-8"))
        left, t = merge_with_ties(encoder, piece, rightmost=False)
        right, _ = merge_with_ties(encoder, piece, rightmost=True)
        assert left == encoder.bpe(piece), (text, token)  # the loop above is encoder.py's result
        tie |= t
        differs |= left != right
    return ids, tie, differs


def candidates(rng):
    for unit in UNITS:
        for k in range(1, 18):
            run = unit * k
            yield run
            yield " " + run
            yield "x" + run + "y"
    fillers = ["the", " of", ",", " 1", "s", " ", "\n", "'s", "("]
    for _ in range(600):
        parts = []
        for _ in range(rng.randint(1, 4)):
            parts.append(rng.choice(UNITS) * rng.randint(2, 11))
            if rng.random() < 0.5:
                parts.append(rng.choice(fillers))
        yield ("" if rng.random() < 0.5 else " ") + "".join(parts)


def main():
    vocab = json.loads((ROOT / "src/tokenizer/gpt2/vocab.json").read_text(encoding="utf-8"))
    lines = (ROOT / "src/tokenizer/gpt2/merges.txt").read_text(encoding="utf-8").split("\n")[1:]
    encoder = Encoder(vocab, [tuple(line.split()) for line in lines if line])
    byte_encoder = bytes_to_unicode()
    rng = random.Random(20240902)
    cases, seen, differing = [], set(), 0
    for text in candidates(rng):
        if text in seen:
            continue
        seen.add(text)
        ids, tie, differs = analyse(encoder, byte_encoder, text)
        if tie:
            cases.append([text, ids])
            differing += differs
    OUT.write_text(json.dumps({
        "about": "strings whose BPE meets equal-rank overlapping pairs, with OpenAI encoder.py's ids (GPT-2 vocabulary); "
                 "made by test/oracle/make_bpe_tie_cases.py",
        "rightmost_first_differs": differing,
        "cases": cases,
    }, ensure_ascii=True, separators=(",", ":")).replace('],["', '],\n["') + "\n", encoding="utf-8")
    print(f"wrote {len(cases)} cases ({differing} encoded differently when ties merge rightmost-first) to {OUT.relative_to(ROOT)}, "
          f"{OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
