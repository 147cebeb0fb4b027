"""Independent oracle: the seed's own WikiText cleaning (Python), run over real WikiText-2 text.

`wikitext_clean` and `preprocess_data` below are copied verbatim from the seed
(/work/shared/seed/000_423dc320483399b0.txt, section 数据清洗 "data cleaning" and 数据读取 "data reading",
MindFormers' GPT-2 WikiText-2 preprocessing); only `import re` is added. Nothing else here changes them.

Writes, in fixtures/wikitext/:
  wikitext2-sample.tokens       whole articles of WikiText-2 (ARTICLES below; CC BY-SA, see the README there),
                                in the original layout. Rebuilt only when WikiText-2 is given (--wikitext2 DIR).
  wikitext2-sample.clean.txt    wikitext_clean of every passage line of the sample (a line the seed's
                                preprocess_data cleans: stripped, non-empty, not a "= ... =" heading), one per line.
  wikitext2-sample.docs.txt     preprocess_data(sample): the seed's documents, one per line.
  wikitext2-sample.oracle.json  "decade": the passage lines where the documented repair of the seed's second
                                rule changes the result (index among passage lines, input, the seed's output,
                                the repaired output); "order": short inputs whose result depends on the order
                                of two rules, with the seed's output.

The repair (README, wikitext-prep): the seed's second rule, re.sub(r"/' [0-9]/", r"/'[0-9]/", string), is
written with JavaScript-style slashes and never matches; what it was after is WikiText's split decade
apostrophe (" ' 80s" → " '80s"). The repaired function is the seed's source with that one line replaced by
`join_decade_apostrophes(string)` (asserted to occur once), so every other rule runs exactly as the seed's.

Run by hand with a python3 (no packages needed):
    python3 test/oracle/wikitext_clean.py [--wikitext2 ../shared/data/wikitext-2]
Deterministic; the outputs are committed and the tests never run Python.
"""
import argparse
import inspect
import json
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "fixtures/wikitext"
SAMPLE = OUT / "wikitext2-sample.tokens"

# (split, title line stripped): small articles on which the rare rules fire, chosen with a scan of all of
# WikiText-2: split decade apostrophes (the first seven), " ! " and " ? " (Crash Boom Bang !, Truth in
# Numbers ?), " ° " (the crater, <unk> <unk> b), " N " (Rockstar 101, Homarus gammarus), "[ ]" (The Food Album).
ARTICLES = [
    ("train", "= Not Quite Hollywood : The Wild , Untold Story of Ozploitation ! ="),
    ("train", "= Last Exit on Brooklyn ="),
    ("train", "= Caught Up ( Usher song ) ="),
    ("train", "= Dangerously in Love Tour ="),
    ("test", "= <unk> <unk> <unk> ="),
    ("train", "= Who Am I ( Casting Crowns song ) ="),
    ("train", "= True Blue ( Madonna song ) ="),
    ("train", "= Crash Boom Bang ! ="),
    ("train", "= Truth in Numbers ? ="),
    ("test", "= <unk> ( crater ) ="),
    ("train", "= Rockstar 101 ="),
    ("train", "= The Food Album ="),
    ("valid", "= <unk> <unk> b ="),
    ("valid", "= Homarus gammarus ="),
]

# Short inputs (the first and last real WikiText-2 lines) whose cleaning depends on the order of two rules; the
# numbers are the rules' 1-based places in wikitext_clean. The test swaps each pair and expects a change.
ORDER_CASES = [
    ("Debate with <unk> Ben @-@ <unk> on Democracy Now ! , February 14 , 2006", [10, 12]),  # " ! " before " , "
    ("a = = = b", [19, 20]),  # "= = =" before "= ="
    ("The wing dihedral was reduced to 3 ° from 6 ° .", [9, 21]),  # " ." before " ° "
]


# ---------------------------------------------------------------------------------- the seed, verbatim
def preprocess_data(input_file):
  """ 数据读入 """
  dataset_valid = []
  passage = []
  count = 0
  with open(input_file, 'r', encoding='utf-8') as f:
      for line in f:
          line = line.strip()
          if line:
              if line.startswith('=') and line.endswith('=') and passage:
                  dataset_valid.append(passage)
                  count += 1
                  passage = []
              elif line.startswith('=') and line.endswith('='):
                  continue
              else:
                  passage.append(line)
  print('read {} file finished!\n total count = {}'.format(input_file, count))

  res = []
  for line in dataset_valid:
      text = ""
      for sentence in line:
          sentence = wikitext_clean(sentence)
          text = text + " " + sentence
      text = text.strip()
      res.append(text)
  return res


def wikitext_clean(string):
  """ 数据清洗 """
  # 消除空格
  string = string.replace("s '", "s'")
  string = re.sub(r"/' [0-9]/", r"/'[0-9]/", string)
  # 处理数字分隔符
  string = string.replace(" @-@ ", "-")
  string = string.replace(" @,@ ", ",")
  string = string.replace(" @.@ ", ".")
  # 处理标点符号
  string = string.replace(" : ", ": ")
  string = string.replace(" ; ", "; ")
  string = string.replace(" . ", ". ")
  string = string.replace(" .", ".")
  string = string.replace(" ! ", "! ")
  string = string.replace(" ? ", "? ")
  string = string.replace(" , ", ", ")
  # 处理括号
  string = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", string)
  string = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", string)
  string = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", string)
  string = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', string)
  string = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", string)
  # 其他处理项
  string = string.replace("= = = =", "====")
  string = string.replace("= = =", "===")
  string = string.replace("= =", "==")
  string = string.replace(" " + chr(176) + " ", chr(176))
  string = string.replace(" \n", "\n")
  string = string.replace("\n ", "\n")
  string = string.replace(" N ", " 1 ")
  string = string.replace(" 's", "'s")

  return string
# ------------------------------------------------------------------------------------------------------


def join_decade_apostrophes(string):
    """The repair, as README describes it: "' 80s" → "'80s" (two digits, an optional s, then whitespace or the
    end) where the apostrophe starts the text or follows whitespace, so "Keats' 1820" keeps its space."""
    return re.sub(r"(?<!\S)' ([0-9][0-9])(s?)(?=\s|$)", r"'\1\2", string)


def repaired_clean():
    source = inspect.getsource(wikitext_clean)
    rule2 = """re.sub(r"/' [0-9]/", r"/'[0-9]/", string)"""
    assert source.count(rule2) == 1
    namespace = {"re": re, "join_decade_apostrophes": join_decade_apostrophes}
    exec(source.replace(rule2, "join_decade_apostrophes(string)"), namespace)
    return namespace["wikitext_clean"]


def passage_lines(path):
    """The lines preprocess_data cleans, selected by its own tests, in order."""
    out = []
    with open(path, "r", encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not (line.startswith("=") and line.endswith("=")):
                out.append(line)
    return out


def build_sample(wikitext2):
    """The ARTICLES, each from its heading line to the next top-level heading, in the original layout."""
    found = {}
    for split in sorted({s for s, _ in ARTICLES}):
        lines = (wikitext2 / f"wiki.{split}.tokens").read_text(encoding="utf-8").split("\n")
        starts = [i for i, l in enumerate(lines) if re.fullmatch(r" = [^=].* = ", l)]
        for a, b in zip(starts, starts[1:] + [len(lines)]):
            found[(split, lines[a].strip())] = lines[a:b]
    text = " \n" + "\n".join("\n".join(found[key]) for key in ARTICLES)
    if not text.endswith("\n"):
        text += "\n"
    SAMPLE.write_text(text, encoding="utf-8")


def check_golden(fixed):
    """golden.sections.txt (worked out by hand) must be the seed's documents of golden.tokens, cleaned with the
    repair, plus the last passage, which the seed's loop loses (wikitext-prep keeps it)."""
    golden = OUT / "golden.tokens"
    seed_clean = globals()["wikitext_clean"]
    globals()["wikitext_clean"] = fixed  # preprocess_data calls it by this name
    try:
        docs = preprocess_data(str(golden))
    finally:
        globals()["wikitext_clean"] = seed_clean
    text = golden.read_text(encoding="utf-8").strip().split("\n")
    last = [x.strip() for x in text[max(i for i, x in enumerate(text) if x.strip().startswith("=")) + 1:] if x.strip()]
    docs.append(" ".join(fixed(x) for x in last).strip())
    assert (OUT / "golden.sections.txt").read_text(encoding="utf-8") == "".join(d + "\n" for d in docs), docs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--wikitext2", type=pathlib.Path, help="WikiText-2 directory: rebuild the sample from it")
    args = parser.parse_args()
    if args.wikitext2:
        build_sample(args.wikitext2)
    lines = passage_lines(SAMPLE)
    assert all("\n" not in x and "\r" not in x for x in lines)
    clean = [wikitext_clean(x) for x in lines]
    (OUT / "wikitext2-sample.clean.txt").write_text("".join(x + "\n" for x in clean), encoding="utf-8")
    docs = preprocess_data(str(SAMPLE))
    (OUT / "wikitext2-sample.docs.txt").write_text("".join(x + "\n" for x in docs), encoding="utf-8")

    fixed = repaired_clean()
    check_golden(fixed)
    decade = [{"index": i, "input": x, "seed": c, "repaired": fixed(x)} for i, (x, c) in enumerate(zip(lines, clean)) if fixed(x) != c]
    order = [{"input": x, "rules": rules, "seed": wikitext_clean(x)} for x, rules in ORDER_CASES]
    (OUT / "wikitext2-sample.oracle.json").write_text(json.dumps({
        "about": "the seed's wikitext_clean over fixtures/wikitext/wikitext2-sample.tokens; made by test/oracle/wikitext_clean.py",
        "decade": decade, "order": order}, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{len(lines)} passage lines ({sum(a != b for a, b in zip(lines, clean))} changed by the seed's cleaning), "
          f"{len(docs)} documents, {len(decade)} lines changed by the decade repair; sample {SAMPLE.stat().st_size} bytes")


if __name__ == "__main__":
    main()
