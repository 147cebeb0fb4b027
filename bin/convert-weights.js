#!/usr/bin/env node
import '../dist/cli/convert-weights.js';
