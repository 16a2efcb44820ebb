// The official OpenAI Node client against `sdcpu serve` (run by tests/service_test.sh).
// Usage: node openai_client.mjs PORT NODE_MODULES_PREFIX
//   PORT: the server's port on 127.0.0.1; NODE_MODULES_PREFIX: the folder `npm install --prefix` put openai@4 in.
// Prints one "OK ..." line per passed check and "FAIL ..." per failed one; exits 1 on any failure.
import { createRequire } from 'node:module';
import path from 'node:path';

const [port, prefix] = process.argv.slice(2);
if (!port || !prefix) {
  console.log('FAIL usage: node openai_client.mjs PORT NODE_MODULES_PREFIX');
  process.exit(2);
}
const require = createRequire(path.join(path.resolve(prefix), 'package.json'));
const mod = require('openai');
const OpenAI = mod.OpenAI ?? mod.default ?? mod;

let failures = 0;
const ok = (what) => console.log(`OK ${what}`);
const fail = (what) => {
  failures += 1;
  console.log(`FAIL ${what}`);
};

// A PNG's width and height from its IHDR chunk, or null when it is not a PNG.
function pngSize(bytes) {
  const signature = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  if (bytes.length < 24 || signature.some((b, i) => bytes[i] !== b)) return null;
  if (bytes.toString('latin1', 12, 16) !== 'IHDR') return null;
  return [bytes.readUInt32BE(16), bytes.readUInt32BE(20)];
}

const client = new OpenAI({ apiKey: 'sk-test', baseURL: `http://127.0.0.1:${port}/v1`, maxRetries: 0, timeout: 60000 });

try {
  const r = await client.images.generate({
    model: 'tiny', prompt: 'a red cube on a table', n: 1, size: '64x64', response_format: 'b64_json',
  });
  const size = r?.data?.length === 1 ? pngSize(Buffer.from(r.data[0].b64_json ?? '', 'base64')) : null;
  if (size && size[0] === 64 && size[1] === 64 && Number.isInteger(r.created)) ok('images.generate b64_json: a 64x64 PNG');
  else fail(`images.generate b64_json: ${JSON.stringify(r).slice(0, 300)}`);
} catch (e) {
  fail(`images.generate b64_json threw ${e?.constructor?.name}: ${e?.status} ${e?.message}`);
}

try {
  const r = await client.images.generate({ model: 'tiny', prompt: 'a blue sphere', n: 2, size: '72x64' });
  let good = r?.data?.length === 2;
  for (const item of r?.data ?? []) {
    const res = await fetch(item.url);
    const size = res.ok ? pngSize(Buffer.from(await res.arrayBuffer())) : null;
    good &&= Boolean(size && size[0] === 72 && size[1] === 64);
  }
  if (good) ok('images.generate url: two 72x64 PNGs fetched from their urls');
  else fail(`images.generate url: ${JSON.stringify(r).slice(0, 300)}`);
} catch (e) {
  fail(`images.generate url threw ${e?.constructor?.name}: ${e?.status} ${e?.message}`);
}

for (const [what, request] of [
  ['a bad size', { model: 'tiny', prompt: 'x', size: '12x12' }],
  ['an unknown model', { model: 'dall-e-3', prompt: 'x', size: '64x64' }],
]) {
  try {
    const r = await client.images.generate(request);
    fail(`${what}: no error, got ${JSON.stringify(r).slice(0, 200)}`);
  } catch (e) {
    if (e instanceof OpenAI.APIError && e instanceof OpenAI.BadRequestError && e.status === 400 &&
        typeof e.message === 'string' && e.error && typeof e.error.message === 'string')
      ok(`${what}: APIError status 400 (${e.message})`);
    else fail(`${what}: wanted an APIError with status 400, got ${e?.constructor?.name}: ${e?.status} ${e?.message}`);
  }
}

process.exit(failures ? 1 : 0);
