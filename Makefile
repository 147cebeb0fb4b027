# gpt2-toolchain: every pipeline stage on the embedded sample in fixtures/, as file targets, so
# `make -j2` runs independent stages in parallel and reruns only what changed.
#
#   make demo    install if needed, build, run the pipeline on the sample (a language model, a
#                sentiment classifier, a LoRA adapter on the language model), print a summary
#   make test    install if needed, build, type-check the tests, run the test suite (what CI runs)
#   make bench   benchmarks beside the PyTorch anchor (WikiText-2 from ../shared/data when present)
#   make bench-deps  what the PyTorch anchor needs (apt-get, as root): torch on OpenBLAS, numpy, time

SHELL := /bin/bash
.DEFAULT_GOAL := demo

SAMPLE   := fixtures/wikitext
OUT      := build/demo
INSTALL  := node_modules/.package-lock.json
BUILT    := dist/tokenizer/gpt2.bin
SOURCES  := $(shell find src -type f) tsconfig.json package.json

PREP     := node bin/wikitext-prep.js --quiet
ENCODE   := node bin/bpe-encode.js --quiet --overwrite

.PHONY: demo test bench bench-deps build install clean prep encode train classifier lora

# --- set-up -----------------------------------------------------------------------------------
$(INSTALL): package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

$(BUILT): $(INSTALL) $(SOURCES)
	npm run --silent build
	@touch $@

install: $(INSTALL)
build: $(BUILT)

# --- pipeline stages --------------------------------------------------------------------------
# text → documents (train and valid are independent: -j2 runs them together)
$(OUT)/%.docs.txt: $(SAMPLE)/wiki.%.tokens $(BUILT)
	@mkdir -p $(@D)
	$(PREP) --out $@ $<

# documents → record shards of n_positions + 1 tokens (inputs + shifted labels) for the tiny
# model's 64 positions; real GPT-2 takes the seed's 1025 (training) and 1024 (evaluation).
$(OUT)/train/manifest.json: $(OUT)/train.docs.txt $(BUILT)
	$(ENCODE) --block-size 65 --out $(@D) $<

$(OUT)/valid/manifest.json: $(OUT)/valid.docs.txt $(BUILT)
	$(ENCODE) --block-size 65 --keep-tail --out $(@D) $<

# shards → a tiny GPT-2 (configs/gpt2/run_gpt2_tiny.yaml: 50 steps, ~30 s on wasm)
TINY := configs/gpt2/run_gpt2_tiny.yaml
$(OUT)/run/checkpoints/latest/model.safetensors: $(OUT)/train/manifest.json $(OUT)/valid/manifest.json $(TINY) $(BUILT)
	node bin/gpt2-train.js --config $(TINY) --train-data $(OUT)/train --eval-data $(OUT)/valid --output-dir $(OUT)/run --overwrite

# labelled sentences → classification shards → a tiny classifier (run_gpt2_txtcls_tiny.yaml: 60 steps)
LABELLED := node bin/bpe-encode.js --quiet --overwrite --input-format tsv --text-column sentence --label-column label --labels negative,positive --max-length 64
$(OUT)/cls-train/manifest.json: fixtures/labelled/sentiment.tsv $(BUILT)
	$(LABELLED) --out $(@D) $<

$(OUT)/cls-valid/manifest.json: fixtures/labelled/sentiment-dev.tsv $(BUILT)
	$(LABELLED) --out $(@D) $<

TXTCLS := configs/gpt2/run_gpt2_txtcls_tiny.yaml
$(OUT)/cls/checkpoints/latest/model.safetensors: $(OUT)/cls-train/manifest.json $(OUT)/cls-valid/manifest.json $(TXTCLS) $(BUILT)
	node bin/gpt2-train.js --quiet --config $(TXTCLS) --train-data $(OUT)/cls-train --eval-data $(OUT)/cls-valid --output-dir $(OUT)/cls --overwrite

# the tiny model as a frozen base → a LoRA adapter (run_gpt2_lora_tiny.yaml: 20 steps), in PEFT's format
LORA := configs/gpt2/run_gpt2_lora_tiny.yaml
$(OUT)/lora/checkpoints/latest/adapter_model.safetensors: $(OUT)/run/checkpoints/latest/model.safetensors $(LORA) $(BUILT)
	node bin/gpt2-train.js --quiet --config $(LORA) --init-from $(OUT)/run/checkpoints/latest --train-data $(OUT)/train --eval-data $(OUT)/valid --output-dir $(OUT)/lora --overwrite

prep: $(OUT)/train.docs.txt $(OUT)/valid.docs.txt
encode: $(OUT)/train/manifest.json $(OUT)/valid/manifest.json
train: $(OUT)/run/checkpoints/latest/model.safetensors
classifier: $(OUT)/cls/checkpoints/latest/model.safetensors
lora: $(OUT)/lora/checkpoints/latest/adapter_model.safetensors

demo: train classifier lora
	@echo
	node bin/bpe-encode.js --inspect $(OUT)/train --records 1
	@echo
	node bin/gpt2-eval.js --model $(OUT)/run/checkpoints/latest --data $(OUT)/valid
	@echo "loss curve: $(OUT)/run/loss.svg"
	@echo
	node bin/gpt2-generate.js --model $(OUT)/run/checkpoints/latest --stream --seed 1 --do-sample --top-k 40 -n 40 "The game was"
	@echo
	@echo
	node bin/gpt2-eval.js --quiet --model $(OUT)/cls/checkpoints/latest --data $(OUT)/cls-valid
	node bin/gpt2-classify.js --quiet --model $(OUT)/cls/checkpoints/latest --format tsv "a gripping, funny film" "a dull mess"
	@echo
	node bin/gpt2-eval.js --quiet --model $(OUT)/lora/checkpoints/latest --data $(OUT)/valid
	ls $(OUT)/lora/checkpoints/latest


# --- checks -----------------------------------------------------------------------------------
test: $(BUILT)
	npm run --silent typecheck:test
	npm test --silent

# The anchor is Debian's python3-torch, whose BLAS is the libblas.so.3 alternative: with
# libopenblas0-pthread installed that is OpenBLAS; without it, the reference BLAS, which the anchors
# refuse (src/bench/anchor.py). Each benchmark still reports our figures when the anchor cannot run.
ANCHOR_CHECK := env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 /usr/bin/python3 src/bench/anchor.py --check

bench-deps:
	apt-get update
	apt-get install -y --no-install-recommends python3-torch python3-numpy libopenblas0-pthread time

bench: $(BUILT)
	@out=$$($(ANCHOR_CHECK) 2>&1) && echo "$$out" || echo "bench: the PyTorch anchor cannot run here ($$(tail -n1 <<< "$$out")); make bench-deps installs what it needs. Our figures only."
	npm run --silent bench:bpe
	npm run --silent bench:bpe-large
	npm run --silent bench:train
	npm run --silent bench:eval
	npm run --silent bench:generate
	npm run --silent bench:lora-train
	npm run --silent bench:matmul

clean:
	rm -rf build dist
