#!/usr/bin/env node
// A `solc`-compatible front for the npm `solc` package (solcjs), for py-solc-x.
// Answers `--version` (cached next to this file by the shell front `bin/solc`) and
// `--standard-json` (input on stdin, output JSON only on stdout), the way native solc does.
// Imports resolve against --base-path, then each --include-path, then this package's node_modules.
"use strict";
const fs = require("fs");
const path = require("path");

function parseArgs(argv) {
  const opts = { basePath: process.cwd(), includePaths: [], mode: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--version") opts.mode = "version";
    else if (a === "--standard-json") opts.mode = "standard-json";
    else if (a === "--base-path") opts.basePath = argv[++i];
    else if (a === "--include-path") opts.includePaths.push(argv[++i]);
    else if (a === "--allow-paths") i++;
    else if (a === "-") continue;
    else {
      process.stderr.write(`solc wrapper: unsupported argument ${a} (only --version and --standard-json)\n`);
      process.exitCode = 2;
      return null;
    }
  }
  return opts;
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (opts === null) return;
  const solc = require("solc");
  if (opts.mode === "version") {
    process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${solc.version()}\n`);
    return;
  }
  if (opts.mode !== "standard-json") {
    process.stderr.write("solc wrapper: pass --version or --standard-json\n");
    process.exitCode = 2;
    return;
  }
  const roots = [opts.basePath, ...opts.includePaths, path.join(__dirname, "node_modules")];
  const findImports = (unit) => {
    for (const root of roots) {
      const candidate = path.resolve(root, unit);
      if (fs.existsSync(candidate)) return { contents: fs.readFileSync(candidate, "utf8") };
    }
    return { error: `File not found: ${unit}` };
  };
  const input = fs.readFileSync(0, "utf8");
  const output = solc.compile(input, { import: findImports });
  // Never process.exit() here: it truncates a large result written to a pipe at 64 KiB.
  process.stdout.write(output);
}

main();
