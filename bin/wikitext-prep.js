#!/usr/bin/env node
import '../dist/cli/wikitext-prep.js';
