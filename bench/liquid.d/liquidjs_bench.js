// liquidjs_bench.js CASES_JSON SECONDS -- the same benchmark cases through
// the npm package liquidjs (driven by bench/liquid).  Templates are parsed
// once; partials come from an in-memory map (cached by liquidjs); each
// round renders every case once with renderSync.  Prints one line:
//   liquidjs_rps=N errors=N version=V
'use strict';
const fs = require('fs');
const path = require('path');
const { Liquid } = require(path.join(__dirname, '..', '.node', 'node_modules', 'liquidjs'));
const pkg = require(path.join(__dirname, '..', '.node', 'node_modules', 'liquidjs', 'package.json'));

const cases = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const seconds = parseFloat(process.argv[3] || '2');
const now = new Date(Date.UTC(2024, 0, 1, 0, 1, 58));

let errors = 0;
const prepared = cases.map((c) => {
  const templates = {};
  for (const [k, v] of Object.entries(c.filesystem || {})) {
    templates[k] = v;
    if (!k.endsWith('.liquid')) templates[k + '.liquid'] = v;
  }
  const engine = new Liquid({ templates, extname: '.liquid', cache: true, timezoneOffset: 0, now: () => now });
  const tpl = engine.parse(c.template);
  return { engine, tpl, env: c.environment };
});
for (const p of prepared) {
  for (let k = 0; k < 2; k++) {
    try { p.engine.renderSync(p.tpl, p.env); } catch (e) { errors++; p.bad = true; }
  }
}
let renders = 0;
const t0 = process.hrtime.bigint();
let el = 0;
do {
  for (const p of prepared) {
    try { p.engine.renderSync(p.tpl, p.env); } catch (e) { errors++; }
  }
  renders += prepared.length;
  el = Number(process.hrtime.bigint() - t0) / 1e9;
} while (el < seconds);
console.log(`liquidjs_rps=${(renders / el).toFixed(0)} errors=${errors} version=${pkg.version}`);
