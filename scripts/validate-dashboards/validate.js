#!/usr/bin/env node
// Validates Grafana dashboard JSON files against Grafana's own dashboard model.
//
// Usage: node validate.js dashboards/*.json
//
// The schema is generated from the TypeScript types Grafana publishes in
// @grafana/schema (dist/types/raw/dashboard/x/dashboard_types.gen.d.ts, type
// `Dashboard`) with ts-json-schema-generator, then checked with ajv. Interfaces
// become `additionalProperties: false`, so unknown or misspelled keys fail too.
//
// One relaxation: that model types annotation queries after the built-in Grafana
// datasource only. Prometheus annotation queries carry their own keys at the top
// level (`expr`, `step`, `titleFormat`, `textFormat`, `tagKeys`,
// `useValueForTime`), which Grafana accepts, so AnnotationQuery and
// AnnotationTarget allow additional properties.
//
// Exit status: 0 when every file is valid, 1 otherwise (each error printed with
// its JSON path), 2 on usage or setup errors.
'use strict';

const fs = require('fs');
const path = require('path');

function die(msg) {
  console.error(msg);
  process.exit(2);
}

let createGenerator, Ajv;
try {
  ({ createGenerator } = require('ts-json-schema-generator'));
  Ajv = require('ajv');
} catch (e) {
  die(`validate.js: missing npm packages (${e.message}); run \`npm ci\` in ${__dirname}`);
}

function dashboardSchema() {
  const typesDir = path.join(
    path.dirname(require.resolve('@grafana/schema/package.json')),
    'dist', 'types', 'raw', 'dashboard', 'x',
  );
  const file = fs
    .readdirSync(typesDir)
    .filter((f) => /types\.gen\.d\.ts$/.test(f))
    .map((f) => path.join(typesDir, f))[0];
  if (!file) die(`validate.js: no *types.gen.d.ts in ${typesDir}`);
  const schema = createGenerator({
    path: file,
    type: 'Dashboard',
    skipTypeCheck: true,
    expose: 'all',
    topRef: true,
    additionalProperties: false,
  }).createSchema('Dashboard');
  for (const name of ['AnnotationQuery', 'AnnotationTarget']) {
    const def = schema.definitions && schema.definitions[name];
    if (!def) die(`validate.js: ${name} not found in the generated schema`);
    def.additionalProperties = true;
  }
  return { schema, file };
}

function main() {
  const files = process.argv.slice(2);
  if (files.length === 0) die('usage: node validate.js DASHBOARD.json...');
  const { schema, file } = dashboardSchema();
  const grafanaVersion = require('@grafana/schema/package.json').version;
  console.log(`schema: type Dashboard from @grafana/schema ${grafanaVersion} (${path.basename(file)})`);
  const ajv = new Ajv({ allErrors: true, strict: false });
  const validate = ajv.compile(schema);
  let failed = 0;
  for (const f of files) {
    let doc;
    try {
      doc = JSON.parse(fs.readFileSync(f, 'utf8'));
    } catch (e) {
      console.log(`FAIL ${f}: not JSON: ${e.message}`);
      failed++;
      continue;
    }
    if (validate(doc)) {
      console.log(`ok   ${f}`);
    } else {
      failed++;
      console.log(`FAIL ${f}`);
      for (const err of validate.errors) {
        const extra = err.params && err.params.additionalProperty
          ? ` (${err.params.additionalProperty})`
          : '';
        console.log(`  ${err.instancePath || '/'}: ${err.message}${extra}`);
      }
    }
  }
  console.log(`${files.length - failed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

main();
