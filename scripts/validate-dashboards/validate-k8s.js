#!/usr/bin/env node
// Validates Kubernetes manifests offline against the JSON schemas that the npm
// packages `kubernetes-models` (generated from the Kubernetes OpenAPI spec) and
// `@kubernetes-models/prometheus-operator` (from the prometheus-operator CRDs) ship.
//
// Usage: node validate-k8s.js deploy/kubernetes/*.yaml
//
// Every document must have an apiVersion/kind these packages know; kustomization
// files (kustomize.config.k8s.io) are skipped. Unknown fields are reported too
// (like kubeconform -strict): the OpenAPI schemas allow them, so each document is
// also checked against the packages' TypeScript interfaces turned into a JSON Schema
// with additionalProperties: false (ts-json-schema-generator), reporting only
// unknown keys from that pass.
//
// Exit status: 0 all valid, 1 invalid documents, 2 usage or setup errors.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');

function die(msg) {
  console.error(msg);
  process.exit(2);
}

let YAML;
try {
  YAML = require('yaml');
  require.resolve('kubernetes-models/package.json');
  require.resolve('@kubernetes-models/prometheus-operator/package.json');
} catch (e) {
  die(`validate-k8s.js: missing npm packages (${e.message}); run \`npm ci\` in ${__dirname}`);
}

// apiVersion/kind → { Model, module }.
function modelFor(apiVersion, kind) {
  const [group, version] = apiVersion.includes('/') ? apiVersion.split('/') : ['', apiVersion];
  const candidates = [];
  if (group === 'monitoring.coreos.com') {
    candidates.push(`@kubernetes-models/prometheus-operator/${group}/${version}/${kind}`);
  } else if (group === '') {
    candidates.push(`kubernetes-models/${version}/${kind}`);
  } else {
    candidates.push(`kubernetes-models/${group}/${version}/${kind}`);
  }
  for (const c of candidates) {
    try {
      const m = require(c);
      return { Model: m[kind] || m.default, module: c };
    } catch (_) {
      // try the next candidate
    }
  }
  return null;
}

// Strictness: the packages' TypeScript interfaces (I<Kind>) turned into one JSON
// Schema with additionalProperties: false, used only to report unknown keys.
function strictValidators(kinds) {
  const { createGenerator } = require('ts-json-schema-generator');
  const Ajv = require('ajv');
  const lines = [];
  for (const [key, mod, kind] of kinds) {
    const file = require.resolve(mod).replace(/\.js$/, '');
    lines.push(`import { I${kind} as ${key} } from ${JSON.stringify(file)};`);
    lines.push(`export type T_${key} = ${key};`);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'validate-k8s-'));
  const entry = path.join(dir, 'kinds.ts');
  fs.writeFileSync(entry, lines.join('\n') + '\n');
  try {
    const schema = createGenerator({
      path: entry, type: '*', skipTypeCheck: true, additionalProperties: false, expose: 'export',
      topRef: true,
    }).createSchema('*');
    const ajv = new Ajv({ allErrors: true, strict: false });
    ajv.addSchema(schema, 'k8s');
    const out = {};
    for (const [key] of kinds) out[key] = ajv.getSchema(`k8s#/definitions/T_${key}`);
    return out;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function main() {
  const files = process.argv.slice(2);
  if (files.length === 0) die('usage: node validate-k8s.js MANIFEST.yaml...');
  let failed = 0;
  let checked = 0;
  const parsed = [];
  for (const f of files) {
    for (const d of YAML.parseAllDocuments(fs.readFileSync(f, 'utf8'))) parsed.push([f, d]);
  }
  // Kinds present, for the strict (unknown field) schema.
  const kinds = new Map();
  for (const [, d] of parsed) {
    if (d.errors.length) continue;
    const o = d.toJS();
    if (!o || !o.apiVersion || !o.kind || String(o.apiVersion).startsWith('kustomize.')) continue;
    const found = modelFor(o.apiVersion, o.kind);
    if (found) kinds.set(`${o.apiVersion}/${o.kind}`, [`K${kinds.size}`, found.module, o.kind]);
  }
  const strict = strictValidators([...kinds.values()]);
  {
    for (const [f, d] of parsed) {
      if (d.errors.length) {
        console.log(`FAIL ${f}: YAML: ${d.errors.map((e) => e.message).join('; ')}`);
        failed++;
        continue;
      }
      const obj = d.toJS();
      if (obj === null || obj === undefined) continue;
      const where = `${f}: ${obj.kind}/${obj.metadata && obj.metadata.name}`;
      if (typeof obj.apiVersion === 'string' && obj.apiVersion.startsWith('kustomize.config.k8s.io/')) {
        console.log(`skip ${where} (kustomize)`);
        continue;
      }
      const found = modelFor(obj.apiVersion || '', obj.kind || '');
      if (!found) {
        console.log(`FAIL ${where}: unknown apiVersion/kind ${obj.apiVersion}/${obj.kind}`);
        failed++;
        continue;
      }
      checked++;
      const problems = [];
      try {
        new found.Model(obj).validate();
      } catch (e) {
        for (const err of e.errors || [{ instancePath: '', message: e.message }]) {
          problems.push(`${err.instancePath || '/'}: ${err.message}`);
        }
      }
      const strictCheck = strict[kinds.get(`${obj.apiVersion}/${obj.kind}`)[0]];
      if (!strictCheck(obj)) {
        for (const err of strictCheck.errors) {
          if (err.keyword === 'additionalProperties') {
            problems.push(`${err.instancePath || '/'}: unknown field ${err.params.additionalProperty}`);
          }
        }
      }
      if (problems.length === 0) {
        console.log(`ok   ${where}`);
      } else {
        failed++;
        console.log(`FAIL ${where}`);
        for (const p of [...new Set(problems)]) console.log(`  ${p}`);
      }
    }
  }
  console.log(`${checked - failed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

main();
