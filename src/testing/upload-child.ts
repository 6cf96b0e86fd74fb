/**
 * A site's chunked upload (site/upload.ts) in a process of its own, for tests that SIGKILL it mid-upload:
 * `node upload-child.js <args.json>` with {baseUrl, keyId, privateKeyPem, taskId, file, pace}. It prints one JSON
 * line per chunk before sending it ({"offset": N}) and, with `pace`, waits for a line on stdin before each chunk,
 * so the test decides when it is killed; then it prints {"done": answer}.
 */
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { HttpClient } from '../site/http.js';
import { uploadInChunks } from '../site/upload.js';

const args = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as { baseUrl: string; keyId: string; privateKeyPem: string; taskId: string; file: string; pace: boolean };
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const http = new HttpClient({ baseUrl: args.baseUrl, signer: { keyId: args.keyId, privateKey: args.privateKeyPem }, maxDelayMs: 200 });
const answer = await uploadInChunks(http, args.taskId, args.file, {
  onChunk: async (offset) => {
    process.stdout.write(JSON.stringify({ offset }) + '\n');
    if (args.pace) await lines.next();
  },
});
process.stdout.write(JSON.stringify({ done: answer }) + '\n');
process.exit(0);
