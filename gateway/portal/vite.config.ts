// The portal is served by the gateway at /portal/ under a strict CSP: no inline script or
// style, no data: URIs, so nothing is inlined and no module-preload polyfill is injected.
import { defineConfig } from 'vite'

export default defineConfig({
  base: '/portal/',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
    target: 'es2022',
  },
})
