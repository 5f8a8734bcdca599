// Wraps dashboard JSON files in TypeScript modules for the type check in check.ts:
//   node gen.mjs OUT_DIR DASHBOARD.json...
// writes OUT_DIR/<name>.ts (`export const dashboard: DashboardJson = <json>;`) and an
// OUT_DIR/tsconfig.json extending this folder's, so `tsc -p OUT_DIR` checks exactly those.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const [outDir, ...files] = process.argv.slice(2);
if (!outDir || files.length === 0) {
  console.error('usage: node gen.mjs OUT_DIR DASHBOARD.json...');
  process.exit(2);
}
mkdirSync(outDir, { recursive: true });
const back = relative(resolve(outDir), here).split('\\').join('/') || '.';
for (const file of files) {
  const source = readFileSync(file, 'utf8');
  JSON.parse(source); // a file that is not JSON stops here, with the parser's message
  const name = basename(file, '.json').replace(/[^A-Za-z0-9_-]/g, '_');
  writeFileSync(
    join(outDir, `${name}.ts`),
    `// Generated from ${basename(file)} by gen.mjs: do not edit.\n` +
      `import type { DashboardJson } from '${back}/check';\n\n` +
      `export const dashboard: DashboardJson = ${source.trim()};\n`,
  );
}
writeFileSync(
  join(outDir, 'tsconfig.json'),
  JSON.stringify({ extends: `${back}/tsconfig.json`, include: ['*.ts'] }, null, 2) + '\n',
);
