// The portal is served by the gateway at /portal/ under a strict CSP: no inline script or
// style, no data: URIs, so nothing is inlined and no module-preload polyfill is injected.
//
// npm `slip39` (threshold custody, loaded on demand) is written for Node: it requires `crypto`
// (aliased to src/custody/node-crypto.ts: WebCrypto and @noble/hashes) and calls `Buffer.from`
// on byte arrays (rewritten to `Uint8Array.from`, in that package's file only).
import { fileURLToPath } from 'node:url'
import { defineConfig, type Plugin } from 'vite'

const slip39ForBrowsers: Plugin = {
  name: 'slip39-for-browsers',
  transform(code, id) {
    if (!/node_modules[\\/]slip39[\\/]src[\\/]slip39_helper\.js$/.test(id)) return null
    return { code: code.replaceAll('Buffer.from(', 'Uint8Array.from('), map: null }
  },
}

export default defineConfig({
  base: '/portal/',
  plugins: [slip39ForBrowsers],
  resolve: {
    alias: { crypto: fileURLToPath(new URL('./src/custody/node-crypto.ts', import.meta.url)) },
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
    target: 'es2022',
  },
})
