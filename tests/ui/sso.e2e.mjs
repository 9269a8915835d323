// Single sign-on in headless Chromium: the admin UI's "Sign in with SSO"
// through a real OpenID provider's login page (oidc-provider-mock, at
// PROVIDER_URL), against a running aigw (AIGW_URL) whose role map makes
// `fin` a billing viewer and `ada` an admin. Each must see only the pages
// their role allows, at desktop and phone width. Run by
// tests/api/oidc_provider.rs; exits non-zero on the first failure.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const BASE = process.env.AIGW_URL;
if (!BASE || !process.env.PROVIDER_URL) throw new Error('set AIGW_URL and PROVIDER_URL');

const browser = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'aigw-sso-')), {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'],
  viewport: { width: 1280, height: 800 },
  locale: 'en-US',
});
const step = (name) => console.log(`--> ${name}`);
function check(cond, message) {
  if (!cond) throw new Error(`assertion failed: ${message}`);
}

async function navPages(page) {
  await page.waitForSelector('nav.nav a');
  return page.$$eval('nav.nav a', (as) => as.map((a) => a.getAttribute('href')));
}

async function signInAs(page, sub) {
  await page.goto(`${BASE}/admin/`);
  const sso = page.getByTestId('sso');
  await sso.waitFor();
  check((await sso.textContent()).includes('Sign in with SSO'), 'the SSO button is labelled');
  await sso.click();
  // The provider's own login page.
  await page.waitForURL((u) => u.toString().startsWith(process.env.PROVIDER_URL));
  await page.locator(`button[name="sub"][value="${sub}"]`).click();
  await page.waitForURL((u) => u.toString().startsWith(`${BASE}/admin/`));
  return navPages(page);
}

let failed = false;
try {
  const page = browser.pages()[0] || (await browser.newPage());

  step('a billing viewer signs in by SSO and sees reports, not providers');
  let pages = await signInAs(page, 'fin');
  check(pages.includes('#/billing') && pages.includes('#/usage') && pages.includes('#/keys'), `finance pages: ${pages}`);
  check(!pages.includes('#/providers') && !pages.includes('#/routing') && !pages.includes('#/jobs') && !pages.includes('#/signins'), `no admin pages: ${pages}`);
  await page.locator('nav.nav a[href="#/billing"]').click();
  await page.waitForSelector('#page[aria-busy="false"]');
  check(!(await page.locator('.callout-bad').count()), 'the billing page loads');

  step('at phone width the page fits the screen');
  await page.setViewportSize({ width: 390, height: 800 });
  await page.reload();
  await navPages(page);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, `no horizontal scrolling at phone width (${overflow}px)`);
  await page.setViewportSize({ width: 1280, height: 800 });

  step('signing out ends the session');
  await page.getByTestId('signout').click();
  await page.getByTestId('sso').waitFor();
  const me = await page.evaluate(async () => (await fetch('/admin/api/me')).status);
  check(me === 401, `the session is over (${me})`);

  step('an admin signs in and sees providers and the sign-in history, in Chinese too');
  pages = await signInAs(page, 'ada');
  check(pages.includes('#/providers') && pages.includes('#/signins') && !pages.includes('#/users'), `admin pages: ${pages}`);
  await page.locator('nav.nav a[href="#/signins"]').click();
  await page.getByTestId('signins-table').waitFor();
  const kinds = await page.getByTestId('signin-kind').allTextContents();
  check(kinds.filter((k) => k.includes('Signed in')).length === 2 && kinds.some((k) => k.includes('Session ended')), `history: ${kinds}`);
  await page.getByTestId('lang').selectOption('zh');
  await page.getByTestId('signins-table').waitFor();
  check((await page.locator('h1').first().textContent()).includes('登录历史'), 'the page in Chinese');
  console.log('ok');
} catch (e) {
  failed = true;
  console.error(e);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
