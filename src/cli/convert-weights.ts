/** convert-weights: GPT-2 weights in any format we read (HF, PyTorch, MindFormers, MindSpore, GGUF, nanoGPT) → our checkpoint directory, or --to another format. */
import { TARGET_FORMATS, WRITERS, type TargetFormat, type WeightsDtype } from '../formats/convert.js';
import { choiceOption, createProgram, logger, runProgram } from './common.js';
import { createProgress } from './progress.js';

interface Flags {
  overwrite?: boolean;
  config?: string;
  to: TargetFormat;
  dtype: WeightsDtype;
  lora?: string;
  quiet?: boolean;
}

const program = createProgram({
  name: 'convert-weights',
  summary: 'Convert GPT-2 weights into a checkpoint directory that Hugging Face transformers opens unchanged, or a GGUF file for llama.cpp.',
  examples: [
    'convert-weights path/to/hf-gpt2 models/gpt2                 # model.safetensors or pytorch_model.bin',
    'convert-weights gpt2/pytorch_model.bin models/gpt2 --config gpt2',
    'convert-weights models/gpt2 models/gpt2-ms --to mindformers  # also writes mindformers.safetensors',
    'convert-weights models/gpt2-ms/mindformers.safetensors back --config models/gpt2-ms/config.json',
    'convert-weights models/gpt2 models/gpt2-half --dtype f16',
    'convert-weights models/gpt2 gpt2.ckpt --to mindspore         # a MindSpore checkpoint for MindFormers',
    'convert-weights gpt2.ckpt models/gpt2-back --config gpt2',
    'convert-weights out/ckpt.pt models/mine                      # a nanoGPT checkpoint',
    'convert-weights models/mine out-resume/ckpt.pt --to nanogpt  # then: train.py --init_from=resume',
    'convert-weights models/gpt2 gpt2-q8_0.gguf --to gguf --dtype q8_0  # for llama.cpp',
    'convert-weights gpt2-q8_0.gguf models/gpt2-from-gguf           # a .gguf back to HF (dequantised)',
  ],
  notes: `SRC is a directory (config.json + model.safetensors or pytorch_model.bin) or a weights file.
pytorch_model.bin is read in both PyTorch formats (zip, and the legacy one of the original gpt2)
by a restricted unpickler that refuses anything a state dict does not need: nothing executes.
Names with or without "transformer." are accepted, attention-mask buffers are dropped, and a
file with MindFormers names (backbone.*) is converted back. A MindSpore .ckpt (MindFormers'
checkpoints) is read as mindspore.load_checkpoint reads it; it holds no config, so give --config
or put config.json beside it; optimizer state (adam_m.*, adam_v.*), global_step and the like are
ignored and listed. Encrypted checkpoints are refused. vocab.json and merges.txt are copied from
SRC when present, else GPT-2's built-in files. DST is written atomically; --to mindspore writes
one file with the names of MindFormers' convert_weight.py, as save_checkpoint writes it.

A GGUF file (llama.cpp's gpt2 architecture: F32, F16, BF16 or Q8_0 tensors) is read as SRC with
its own config and tokenizer. --to gguf writes one: llama.cpp's names and layout, norms, biases
and position embeddings in f32 as llama.cpp's converter keeps them, the tokenizer embedded.

--lora DIR merges a LoRA adapter (PEFT's adapter_config.json + adapter_model.safetensors) into the
weights: DST is then a plain model that runs without the adapter:
  convert-weights models/gpt2 models/gpt2-tuned --lora runs/lora/checkpoints/latest An adapter this toolchain wrote
records the base it was trained on (adapter_base.json: path, size, sha256 of its weights file) and
is refused for any other SRC.

A nanoGPT ckpt.pt (what its train.py saves: model, optimizer, model_args, iter_num, config) is
recognised by its contents: its model_args give the config, torch.compile's _orig_mod. prefixes
are stripped, nn.Linear weights transposed to GPT-2's layout, a bias: False model's biases read as
zeros, and a padded vocab_size (50304) kept. The other tools take the converted directory, not
ckpt.pt: convert it once. --to nanogpt writes DST as one ckpt.pt file (iter_num 0, a fresh AdamW
state with train.py's default betas and weight decay, which a resumed run keeps).`,
})
  .argument('<src>', 'HF model directory, or a .safetensors / .bin / .gguf / MindSpore .ckpt weights file, or a nanoGPT ckpt.pt')
  .argument('<dst>', 'checkpoint directory to write (a file with --to gguf, mindspore or nanogpt)')
  .option('--overwrite', 'replace DST if it is a checkpoint this toolchain wrote, or for --to mindspore a weights file (nothing else)')
  .option('--config <preset|file>', "model config when SRC has none (or to override it): a preset name or a config.json")
  .addOption(choiceOption('--to <format>', `what to write: ${TARGET_FORMATS.map((f) => `${f}, ${WRITERS[f].summary}`).join('; ')}`, TARGET_FORMATS, 'hf'))
  .addOption(choiceOption('--dtype <dtype>', 'type of the written weights (q8_0: --to gguf only)', ['f32', 'f16', 'q8_0'], 'f32'))
  .option('--lora <dir>', 'merge this LoRA adapter (PEFT format) into the weights')
  .action(async (src: string, dst: string, flags: Flags) => {
    const log = logger('convert-weights', !!flags.quiet);
    const { convertWeights } = await import('../formats/convert.js');
    const progress = await createProgress({ quiet: flags.quiet, label: 'convert-weights', unit: 'bytes' });
    let result;
    try {
      result = await convertWeights(src, dst, {
        config: flags.config,
        to: flags.to,
        dtype: flags.dtype,
        overwrite: flags.overwrite,
        lora: flags.lora,
        onInfo: log.info,
        onWarning: log.warn,
        onProgress: (done, total) => {
          progress.setTotal(total);
          progress.update(done);
        },
      });
    } finally {
      progress.stop();
    }
    for (const name of result.ignored) log.warn(`ignoring tensor ${name} (not a GPT-2 parameter)`);
    const c = result.config;
    log.info(`${dst}: ${c.n_layer} layers, ${c.n_embd} wide, ${c.n_head} heads, vocab ${c.vocab_size}${result.head ? `, classification head of ${result.head.num_labels} labels (${result.head.labels.join(', ')})` : ''} (from ${result.source} in ${result.weightsPath})`);
  });

await runProgram(program);
