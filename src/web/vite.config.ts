// Builds the dashboard into dist/web/app, which the coordinator serves at `/` (src/coordinator/routes/web.ts).
import { defineConfig } from 'vite';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));

export default defineConfig({
  root: here,
  base: '/',
  logLevel: 'warn',
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    outDir: fileURLToPath(new URL('../../dist/web/app', import.meta.url)),
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: true,
    // Chart.js is most of the bundle; one chunk is fine for a dashboard served from the coordinator.
    chunkSizeWarningLimit: 600,
  },
});
