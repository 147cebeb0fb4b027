"""Writes fixtures/torch/: small PyTorch checkpoints for src/formats/pytorch-bin.ts, and expected.json.

Run once by hand with Debian's torch (/usr/bin/python3 test/oracle/make_torch_bin_fixtures.py); the
outputs are committed and the tests never run Python. Deterministic: fixed values, fixed zip dates.

Good checkpoints (all hold the same state dict, so they share one entry in expected.json):
  state.zip.bin       torch.save default (zip, pickle protocol 2)
  state.legacy.bin    _use_new_zipfile_serialization=False (the format of the original gpt2 weights)
  state.p4.zip.bin    zip with pickle protocol 4 (FRAME, MEMOIZE, STACK_GLOBAL, SHORT_BINUNICODE)
  state.deflate.zip.bin  the zip repacked with deflated entries under an `archive/` root
  state.zip64.zip.bin    the zip rewritten with zip64 records everywhere (torch does this past 4 GiB)
  views.legacy.bin    a hand-made legacy checkpoint whose persistent ids carry view metadata
Bad ones: evil.*.bin (os.system / builtins.eval through __reduce__), bigendian.zip.bin,
past-storage.zip.bin (a view past its storage), missing-key.zip.bin (no data/<key> record).
Each good file is loaded back with torch.load, which must agree with the expected values.
"""
import binascii
import collections
import io
import json
import os
import pathlib
import pickle
import struct
import zipfile

import torch

OUT = pathlib.Path(__file__).resolve().parents[2] / 'fixtures' / 'torch'
MARKER = '/tmp/pwned-gpt2tc-torch-bin'  # the malicious pickles would create this file
DATE = (2020, 1, 1, 0, 0, 0)

DTYPE_NAMES = {
    torch.float32: 'F32', torch.float16: 'F16', torch.bfloat16: 'BF16', torch.float64: 'F64',
    torch.int64: 'I64', torch.int32: 'I32', torch.int16: 'I16', torch.int8: 'I8',
    torch.uint8: 'U8', torch.bool: 'BOOL',
}


class Tiny(torch.nn.Module):
    """Gives state_dict() its real shape: an OrderedDict with a `_metadata` attribute."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)
        self.ln = torch.nn.LayerNorm(3)
        with torch.no_grad():
            self.lin.weight.copy_(torch.arange(12, dtype=torch.float32).reshape(3, 4) / 8 - 0.5)
            self.lin.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))


def state_dict():
    sd = Tiny().state_dict()
    assert hasattr(sd, '_metadata')
    specials = [0.0, -0.0, 1.0, -2.5, 65504.0, 6.103515625e-05, 5.960464477539063e-08, 3.0e-08, 1e-7,
                float('inf'), float('-inf'), float('nan'), 0.1, 1 / 3, 1e5, -1e-45]
    sd['f16'] = torch.tensor(specials, dtype=torch.float32).to(torch.float16)
    sd['bf16'] = torch.tensor(specials + [3.0e38, 1e-40], dtype=torch.float32).to(torch.bfloat16)
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4) * 1.25 - 3
    sd['transposed'] = base.t()  # shape [4, 3], stride (1, 4): not contiguous
    big = torch.linspace(-1, 1, 16)
    sd['slice'] = big[5:9]  # storage offset 5, shares big's storage
    sd['slice2d'] = torch.arange(36, dtype=torch.float32).reshape(6, 6)[1:4, 2:5]  # offset and strides
    sd['f16.transposed'] = (torch.arange(6, dtype=torch.float32).reshape(2, 3) / 3).to(torch.float16).t()
    sd['bf16.slice'] = torch.linspace(0, 3, 10).to(torch.bfloat16)[3:7]
    sd['scalar'] = torch.tensor(3.25)
    wte = torch.arange(20, dtype=torch.float32).reshape(5, 4) / 7
    sd['transformer.wte.weight'] = wte
    sd['lm_head.weight'] = wte  # tied: one storage, two names
    sd['h.0.attn.bias'] = torch.tril(torch.ones(8, 8, dtype=torch.bool)).view(1, 1, 8, 8)
    sd['h.1.attn.bias'] = torch.tril(torch.ones(8, 8, dtype=torch.uint8)).view(1, 1, 8, 8)
    sd['h.0.attn.masked_bias'] = torch.tensor(-1e4)
    sd['f64'] = torch.tensor([0.1, -1e300, 1e-320, 2.5], dtype=torch.float64)
    sd['i64'] = torch.tensor([0, -7, 2 ** 40, 2 ** 53 + 1, 2 ** 60 + 2 ** 36 + 1, -(2 ** 63)], dtype=torch.int64)
    sd['i32'] = torch.tensor([1, -2, 2 ** 31 - 1, 16777217], dtype=torch.int32)
    sd['i16'] = torch.tensor([-32768, 5], dtype=torch.int16)
    sd['i8'] = torch.tensor([-128, 127], dtype=torch.int8)
    sd['empty'] = torch.zeros(0, 3)
    sd['expanded'] = torch.tensor([2.0]).expand(3, 2)  # stride (0, 0)
    return sd


def expected_of(sd):
    out = {}
    for name, t in sd.items():
        f32 = t.to(torch.float32).contiguous()
        out[name] = {
            'shape': list(t.shape),
            'dtype': DTYPE_NAMES[t.dtype],
            'f32': binascii.hexlify(f32.numpy().astype('<f4').tobytes()).decode(),
        }
    return out


def check_loads(path, expected):
    loaded = torch.load(path)
    assert list(loaded.keys()) == list(expected.keys()), path
    got = expected_of(loaded)
    assert got == expected, path


def rezip(src, dst, *, root=None, compression=zipfile.ZIP_STORED):
    """Copies a zip checkpoint, optionally renaming its root folder and deflating the entries."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, 'w') as zout:
        for info in zin.infolist():
            name = info.filename
            if root is not None:
                name = root + '/' + name.split('/', 1)[1]
            zi = zipfile.ZipInfo(name, DATE)
            zi.compress_type = compression
            zout.writestr(zi, zin.read(info.filename))


def zip64_copy(src, dst):
    """Rewrites a zip with zip64 sizes and offsets in every record, as torch's writer does past 4 GiB."""
    with zipfile.ZipFile(src) as zin:
        entries = [(i.filename, zin.read(i.filename)) for i in zin.infolist()]
    out = io.BytesIO()
    central = []
    for name, data in entries:
        offset = out.tell()
        crc = binascii.crc32(data)
        bname = name.encode()
        extra = struct.pack('<HHQQ', 1, 16, len(data), len(data))
        out.write(struct.pack('<IHHHHHIIIHH', 0x04034B50, 45, 0, 0, 0, 0x5021, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                              len(bname), len(extra)) + bname + extra + data)
        cextra = struct.pack('<HHQQQ', 1, 24, len(data), len(data), offset)
        central.append(struct.pack('<IHHHHHHIIIHHHHHII', 0x02014B50, 45, 45, 0, 0, 0, 0x5021, crc, 0xFFFFFFFF,
                                   0xFFFFFFFF, len(bname), len(cextra), 0, 0, 0, 0, 0xFFFFFFFF) + bname + cextra)
    cd_offset = out.tell()
    cd = b''.join(central)
    out.write(cd)
    eocd64 = out.tell()
    out.write(struct.pack('<IQHHIIQQQQ', 0x06064B50, 44, 45, 45, 0, 0, len(entries), len(entries), len(cd), cd_offset))
    out.write(struct.pack('<IIQI', 0x07064B50, 0, eocd64, 1))
    out.write(struct.pack('<IHHHHIIH', 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0))
    pathlib.Path(dst).write_bytes(out.getvalue())
    with zipfile.ZipFile(dst) as z:  # Python's reader agrees it is a valid zip64 archive
        assert [(i.filename, z.read(i.filename)) for i in z.infolist()] == entries


def legacy_save(obj, path):
    """torch.save in the legacy format, but with storage keys numbered in first-use order instead
    of memory addresses (`str(storage._cdata)`), so the file is the same on every run."""
    import builtins
    seen = {}

    def stable_str(x=''):
        if type(x) is int:  # only _legacy_save's storage keys reach str() with an int
            return builtins.str(seen.setdefault(x, len(seen)))
        return builtins.str(x)

    torch.serialization.str = stable_str  # _legacy_save (unlike torch.save) uses str only as a function
    try:
        with open(path, 'wb') as f:
            torch.serialization._legacy_save(obj, f, pickle, 2)
    finally:
        del torch.serialization.str
    assert seen, 'the storage keys were not renamed'


class FakeStorage:
    def __init__(self, storage_type, key, numel, view=None):
        self.pid = ('storage', storage_type, key, 'cpu', numel) + ((view,) if view is not False else ())


class FakeTensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


def pickle_with_pids(obj, protocol=2):
    buf = io.BytesIO()
    p = pickle.Pickler(buf, protocol=protocol)
    p.persistent_id = lambda o: o.pid if isinstance(o, FakeStorage) else None
    p.dump(obj)
    return buf.getvalue()


def hand_zip(path, obj, records, *, root='archive'):
    """A zip checkpoint with a hand-made data.pkl; records maps record names to bytes."""
    with zipfile.ZipFile(path, 'w') as z:
        for name, data in [('data.pkl', pickle_with_pids(obj))] + list(records.items()):
            z.writestr(zipfile.ZipInfo(f'{root}/{name}', DATE), data)


def views_legacy(path):
    """Legacy checkpoint whose storages are views (view_key, offset, size) of one root storage, as
    torch < 0.4 wrote them; torch.load still reads them."""
    root = torch.arange(10, dtype=torch.float32) * 0.5
    a = FakeStorage(torch.FloatStorage, 'r', 10, ('v1', 2, 5))
    b = FakeStorage(torch.FloatStorage, 'r', 10, ('v2', 6, 4))
    sd = collections.OrderedDict([('a', FakeTensor(a, 1, (2, 2), (1, 2))), ('b', FakeTensor(b, 0, (4,), (1,)))])
    out = io.BytesIO()
    for value in (0x1950A86A20F9469CFC6C, 1001, {'protocol_version': 1001, 'little_endian': True,
                                                   'type_sizes': {'short': 2, 'int': 4, 'long': 8}}):
        pickle.dump(value, out, protocol=2)
    out.write(pickle_with_pids(sd))
    pickle.dump(['r'], out, protocol=2)
    out.write(struct.pack('<q', 10) + root.numpy().astype('<f4').tobytes())
    pathlib.Path(path).write_bytes(out.getvalue())
    return {'a': root.as_strided((2, 2), (1, 2), 3), 'b': root[6:10]}


class EvilSystem:
    def __reduce__(self):
        return (os.system, (f'touch {MARKER}',))


class EvilEval:
    def __reduce__(self):
        return (eval, (f"__import__('os').system('touch {MARKER}')",))


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob('*.bin'):
        old.unlink()
    sd = state_dict()
    expected = expected_of(sd)
    files = {}

    torch.save(sd, OUT / 'state.zip.bin')
    legacy_save(sd, OUT / 'state.legacy.bin')
    torch.save(sd, OUT / 'state.p4.zip.bin', pickle_protocol=4)
    rezip(OUT / 'state.zip.bin', OUT / 'state.deflate.zip.bin', root='archive', compression=zipfile.ZIP_DEFLATED)
    zip64_copy(OUT / 'state.zip.bin', OUT / 'state.zip64.zip.bin')
    for name in ['state.zip.bin', 'state.legacy.bin', 'state.p4.zip.bin', 'state.deflate.zip.bin', 'state.zip64.zip.bin']:
        check_loads(OUT / name, expected)
        files[name] = 'state'

    views = views_legacy(OUT / 'views.legacy.bin')
    check_loads(OUT / 'views.legacy.bin', expected_of(views))
    files['views.legacy.bin'] = 'views'

    # Malicious: loading must refuse them (torch.load would run the command; we never call it here).
    torch.save({'x': EvilSystem()}, OUT / 'evil.zip.bin')
    torch.save({'x': EvilSystem()}, OUT / 'evil.legacy.bin', _use_new_zipfile_serialization=False)
    torch.save({'x': EvilEval()}, OUT / 'evil.p4.zip.bin', pickle_protocol=4)
    assert not os.path.exists(MARKER)

    # Damaged in ways a cut cannot show.
    rec = {'data/0': struct.pack('<4f', 1, 2, 3, 4), 'version': b'3\n'}
    s = FakeStorage(torch.FloatStorage, '0', 4)
    hand_zip(OUT / 'bigendian.zip.bin', {'w': FakeTensor(s, 0, (4,), (1,))}, {**rec, 'byteorder': b'big'})
    hand_zip(OUT / 'past-storage.zip.bin', {'w': FakeTensor(s, 1, (2, 2), (2, 1))}, rec)
    hand_zip(OUT / 'missing-key.zip.bin', {'w': FakeTensor(FakeStorage(torch.FloatStorage, '7', 4), 0, (4,), (1,))}, rec)

    doc = {
        'marker': MARKER,
        'torch': torch.__version__,
        'files': files,
        'expected': {'state': expected, 'views': expected_of(views)},
    }
    (OUT / 'expected.json').write_text(json.dumps(doc, indent=1) + '\n')
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f'wrote {len(list(OUT.iterdir()))} files, {total} bytes, to {OUT}')


if __name__ == '__main__':
    main()
