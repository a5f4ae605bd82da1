'use strict';
// Builds the N-API addon with cargo and copies it to `cutover.node`.
// CUTOVER_NODE_PROFILE=debug builds without optimisations (faster to build).
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const here = path.resolve(__dirname, '..');
const manifest = path.join(here, 'Cargo.toml');
const profile = process.env.CUTOVER_NODE_PROFILE === 'debug' ? 'debug' : 'release';
const cargo = process.env.CARGO || 'cargo';

const args = ['build', '-p', 'cutover-node', '--manifest-path', manifest];
if (profile === 'release') args.push('--release');
console.error(`cutover: building the addon (cargo ${args.join(' ')})`);
execFileSync(cargo, args, { stdio: 'inherit', cwd: here });

const meta = JSON.parse(
  execFileSync(cargo, ['metadata', '--format-version', '1', '--no-deps', '--manifest-path', manifest], {
    cwd: here,
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  })
);
const lib = {
  linux: 'libcutover_node.so',
  darwin: 'libcutover_node.dylib',
  win32: 'cutover_node.dll',
}[process.platform];
if (!lib) throw new Error(`cutover: no build recipe for platform ${process.platform}`);
const from = path.join(meta.target_directory, profile, lib);
const to = path.join(here, 'cutover.node');
fs.copyFileSync(from, to);
console.error(`cutover: ${to} (${profile})`);
