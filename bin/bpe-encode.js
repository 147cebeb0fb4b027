#!/usr/bin/env node
import '../dist/cli/bpe-encode.js';
