// Checks the bluesky connector's requests (and the fake PDS's answers) against the AT
// Protocol lexicons, for the connector's tests (src/testing.rs runs it):
//
//     node check_lexicon.mjs LEXICONS_DIR NODE_MODULES_PARENT < items.jsonl > verdicts.jsonl
//
// LEXICONS_DIR is ../shared/vendor-specs/bluesky/lexicons; NODE_MODULES_PARENT the folder
// whose node_modules holds npm @atproto/lexicon 0.6.2 (`npm install --prefix
// connectors/bluesky`, done by .ci/run). Each input line is {"check": "input" | "output" |
// "record", "nsid": "...", "value": {...}}; each output line {"ok": true} or {"ok": false,
// "error": "..."}. Values are read as a PDS reads JSON (jsonToLex: `$link` objects become
// CIDs, `$type: blob` objects blob references), then checked with assertValidXrpcInput,
// assertValidXrpcOutput or assertValidRecord. A createRecord input's record is also checked
// as a record of its collection, as the PDS does.
import { createRequire } from 'node:module'
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { createInterface } from 'node:readline'

const [lexDir, modulesParent] = process.argv.slice(2)
if (!lexDir || !modulesParent) {
  console.error('usage: node check_lexicon.mjs LEXICONS_DIR NODE_MODULES_PARENT < items.jsonl')
  process.exit(2)
}
const require = createRequire(join(resolve(modulesParent), 'package.json'))
const { Lexicons, jsonToLex } = require('@atproto/lexicon')

const lex = new Lexicons()
const walk = (dir) => {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name)
    if (statSync(p).isDirectory()) walk(p)
    else if (name.endsWith('.json')) lex.add(JSON.parse(readFileSync(p, 'utf8')))
  }
}
walk(lexDir)

const check = ({ check, nsid, value }) => {
  const v = jsonToLex(value)
  if (check === 'input') {
    lex.assertValidXrpcInput(nsid, v)
    if (nsid === 'com.atproto.repo.createRecord') lex.assertValidRecord(v.collection, v.record)
  } else if (check === 'output') {
    lex.assertValidXrpcOutput(nsid, v)
  } else if (check === 'record') {
    lex.assertValidRecord(nsid, v)
  } else {
    throw new Error(`unknown check ${check}`)
  }
}

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity })
for await (const line of lines) {
  if (!line.trim()) continue
  try {
    check(JSON.parse(line))
    process.stdout.write(JSON.stringify({ ok: true }) + '\n')
  } catch (e) {
    process.stdout.write(JSON.stringify({ ok: false, error: String(e && e.message ? e.message : e) }) + '\n')
  }
}
