"""Independent oracle for GGUF: files written by llama.cpp's own gguf-py (GGUFWriter, quants.py).

The tiny GPT-2 (fixtures/models/tiny: vocab 320, 32 wide, 2 layers) is written the way llama.cpp's
convert_hf_to_gguf.py (class GPT2Model, early 2025) writes a GPT-2: its tensor names, the Conv1D
weights (HF [in, out]) transposed, `output` = a copy of token_embd, norms / biases / position_embd in
F32 and the matrices in the file type (its prepare_tensors rules), and the metadata keys it adds
(gpt2.*, general.file_type, general.quantization_version, tokenizer.ggml.*). The converter itself
needs transformers, which is not installed; the keys, names and rules were read from its source.

The tokenizer is GPT-2's first 319 tokens (256 bytes + the first 63 merges, whose results are ids
256..318) and <|endoftext|> at 319 (CONTROL), so the model's 320 ids each have a token.

Writes fixtures/gguf/:
  tokenizer/vocab.json, merges.txt   that 320-token tokenizer as Hugging Face saves it
  tiny-f32.gguf, tiny-f16.gguf, tiny-q8_0.gguf
                                     the tiny model, general.file_type ALL_F32 / MOSTLY_F16 / MOSTLY_Q8_0
  tiny-q8_0.safetensors              gguf-py's dequantize of every tensor of tiny-q8_0.gguf, HF names and
                                     layout (Conv1D weights transposed back), F32
  q8_0-cases.json                    Q8_0 edge cases: float32 values (as bit patterns) and quants.py's
                                     bytes for them (ties, zero block, tiny and huge values, f16 scale
                                     rounding, negative maxima)
  reader.json                        what gguf-py's GGUFReader reads from each .gguf: metadata (key, type,
                                     value; arrays by length and first/last items), tensors (name,
                                     ggml dims, type, data offset, sha256 of the bytes)

Run by hand with Debian's python3-numpy and gguf-py (llama.cpp's gguf-py/, or the gguf wheel):
    PYTHONPATH=/work/ext/gguf-py /usr/bin/python3 test/oracle/make_gguf_fixtures.py
With --check FILE... it instead reads GGUF files this toolchain wrote with GGUFReader and compares
them to gguf-py's own of the same model and type (a hand check for files too big to commit).
Deterministic; tests read the outputs and never run Python.
"""
import hashlib
import json
import pathlib
import struct
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "fixtures" / "gguf"
TINY = ROOT / "fixtures" / "models" / "tiny"
GPT2_TOKENIZER = ROOT / "src" / "tokenizer" / "gpt2"
FILE_TYPES = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}


def read_safetensors(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        assert e["dtype"] == "F32"
        a, b = e["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype="<f4").reshape(e["shape"]).copy()
    return out


def write_safetensors(path, tensors):
    header, blobs, at = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        data = np.ascontiguousarray(tensors[name], dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [at, at + len(data)]}
        blobs.append(data)
        at += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def small_tokenizer(size):
    vocab = json.loads((GPT2_TOKENIZER / "vocab.json").read_text("utf-8"))
    merges = (GPT2_TOKENIZER / "merges.txt").read_text("utf-8").split("\n")[1:]
    by_id = {i: t for t, i in vocab.items()}
    n_merges = size - 1 - 256
    kept = merges[:n_merges]
    for k, m in enumerate(kept):  # GPT-2's ids 256.. are its merges' results, in order
        assert vocab[m.replace(" ", "")] == 256 + k, m
    tokens = [by_id[i] for i in range(size - 1)] + ["<|endoftext|>"]
    return tokens, kept


def gguf_layout(weights, n_layer):
    """(gguf name, numpy array) in the order the writer of this toolchain emits them."""
    out = []
    for hf, name in [("wte", "token_embd"), ("wpe", "position_embd")]:
        out.append((name + ".weight", weights[f"transformer.{hf}.weight"]))
        if hf == "wte":
            out.append(("output.weight", weights["transformer.wte.weight"]))
    for i in range(n_layer):
        for hf, name in [("ln_1", "attn_norm"), ("attn.c_attn", "attn_qkv"), ("attn.c_proj", "attn_output"),
                         ("ln_2", "ffn_norm"), ("mlp.c_fc", "ffn_up"), ("mlp.c_proj", "ffn_down")]:
            w = weights[f"transformer.h.{i}.{hf}.weight"]
            out.append((f"blk.{i}.{name}.weight", w if hf.startswith("ln_") else np.ascontiguousarray(w.T)))
            out.append((f"blk.{i}.{name}.bias", weights[f"transformer.h.{i}.{hf}.bias"]))
    out.append(("output_norm.weight", weights["transformer.ln_f.weight"]))
    out.append(("output_norm.bias", weights["transformer.ln_f.bias"]))
    return out


def stored_type(name, data, dtype):
    """convert_hf_to_gguf's prepare_tensors: 1-D, norms, position_embd → F32; else the file type (Q8_0 falls back to F16)."""
    if dtype == "f32" or data.ndim <= 1 or name.endswith("_norm.weight") or name == "position_embd.weight" or not name.endswith(".weight"):
        return Q.F32
    if dtype == "q8_0" and data.shape[-1] % 32 == 0:
        return Q.Q8_0
    return Q.F16


def write_model(path, config, weights, tokens, merges, dtype, name):
    w = gguf.GGUFWriter(str(path), "gpt2")
    w.add_name(name)
    w.add_block_count(config["n_layer"])
    w.add_context_length(config["n_positions"])
    w.add_embedding_length(config["n_embd"])
    w.add_feed_forward_length(config["n_inner"] or 4 * config["n_embd"])
    w.add_head_count(config["n_head"])
    w.add_layer_norm_eps(config["layer_norm_epsilon"])
    w.add_file_type(FILE_TYPES[dtype])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if t == "<|endoftext|>" else gguf.TokenType.NORMAL for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(config["bos_token_id"])
    w.add_eos_token_id(config["eos_token_id"])
    for tname, data in gguf_layout(weights, config["n_layer"]):
        qtype = stored_type(tname, data, dtype)
        w.add_tensor(tname, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def describe(path):
    """What GGUFReader reads from a file: metadata and tensor infos, data by sha256."""
    r = gguf.GGUFReader(str(path))
    meta = []
    for f in r.fields.values():
        if f.name.startswith("GGUF."):
            continue
        vtype = f.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            items = [f.parts[i] for i in f.data]
            conv = (lambda p: bytes(p).decode("utf-8")) if f.types[1] == gguf.GGUFValueType.STRING else (lambda p: p.tolist()[0])
            meta.append({"key": f.name, "type": "ARRAY", "item_type": f.types[1].name, "length": len(items),
                         "first": conv(items[0]), "last": conv(items[-1])})
        else:
            p = f.parts[f.data[0]]
            value = bytes(p).decode("utf-8") if vtype == gguf.GGUFValueType.STRING else p.tolist()[0]
            meta.append({"key": f.name, "type": vtype.name, "value": value})
    tensors = [{"name": t.name, "dims": [int(d) for d in t.shape], "type": t.tensor_type.name,
                "data_offset": int(t.data_offset), "sha256": hashlib.sha256(bytes(t.data.tobytes())).hexdigest()}
               for t in r.tensors]
    return {"metadata": meta, "tensors": tensors}


def q8_0_cases():
    rng = np.random.default_rng(12)
    blocks = [
        rng.normal(0, 1, 32),                                   # ordinary
        np.zeros(32),                                           # d = 0
        np.concatenate([[127.0, -63.5, 0.5, -0.5, 1.5, 2.5], np.arange(26) - 12.5]),  # exact ties of x/d
        np.concatenate([[-3.0], rng.uniform(-3, 3, 31)]),       # negative maximum
        rng.normal(0, 1e-6, 32),                                # f16 scale subnormal
        rng.normal(0, 1e4, 32),                                 # huge
        np.full(32, 1 / 3),                                     # all equal
        rng.normal(0, 1, 32) * (rng.uniform(size=32) < 0.3),   # mostly zeros
    ]
    values = np.concatenate(blocks).astype(np.float32)
    q = gguf.quants.quantize(values.reshape(4, 64), Q.Q8_0)
    return {"values_f32_bits": values.view(np.uint32).tolist(), "bytes_hex": q.tobytes().hex(),
            "dequantized_f32_bits": gguf.quants.dequantize(q, Q.Q8_0).astype(np.float32).reshape(-1).view(np.uint32).tolist()}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    config = json.loads((TINY / "config.json").read_text())
    weights = read_safetensors(TINY / "model.safetensors")
    tokens, merges = small_tokenizer(config["vocab_size"])
    tok_dir = OUT / "tokenizer"
    tok_dir.mkdir(exist_ok=True)
    (tok_dir / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), "utf-8")
    (tok_dir / "merges.txt").write_text("".join(line + "\n" for line in ["#version: 0.2"] + merges), "utf-8")
    config = {**config, "bos_token_id": config["vocab_size"] - 1, "eos_token_id": config["vocab_size"] - 1}
    read_back = {}
    for dtype in FILE_TYPES:
        path = OUT / f"tiny-{dtype}.gguf"
        write_model(path, config, weights, tokens, merges, dtype, "tiny")
        read_back[path.name] = describe(path)
    r = gguf.GGUFReader(str(OUT / "tiny-q8_0.gguf"))
    deq = {}
    layout = {name: hf for name, hf in zip([n for n, _ in gguf_layout(weights, config["n_layer"])], hf_layout(config["n_layer"]))}
    for t in r.tensors:
        hf = layout[t.name]
        if hf is None:
            continue
        values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        deq[hf] = np.ascontiguousarray(values.T) if transposed(hf) else values
    write_safetensors(OUT / "tiny-q8_0.safetensors", deq)
    (OUT / "q8_0-cases.json").write_text(json.dumps(q8_0_cases()) + "\n")
    (OUT / "reader.json").write_text(json.dumps(read_back, indent=1, ensure_ascii=False) + "\n", "utf-8")


def hf_layout(n_layer):
    out = ["transformer.wte.weight", None, "transformer.wpe.weight"]
    for i in range(n_layer):
        for hf in ["ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"]:
            out += [f"transformer.h.{i}.{hf}.weight", f"transformer.h.{i}.{hf}.bias"]
    return out + ["transformer.ln_f.weight", "transformer.ln_f.bias"]


def transposed(hf):
    return hf.endswith((".c_attn.weight", ".c_proj.weight", ".c_fc.weight"))


def check(paths):
    """Our files against gguf-py's reading of them: the model they hold, rewritten by GGUFWriter, must read the same."""
    ok = True
    for path in paths:
        r = gguf.GGUFReader(str(path))
        ours = describe(path)
        arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
        print(f"{path}: GGUF v{r.fields['GGUF.version'].parts[-1][0]}, {arch}, {len(r.tensors)} tensors, {len(ours['metadata'])} keys")
        for t in r.tensors:
            data = gguf.quants.dequantize(t.data, t.tensor_type)
            if t.tensor_type == Q.Q8_0:  # our blocks must be quants.py's blocks of the values they decode to
                again = gguf.quants.quantize(data.astype(np.float32), Q.Q8_0)
                if again.tobytes() != bytes(t.data.tobytes()):
                    ok = False
                    print(f"  {t.name}: Q8_0 blocks differ from quants.py's requantisation")
            print(f"  {t.name:28s} {t.tensor_type.name:5s} dims {list(map(int, t.shape))} offset {int(t.data_offset)} max|x| {float(np.abs(data).max()):.4g}")
        for m in ours["metadata"]:
            shown = {k: v for k, v in m.items() if k != "key"}
            print(f"  {m['key']}: {json.dumps(shown, ensure_ascii=False)[:150]}")
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--check":
        sys.exit(check(sys.argv[2:]))
    main()
