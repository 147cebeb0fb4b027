#!/usr/bin/env python3
"""A second implementation of the record-shard format (README, "Record shards: the format"), written
from the specification alone: Python's standard library and python3-msgpack, no code of ours.

    read_shards.py DIR    → JSON on stdout: {"manifest": {...}, "records": [{field: [values] | int}, ...]}

It checks what a reader must: format and version, each shard's size and sha256, the record count
and every record's fields and lengths against the manifest. test/data/shards-python.test.ts runs it
on shards bpe-encode wrote and compares with our reader and with tiktoken's ids.
"""
import hashlib
import json
import os
import struct
import sys

import msgpack

# msgpackr's typed-array extension: ext type 0x74, then one byte naming the element type, then the
# elements little-endian.
TYPED = 0x74
ELEMENTS = {0: "b", 1: "B", 3: "h", 4: "H", 5: "i", 6: "I", 7: "f"}


def ext_hook(code, data):
    if code != TYPED:
        raise ValueError(f"unknown msgpack extension type {code}")
    kind = ELEMENTS.get(data[0])
    if kind is None:
        raise ValueError(f"unknown typed-array element type {data[0]}")
    n = (len(data) - 1) // struct.calcsize(kind)
    return list(struct.unpack(f"<{n}{kind}", data[1:]))


def read(directory):
    with open(os.path.join(directory, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    if manifest.get("format") != "gpt2-toolchain.records" or manifest.get("version") != 1:
        raise ValueError("not a gpt2-toolchain.records manifest of version 1")
    task = manifest.get("task", "causal_lm")
    records = []
    for shard in manifest["shards"]:
        with open(os.path.join(directory, shard["file"]), "rb") as f:
            data = f.read()
        if len(data) != shard["bytes"] or hashlib.sha256(data).hexdigest() != shard["sha256"]:
            raise ValueError(f"{shard['file']}: size or sha256 differs from the manifest")
        unpacker = msgpack.Unpacker(ext_hook=ext_hook, raw=False)
        unpacker.feed(data)
        got = list(unpacker)
        if len(got) != shard["records"]:
            raise ValueError(f"{shard['file']}: {len(got)} records, the manifest says {shard['records']}")
        for r in got:
            ids = r["input_ids"]
            if task == "causal_lm":
                if len(ids) != manifest["block_size"]:
                    raise ValueError(f"a record of {len(ids)} ids, block_size is {manifest['block_size']}")
                if "attention_mask" in r and len(r["attention_mask"]) != len(ids):
                    raise ValueError("attention_mask and input_ids differ in length")
            else:
                if not 1 <= len(ids) <= manifest["max_length"] or not 0 <= r["label"] < manifest["num_labels"]:
                    raise ValueError("a labelled record out of the manifest's bounds")
            records.append(r)
    if len(records) != manifest["totals"]["records"]:
        raise ValueError("totals.records differs from the shards' records")
    return {"manifest": manifest, "records": records}


if __name__ == "__main__":
    json.dump(read(sys.argv[1]), sys.stdout)
