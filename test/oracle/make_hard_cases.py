"""Writes fixtures/tokenizer/hard-cases.json: strings that stress GPT-2's pre-tokenizer and BPE.

Run once by hand (python3 test/oracle/make_hard_cases.py); the output is committed.
Lone surrogates are written as JSON escapes (Python's json module keeps them).
"""
import json
import pathlib

cases = [
    # contractions, including ones the pattern does not know and upper case
    "I'm sure it's fine, they're here, we've gone, you'll see, he'd know, don't.",
    "I'M SURE IT'S FINE; THEY'RE HERE", "rock'n'roll o'clock 'tis y'all ''quoted''", "'s't're've'm'll'd",
    "dog's  cats'  '90s ' 80s", "'", "''", "' s", "'\u2019s curly",
    # digits and numbers
    "1234567890 12 345 6,789.01 3.14159 1e10 0x1F 007",
    "\u0661\u0662\u0663 \u00bd \u2163 \u2460 \u00b2\u00b3 \u0967\u0968",  # Arabic-Indic, fractions, Roman, circled, superscripts, Devanagari
    "phone: +1 (555) 010-9999, year 1999\u20132001",
    # whitespace runs, tabs, newlines
    "a  b   c    d", "   leading", "trailing   ", "\t\ttabs\tand\t\tmore\t", "line\nbreak\n\nparagraph\n\n\n",
    " \n \n ", "\r\nwindows\r\nlines\r\n", "mixed \t \n\t spaces", "\u00a0non\u00a0breaking\u00a0", "ideographic\u3000space",
    "em\u2003space and thin\u2009space", "\u2028line sep\u2029para sep", " ", "  ", "\n", "",
    # whitespace where JavaScript's \s differs from Unicode White_Space (tiktoken, HF, encoder.py)
    "next\u0085line", " \u0085x", "\u0085\u0085 y", "bom\ufeffinside", "\ufeffstarts with BOM", " \ufeff z", "a \ufeff\ufeff b",
    "x\ufeff\ny", "\ufeff  a", "tab\t\u0085 end",
    # accents and other scripts
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00c5ngstr\u00f6m Zo\u00eb S\u00e3o Paulo", "cafe\u0301 (combining acute)",
    "\u0394\u03b9\u03ac\u03c3\u03c4\u03b7\u03bc\u03b1 \u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440",
    "\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 \u0928\u092e\u0938\u094d\u0924\u0947 \u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35",
    "\u4e2d\u6587\u5b57\u7b26\u6d4b\u8bd5 \u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 \ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
    "\u661f\u91ce \u85cd\u5b50\u3001\u6797\u6dd1\u96ef\u3002\uff08\u5168\u89d2\uff09\uff01",
    # emoji, ZWJ sequences, flags, skin tones, variation selectors
    "emoji \U0001F600\U0001F601 \U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466 family",
    "\U0001F44D\U0001F3FD \U0001F1EC\U0001F1E7\U0001F1EF\U0001F1F5 \u2764\ufe0f \u263a\ufe0e", "\U0001F9D1\u200d\U0001F680!",
    "math \U0001D400\U0001D401 \U0001D7D8 \U00020000\U0002A6D6",  # astral letters and digits
    # control characters and odd code points
    "ctrl\x00null\x01\x02\x1b[31mred\x1b[0m\x7f", "\x0b\x0c vertical", "\x1c\x1d\x1e\x1f separators",
    "zero\u200bwidth\u200cjoiner\u200dx", "\ufffd replacement \ufffe", "\U0010FFFF max",
    # lone surrogates (encoded as U+FFFD, like TextEncoder)
    "lone \ud800 high", "lone \udc00 low", "\udbff", "pair then lone \U0001F600\ud83d", "\ud83d\ud83d\ude00",
    # punctuation runs
    "Hello, world!!! ... ?!? --- *** ### @@@ $$$ %%% ^^^ &&& ((())) [[]] {{}} <<>>",
    "C++ C# F# .NET node.js e-mail http://example.com/path?q=1&r=2#frag user@example.org",
    " ... leading punctuation", "a.b.c", "\"quoted\" 'single' `back`",
    "<|endoftext|> literal special <|endoftext|><|endoftext|>", "<|endoftext", "endoftext|>",
    # very long words and runs
    "a" * 1000, "ab" * 700, "\u00e9" * 500, "\U0001F600" * 300, " " * 2000 + "x", "1234567890" * 50,
    "pneumonoultramicroscopicsilicovolcanoconiosis supercalifragilisticexpialidocious",
    "Llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch" * 5,
    "!" * 300 + "?" * 300, "-=" * 400, "\t" * 100 + "\n" * 100,
    # WikiText style
    " = Valkyria Chronicles III = \n", " The game 's team , in 2011 @-@ 12 , sold 1 @,@ 000 copies ( 3 @.@ 5 % ) . <unk> \n",
]

out = pathlib.Path(__file__).resolve().parents[2] / "fixtures" / "tokenizer" / "hard-cases.json"
out.write_text(json.dumps(cases, indent=1) + "\n", encoding="utf-8")
print(f"wrote {len(cases)} cases to {out}")
