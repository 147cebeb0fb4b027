#!/usr/bin/python3
"""nanoGPT checkpoints made by nanoGPT's own code, and the check that nanoGPT loads ours.

  make  NANOGPT_DIR OUT_DIR        fixtures/nanogpt: NAME.ckpt.pt as train.py saves it + NAME.expected.json
  check NANOGPT_DIR FILE.pt NAME   loads FILE the way train.py --init_from=resume does (model,
                                   optimizer), runs train.py itself on it (eval_only), compares the
                                   logits with NAME.expected.json; prints a JSON verdict that
                                   records FILE's sha256 (commit it as fixtures/nanogpt/check-NAME.json)

NANOGPT_DIR is a checkout of karpathy/nanoGPT (never committed here). Debian's torch is 1.13, whose
torch.nn.functional has no scaled_dot_product_attention, so model.py would take its slow path and
register causal-mask buffers (`attn.bias`) that torch-2 checkpoints lack. `make` builds one fixture
that way (the torch < 2 layout) and the others with a math-only stand-in for
scaled_dot_product_attention (the torch >= 2 layout, what nanoGPT users have); `check` always uses
the stand-in, as our writer writes the torch >= 2 layout.
"""
import contextlib
import hashlib
import json
import math
import os
import runpy
import shutil
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

IDS = [[5, 17, 300, 2, 99, 123, 7, 311], [0, 1, 2, 3, 64, 65, 318, 319]]
# Tiny sizes keep each file (weights + AdamW's two moments) under 200 KB.
BASE = dict(n_layer=2, n_head=4, n_embd=16, block_size=32, vocab_size=320, dropout=0.0)
FIXTURES = {
    # name: (model_args overrides, stand-in attention (torch >= 2 layout), torch.compile-style keys, seed)
    'bias': (dict(bias=True), True, False, 1),
    'nobias': (dict(bias=False), False, False, 2),
    'compiled': (dict(bias=True), True, True, 3),
}


def sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False):
    """torch 2's scaled_dot_product_attention for what model.py passes (causal, no mask, no dropout)."""
    assert attn_mask is None and dropout_p == 0.0 and is_causal
    t = q.size(-2)
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
    att = att.masked_fill(torch.ones(t, t, dtype=torch.bool).tril().logical_not(), float('-inf'))
    return F.softmax(att, dim=-1) @ v


def import_model(nanogpt, flash):
    if flash:
        F.scaled_dot_product_attention = sdpa
    elif hasattr(F, 'scaled_dot_product_attention'):
        del F.scaled_dot_product_attention
    sys.path.insert(0, nanogpt)
    import model
    return model


def logits64(model, gpt):
    """Logits at every position, in float64 (targets make forward return them all)."""
    m = gpt.double().eval()
    idx = torch.tensor(IDS)
    with torch.no_grad():
        logits, _ = m(idx, targets=idx)
    gpt.float()
    return logits.tolist()


def make(nanogpt, out):
    os.makedirs(out, exist_ok=True)
    for name, (over, flash, compiled, seed) in FIXTURES.items():
        model = import_model(nanogpt, flash)
        torch.manual_seed(seed)
        model_args = dict(BASE, **over)
        gpt = model.GPT(model.GPTConfig(**model_args))
        # One AdamW step, as train.py takes them, so the file carries a real optimizer state.
        optimizer = gpt.configure_optimizers(0.1, 6e-4, (0.9, 0.95), 'cpu')
        x = torch.randint(0, model_args['vocab_size'], (4, model_args['block_size']))
        y = torch.randint(0, model_args['vocab_size'], (4, model_args['block_size']))
        _, loss = gpt(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state = gpt.state_dict()
        if compiled:  # what raw_model.state_dict() of a torch.compile'd model looks like
            state = type(state)((f'_orig_mod.{k}', v) for k, v in state.items())
        # train.py's `config`: the run's plain settings.
        config = dict(out_dir='out', eval_interval=2000, init_from='scratch', dataset='openwebtext',
                      batch_size=12, learning_rate=6e-4, beta2=0.95, decay_lr=True, device='cpu',
                      dtype='float32', compile=compiled, **model_args)
        checkpoint = {
            'model': state,
            'optimizer': optimizer.state_dict(),
            'model_args': model_args,
            'iter_num': 1,
            'best_val_loss': loss.detach(),  # a tensor, as train.py stores losses['val']
            'config': config,
        }
        torch.save(checkpoint, os.path.join(out, f'{name}.ckpt.pt'))
        expected = {'ids': IDS, 'model_args': model_args, 'iter_num': 1, 'best_val_loss': loss.item(),
                    'buffers': not flash, 'compiled': compiled, 'logits': logits64(model, gpt)}
        with open(os.path.join(out, f'{name}.expected.json'), 'w') as f:
            json.dump(expected, f)
            f.write('\n')
        del sys.modules['model']
        sys.path.remove(nanogpt)


def check(nanogpt, path, name):
    with open(path, 'rb') as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    model = import_model(nanogpt, True)
    # train.py's resume path: model_args, GPT, prefixes stripped, strict load_state_dict, then
    # the optimizer from configure_optimizers takes the saved optimizer state.
    checkpoint = torch.load(path, map_location='cpu')
    gpt = model.GPT(model.GPTConfig(**checkpoint['model_args']))
    state = {k[len('_orig_mod.'):] if k.startswith('_orig_mod.') else k: v for k, v in checkpoint['model'].items()}
    gpt.load_state_dict(state)
    optimizer = gpt.configure_optimizers(0.1, 6e-4, (0.9, 0.95), 'cpu')
    optimizer.load_state_dict(checkpoint['optimizer'])
    expected_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'fixtures', 'nanogpt', f'{name}.expected.json')
    with open(expected_path) as f:
        want = np.array(json.load(f)['logits'])
    got = np.array(logits64(model, gpt))
    max_rel = float(np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want))))
    verdict = {'file_sha256': sha, 'name': name, 'model_args': checkpoint['model_args'],
               'iter_num': checkpoint['iter_num'], 'logits_max_rel_diff': max_rel,
               'train_py_resume': run_train_py(nanogpt, path, checkpoint['model_args'])}
    return verdict


def run_train_py(nanogpt, path, model_args):
    """train.py itself resuming from FILE (--init_from=resume) for two AdamW steps on random tokens;
    what it saves after them shows that the optimizer state we wrote took those steps."""
    work = tempfile.mkdtemp()
    try:
        os.makedirs(os.path.join(work, 'out'))
        os.makedirs(os.path.join(work, 'data', 'fake'))
        shutil.copy(path, os.path.join(work, 'out', 'ckpt.pt'))
        shutil.copy(os.path.join(nanogpt, 'configurator.py'), work)  # train.py execs it from the cwd
        tokens = np.random.RandomState(0).randint(0, model_args['vocab_size'], 4096).astype(np.uint16)
        for split in ('train', 'val'):
            tokens.tofile(os.path.join(work, 'data', 'fake', f'{split}.bin'))
        cwd = os.getcwd()
        argv = sys.argv
        os.chdir(work)
        sys.argv = ['train.py', '--init_from=resume', '--out_dir=out', '--dataset=fake', '--device=cpu',
                    '--dtype=float32', '--compile=False', '--max_iters=1', '--eval_interval=1', '--eval_iters=2',
                    '--batch_size=2', f"--block_size={model_args['block_size']}"]
        try:
            g = runpy.run_path(os.path.join(nanogpt, 'train.py'), run_name='__main__')
        finally:
            os.chdir(cwd)
            sys.argv = argv
        saved = torch.load(os.path.join(work, 'out', 'ckpt.pt'), map_location='cpu')
        return {'saved_iter_num': saved['iter_num'], 'val_loss': float(g['losses']['val']),
                'adamw_states': len(saved['optimizer']['state']),
                'adamw_steps': sorted({float(s['step']) for s in saved['optimizer']['state'].values()})}
    finally:
        shutil.rmtree(work)


if __name__ == '__main__':
    if len(sys.argv) == 4 and sys.argv[1] == 'make':
        make(os.path.abspath(sys.argv[2]), sys.argv[3])
    elif len(sys.argv) == 5 and sys.argv[1] == 'check':
        with contextlib.redirect_stdout(sys.stderr):  # model.py and train.py print as they go
            verdict = check(os.path.abspath(sys.argv[2]), sys.argv[3], sys.argv[4])
        print(json.dumps(verdict, indent=2))
    else:
        sys.exit(__doc__)
