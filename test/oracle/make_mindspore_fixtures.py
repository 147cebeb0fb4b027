"""Writes fixtures/mindspore/: MindSpore .ckpt files of fixtures/models/tiny under MindFormers' names.

Run once by hand (the outputs are committed; the tests never run Python):
    apt-get install -y python3-protobuf protobuf-compiler
    /usr/bin/python3 test/oracle/make_mindspore_fixtures.py
Check a file our writer made (parses it with protobuf-python and compares it with a model's
model.safetensors under MindFormers names; default fixtures/models/tiny):
    /usr/bin/python3 test/oracle/make_mindspore_fixtures.py --check OUT.ckpt [--model DIR] [--f16]

MindSpore itself is not installable here (no wheel for this machine's Python / Debian), so the files
are made by MindSpore's own format definition: its checkpoint.proto (embedded below), compiled by
protoc and serialised by Google's protobuf-python, written the way mindspore.save_checkpoint
(mindspore/python/mindspore/train/serialization.py, _exec_save / _write_parameter_data) writes them:
  - one serialised Checkpoint message holding one Value per parameter, appended to the file (the
    messages concatenate into one Checkpoint, whose `value` field is repeated);
  - tensor_type is str(mstype): "Float32", "Float16", "Int32", "Int64", "Bool", ...;
  - dims are the full shape in every slice; a scalar (shape ()) has dims [0];
  - a parameter over 512 MB is cut with np.array_split into slices that follow each other under
    the same tag (load_checkpoint joins consecutive values of one tag);
  - with crc_check=True the file ends with b"crc_num" + the CRC-32 of everything before it as
    10 big-endian bytes.
Names and order are those of the seed's mindformers/models/gpt2/convert_weight.py: per layer
layernorm1, layernorm2, attention.projection, attention.dense1/2/3 (q/k/v, [out, in]),
output.mapping, output.projection; then backbone.layernorm and the two embedding tables.

Files:
  tiny.ckpt       f32 weights only, as save_checkpoint writes the list convert_weight.py builds
  tiny-f16.ckpt   the same in Float16 (numpy's round to nearest even)
  tiny-train.ckpt a training checkpoint: the f32 weights with the word embedding in 3 slices (the
                  split _exec_save makes past 512 MB, forced here), the causal-mask buffers
                  convert_weight.py maps from a pytorch_model.bin (attention.beta Bool [1,1,32,32],
                  attention.masked_beta Float32 scalar), AdamW moments adam_m./adam_v. of two
                  parameters, global_step (Int32 [1]), epoch_num / step_num (Int64 scalars),
                  loss_scale (Float32 scalar), and the CRC trailer
  bad-*.ckpt      malformed files for the reader's errors (see BAD below)
  expected.json   what each good file holds: tag, tensor_type, dims, slices (for the tests)
"""
import argparse
import binascii
import importlib
import json
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / 'fixtures' / 'mindspore'
TINY = ROOT / 'fixtures' / 'models' / 'tiny'

# mindspore/ccsrc/utils/checkpoint.proto from mindspore-ai/mindspore at commit 7836767c (2.x, with
# MapTensorProto); the 1.x file (commit 1089c908) has `required TensorProto tensor = 2` instead of
# the oneof, the same bytes on the wire for tensors. Apache-2.0, Huawei Technologies.
CHECKPOINT_PROTO = '''
syntax = "proto2";

message Checkpoint {
    message Value {
        required string tag = 1;
        oneof value{
            TensorProto tensor = 2;
            MapTensorProto maptensor = 3;
        }
    }
    repeated Value value = 1;
}

message TensorProto {
    repeated int64 dims = 1;
    required string tensor_type = 2;
    required bytes tensor_content = 3;
}

message MapTensorProto {
    repeated TensorProto tensor = 1;
}
'''

# mindformers/models/gpt2/convert_weight.py: per-layer MindFormers names and the HF names they come
# from (c_attn split in three on its last axis), then the names outside the layers.
LAYER_NAMES = [
    ('layernorm1.gamma', 'ln_1.weight'), ('layernorm1.beta', 'ln_1.bias'),
    ('layernorm2.gamma', 'ln_2.weight'), ('layernorm2.beta', 'ln_2.bias'),
    ('attention.projection.weight', 'attn.c_proj.weight'), ('attention.projection.bias', 'attn.c_proj.bias'),
    ('attention.dense1.weight', 'attn.c_attn.weight.q'), ('attention.dense1.bias', 'attn.c_attn.bias.q'),
    ('attention.dense2.weight', 'attn.c_attn.weight.k'), ('attention.dense2.bias', 'attn.c_attn.bias.k'),
    ('attention.dense3.weight', 'attn.c_attn.weight.v'), ('attention.dense3.bias', 'attn.c_attn.bias.v'),
    ('output.mapping.weight', 'mlp.c_fc.weight'), ('output.mapping.bias', 'mlp.c_fc.bias'),
    ('output.projection.weight', 'mlp.c_proj.weight'), ('output.projection.bias', 'mlp.c_proj.bias'),
]
OUTER_NAMES = [
    ('backbone.layernorm.gamma', 'ln_f.weight'), ('backbone.layernorm.beta', 'ln_f.bias'),
    ('backbone.embedding.word_embedding.embedding_table', 'wte.weight'),
    ('backbone.embedding.position_embedding.embedding_table', 'wpe.weight'),
]

MS_TYPE = {np.dtype(np.float32): 'Float32', np.dtype(np.float16): 'Float16', np.dtype(np.int32): 'Int32',
           np.dtype(np.int64): 'Int64', np.dtype(np.bool_): 'Bool'}
NP_TYPE = {v: k for k, v in MS_TYPE.items()}


def load_proto():
    """checkpoint_pb2, compiled by protoc from the proto text above."""
    tmp = pathlib.Path(tempfile.mkdtemp())
    (tmp / 'checkpoint.proto').write_text(CHECKPOINT_PROTO)
    subprocess.run(['protoc', f'--proto_path={tmp}', f'--python_out={tmp}', 'checkpoint.proto'], check=True)
    sys.path.insert(0, str(tmp))
    return importlib.import_module('checkpoint_pb2')


def read_safetensors(path):
    data = path.read_bytes()
    n = int.from_bytes(data[:8], 'little')
    header = json.loads(data[8:8 + n])
    out = {}
    for name, entry in header.items():
        if name == '__metadata__':
            continue
        assert entry['dtype'] == 'F32'
        start, end = entry['data_offsets']
        out[name] = np.frombuffer(data[8 + n + start:8 + n + end], dtype='<f4').reshape(entry['shape'])
    return out


def mindformers_weights(model=TINY):
    """A model directory's F32 weights under MindFormers names, in convert_weight.py's order."""
    hf = {k.removeprefix('transformer.'): v for k, v in read_safetensors(model / 'model.safetensors').items()}
    n_layer = json.loads((model / 'config.json').read_text())['n_layer']
    for i in range(n_layer):
        for kind in ('weight', 'bias'):
            q, k, v = np.split(hf.pop(f'h.{i}.attn.c_attn.{kind}'), 3, axis=-1)
            for part, value in zip('qkv', (q, k, v)):
                hf[f'h.{i}.attn.c_attn.{kind}.{part}'] = value.T if kind == 'weight' else value  # [out, in]
    weights = [(f'backbone.blocks.{i}.{ms}', hf[f'h.{i}.{pt}']) for i in range(n_layer) for ms, pt in LAYER_NAMES]
    weights += [(ms, hf[pt]) for ms, pt in OUTER_NAMES]
    return [(name, np.ascontiguousarray(value)) for name, value in weights], n_layer


def dims_of(value):
    return [0] if value.shape == () else list(value.shape)


def write_ckpt(pb, path, entries, crc=False):
    """entries: (tag, array, slice count). Returns the expected.json record of the file."""
    out = bytearray()
    crc_num = 0
    record = []
    for tag, value, slices in entries:
        parts = np.array_split(value, slices) if slices > 1 else [value]
        for part in parts:
            ckpt = pb.Checkpoint()
            v = ckpt.value.add()
            v.tag = tag
            v.tensor.dims.extend(dims_of(value))
            v.tensor.tensor_type = MS_TYPE[value.dtype]
            v.tensor.tensor_content = part.tobytes()
            data = ckpt.SerializeToString()
            crc_num = binascii.crc32(data, crc_num)
            out += data
        record.append({'tag': tag, 'tensor_type': MS_TYPE[value.dtype], 'dims': dims_of(value), 'slices': slices})
    if crc:
        out += b'crc_num' + crc_num.to_bytes(10, byteorder='big')
    path.write_bytes(bytes(out))
    check_file(pb, path, {tag: value for tag, value, _ in entries})
    return record


def parse_ckpt(pb, path):
    """load_checkpoint's reading: strip the CRC trailer, parse, join consecutive values of a tag."""
    content = path.read_bytes()
    if content[-17:-10] == b'crc_num':
        assert binascii.crc32(content[:-17]) == int.from_bytes(content[-10:], 'big'), 'CRC mismatch'
        content = content[:-17]
    ckpt = pb.Checkpoint()
    ckpt.ParseFromString(content)
    out = {}
    values = list(ckpt.value)
    i = 0
    while i < len(values):
        tag, t = values[i].tag, values[i].tensor
        data = b''
        while i < len(values) and values[i].tag == tag:
            assert list(values[i].tensor.dims) == list(t.dims) and values[i].tensor.tensor_type == t.tensor_type
            data += values[i].tensor.tensor_content
            i += 1
        assert tag not in out, f'{tag} twice'
        array = np.frombuffer(data, NP_TYPE[t.tensor_type])
        out[tag] = array.reshape(()) if list(t.dims) == [0] else array.reshape(list(t.dims))
    return out


def check_file(pb, path, expected):
    got = parse_ckpt(pb, path)
    assert list(got) == list(expected), f'{path}: tags {list(got)} != {list(expected)}'
    for tag, value in expected.items():
        assert got[tag].dtype == value.dtype and got[tag].shape == value.shape, f'{path}: {tag} type/shape'
        assert got[tag].tobytes() == value.tobytes(), f'{path}: {tag} differs'


def bad_files(pb):
    """Malformed files: name → bytes."""
    def one(tag, dims, tensor_type, content):
        ckpt = pb.Checkpoint()
        v = ckpt.value.add()
        v.tag = tag
        v.tensor.dims.extend(dims)
        v.tensor.tensor_type = tensor_type
        v.tensor.tensor_content = content
        return ckpt.SerializeToString()

    good = one('backbone.layernorm.gamma', [4], 'Float32', np.arange(4, dtype='<f4').tobytes())
    # Field 1 (0x0a) with a varint length of 3 GiB, then a small value: nothing like it follows.
    huge_value = b'\x0a' + bytes([0x80, 0x80, 0x80, 0x80, 0x0c]) + good[2:]
    # A Value whose tensor_content claims 2 GiB inside a value of the right outer length.
    inner = one('x', [4], 'Float32', b'')  # ends with 0x1a 0x00: the content's tag and length 0
    huge_content = bytearray(inner[:-1] + bytes([0x80, 0x80, 0x80, 0x80, 0x08]))
    huge_content[1] += 4  # the value and its tensor (lengths at bytes 1 and 6) grew by 4 varint bytes
    huge_content[6] += 4
    return {
        'bad-type.ckpt': one('backbone.layernorm.gamma', [4], 'Float8', bytes(4)),
        'bad-dims.ckpt': one('backbone.layernorm.gamma', [4, 4], 'Float32', np.arange(15, dtype='<f4').tobytes()),
        'bad-huge-value.ckpt': huge_value,
        'bad-huge-content.ckpt': bytes(huge_content),
        'bad-crc.ckpt': good + b'crc_num' + (binascii.crc32(good) ^ 1).to_bytes(10, 'big'),
        'bad-encrypted.ckpt': (0x7F3A5ED8).to_bytes(4, 'little') + bytes(range(60)),
    }


def make(pb):
    OUT.mkdir(parents=True, exist_ok=True)
    weights, n_layer = mindformers_weights()
    expected = {}
    expected['tiny.ckpt'] = write_ckpt(pb, OUT / 'tiny.ckpt', [(t, v, 1) for t, v in weights])
    expected['tiny-f16.ckpt'] = write_ckpt(pb, OUT / 'tiny-f16.ckpt', [(t, v.astype(np.float16), 1) for t, v in weights])
    rng = np.random.default_rng(12)
    n_pos = json.loads((TINY / 'config.json').read_text())['n_positions']
    train = []
    for tag, value in weights:
        train.append((tag, value, 3 if tag.endswith('word_embedding.embedding_table') else 1))
        if tag.startswith('backbone.blocks.') and tag.endswith('layernorm1.gamma'):
            i = tag.split('.')[2]
            mask = np.tril(np.ones((n_pos, n_pos), dtype=np.bool_)).reshape(1, 1, n_pos, n_pos)
            train.append((f'backbone.blocks.{i}.attention.beta', mask, 1))
            train.append((f'backbone.blocks.{i}.attention.masked_beta', np.array(-1e4, dtype=np.float32), 1))
    for tag in ('backbone.layernorm.gamma', 'backbone.blocks.0.attention.dense1.weight'):
        shape = dict(weights)[tag].shape
        train.append((f'adam_m.{tag}', rng.normal(0, 1e-3, shape).astype(np.float32), 1))
        train.append((f'adam_v.{tag}', rng.uniform(0, 1e-6, shape).astype(np.float32), 1))
    train += [('global_step', np.array([120], dtype=np.int32), 1), ('epoch_num', np.array(3, dtype=np.int64), 1),
              ('step_num', np.array(120, dtype=np.int64), 1), ('loss_scale', np.array(1024.0, dtype=np.float32), 1)]
    expected['tiny-train.ckpt'] = write_ckpt(pb, OUT / 'tiny-train.ckpt', train, crc=True)
    for name, data in bad_files(pb).items():
        (OUT / name).write_bytes(data)
    (OUT / 'expected.json').write_text(json.dumps({'n_layer': n_layer, 'files': expected}, indent=1) + '\n')
    for path in sorted(OUT.iterdir()):
        print(f'{path.relative_to(ROOT)}: {path.stat().st_size} bytes')


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--check', metavar='CKPT', help='compare this file with the tiny model under MindFormers names')
    parser.add_argument('--model', default=str(TINY), help='with --check: the HF model directory to compare with')
    parser.add_argument('--f16', action='store_true', help='with --check: expect Float16 weights')
    args = parser.parse_args()
    pb = load_proto()
    if args.check:
        weights, _ = mindformers_weights(pathlib.Path(args.model))
        check_file(pb, pathlib.Path(args.check), {t: v.astype(np.float16) if args.f16 else v for t, v in weights})
        print(f'{args.check}: {args.model} under MindFormers names, {len(weights)} tensors, bit for bit ({"Float16" if args.f16 else "Float32"})')
    else:
        make(pb)


if __name__ == '__main__':
    main()
