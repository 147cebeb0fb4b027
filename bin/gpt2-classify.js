#!/usr/bin/env node
import '../dist/cli/gpt2-classify.js';
