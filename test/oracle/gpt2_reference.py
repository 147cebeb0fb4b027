"""Independent oracle: OpenAI's GPT-2 encoder.py algorithm (Python `regex`, pair-rank BPE).

Encodes fixtures/tokenizer/hard-cases.json with the GPT-2 vocabulary and writes
fixtures/tokenizer/reference-ids.json. Run by hand (python3 test/oracle/gpt2_reference.py); the
output is committed and the tests compare with it, never running Python themselves.

Python's `regex` \\s is Unicode White_Space, as in tiktoken (Rust) and HF's GPT2Tokenizer, so this
oracle also settles the characters where JavaScript's \\s differs (U+0085, U+FEFF) and the
JavaScript oracles (js-tiktoken, gpt-tokenizer) cannot. Strings with lone surrogates cannot be
UTF-8 encoded in Python and get null.
"""
import json
import pathlib

import regex as re

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAT = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def get_pairs(word):
    return {(word[i], word[i + 1]) for i in range(len(word) - 1)}


class Encoder:
    def __init__(self, encoder, merges):
        self.encoder = encoder
        self.byte_encoder = bytes_to_unicode()
        self.bpe_ranks = dict(zip(merges, range(len(merges))))
        self.cache = {}

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token)
        pairs = get_pairs(word)
        if not pairs:
            return [token]
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = get_pairs(word)
        self.cache[token] = list(word)
        return list(word)

    def encode(self, text):
        ids = []
        for token in re.findall(PAT, text):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(token))
        return ids


def main():
    vocab = json.loads((ROOT / "src/tokenizer/gpt2/vocab.json").read_text(encoding="utf-8"))
    lines = (ROOT / "src/tokenizer/gpt2/merges.txt").read_text(encoding="utf-8").split("\n")[1:]
    merges = [tuple(line.split()) for line in lines if line]
    enc = Encoder(vocab, merges)
    cases = json.loads((ROOT / "fixtures/tokenizer/hard-cases.json").read_text(encoding="utf-8"))
    out = []
    for text in cases:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            out.append(None)
            continue
        out.append(enc.encode(text))
    path = ROOT / "fixtures/tokenizer/reference-ids.json"
    path.write_text("[\n" + ",\n".join(json.dumps(x) for x in out) + "\n]\n", encoding="utf-8")
    print(f"wrote {len(out)} results ({sum(x is None for x in out)} null) to {path}")


if __name__ == "__main__":
    main()
