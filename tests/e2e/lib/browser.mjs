// browser: Debian's Chromium driven by playwright-core, set up the way this machine needs it
// (headless, no sandbox, no GPU, nothing that reaches out to the network by itself, a fresh
// profile). Every page opened through open() records what a person would call an error: console
// errors, uncaught exceptions, Content-Security-Policy violations and HTTP answers of 400 or more.

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

export const CHROMIUM = process.env.GB_CHROMIUM || '/usr/bin/chromium';

export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

// playwright-core's launch() starts Chromium with a new, empty --user-data-dir of its own and
// removes it on close; contexts of different viewports share that browser.
export async function launch() {
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 60000 });
  return {
    browser,
    close: () => browser.close().catch(() => {}),
  };
}

// A page in a new context of the given viewport. `errors` collects problems as strings.
export async function open(browser, { width = 1280, height = 800, shots, isMobile = false, hasTouch = false } = {}) {
  const context = await browser.newContext({ viewport: { width, height }, deviceScaleFactor: 1, isMobile, hasTouch });
  const page = await context.newPage();
  const errors = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()} (${m.location().url || 'page'})`);
  });
  page.on('pageerror', (e) => errors.push(`uncaught: ${e.message}`));
  page.on('response', (r) => {
    if (r.status() >= 400) errors.push(`HTTP ${r.status()} for ${r.request().method()} ${r.url()}`);
  });
  await page.exposeFunction('__gbReport', (text) => errors.push(text));
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__gbReport(`CSP: ${e.violatedDirective} blocked ${e.blockedURI || 'inline'} (${e.sourceFile}:${e.lineNumber})`);
    });
  });
  if (shots) mkdirSync(shots, { recursive: true });
  return {
    context,
    page,
    errors,
    async shot(name) {
      if (!shots) return null;
      const path = join(shots, `${name}.png`);
      await page.screenshot({ path, fullPage: false });
      return path;
    },
    async fullShot(name) {
      if (!shots) return null;
      const path = join(shots, `${name}.png`);
      // From the top: a page left scrolled would show its sticky header midway down the image.
      await page.evaluate(() => window.scrollTo(0, 0));
      await page.screenshot({ path, fullPage: true });
      return path;
    },
    close: () => context.close(),
  };
}
