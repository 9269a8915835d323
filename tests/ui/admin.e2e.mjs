// End-to-end test of the admin web UI in headless Chromium, against a real
// running aigw (AIGW_URL) whose providers are faked by a mock upstream
// (MOCK_URL). Run by tests/api/ui.rs; exits non-zero on the first failure.
import { mkdtempSync, mkdirSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const BASE = process.env.AIGW_URL;
const TOKEN = process.env.ADMIN_TOKEN;
const MOCK = process.env.MOCK_URL;
const SHOTS = process.env.SCREENSHOT_DIR || mkdtempSync(join(tmpdir(), 'aigw-shots-'));
if (!BASE || !TOKEN || !MOCK) throw new Error('set AIGW_URL, ADMIN_TOKEN and MOCK_URL');
mkdirSync(SHOTS, { recursive: true });

const userDataDir = mkdtempSync(join(tmpdir(), 'aigw-chromium-'));
const browser = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'],
  viewport: { width: 1280, height: 800 },
  locale: 'en-US',
  // A user east of UTC: times typed in forms are local, the API's are UTC.
  timezoneId: 'Asia/Shanghai',
  acceptDownloads: true,
});

const step = (name) => console.log(`--> ${name}`);
function check(cond, message) {
  if (!cond) throw new Error(`assertion failed: ${message}`);
}
const problems = [];
let dialogs = 0;
let current = null;

async function poll(what, fn, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

async function chat(key) {
  return fetch(`${BASE}/v1/chat/completions`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: 'deepseek-v4-flash', messages: [{ role: 'user', content: 'Hello from the UI test' }] }),
  });
}

try {
  const page = browser.pages()[0] || (await browser.newPage());
  current = page;
  page.on('dialog', async (d) => {
    dialogs += 1;
    await d.dismiss();
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) problems.push(`console error: ${m.text()}`);
  });
  const shot = async (name) => {
    await page.waitForSelector('#page[aria-busy="false"], .signin', { timeout: 15000 });
    await page.evaluate(() => document.getElementById('toasts').replaceChildren());
    await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: false });
  };
  const go = async (hash) => {
    if ((await page.evaluate(() => location.hash)) === hash) await page.click('[data-testid="refresh"]');
    else {
      await page.evaluate((h) => {
        location.hash = h;
      }, hash);
    }
    await page.waitForSelector(`#page[data-page="${hash.slice(2)}"][aria-busy="false"]`, { timeout: 15000 });
  };

  step('the page is served with a strict CSP and no external assets');
  const res = await page.goto(`${BASE}/admin`);
  check(res.ok(), `GET /admin -> ${res.status()}`);
  check(page.url().endsWith('/admin/'), `redirected to /admin/ (got ${page.url()})`);
  const csp = res.headers()['content-security-policy'] || '';
  check(csp.includes("script-src 'self'") && csp.includes("frame-ancestors 'none'"), `CSP: ${csp}`);
  check(res.headers()['x-content-type-options'] === 'nosniff', 'nosniff');
  const external = await page.evaluate(() => [...document.querySelectorAll('script[src], link[href], img[src]')]
    .map((e) => e.getAttribute('src') || e.getAttribute('href')).filter((u) => /^(https?:)?\/\//.test(u)));
  check(external.length === 0, `external assets: ${external}`);

  step('sign in with the admin token');
  await page.waitForSelector('[data-testid="token"]');
  await shot('signin-desktop-en');
  await page.fill('[data-testid="token"]', 'wrong-token');
  await page.click('button[type="submit"]');
  await page.waitForSelector('.form-error:not([hidden])');
  check((await page.textContent('.form-error')).includes('refused'), 'a wrong token is refused');
  const started = Date.now();
  await page.fill('[data-testid="token"]', TOKEN);
  await page.click('button[type="submit"]');
  await page.waitForSelector('#page[data-page="providers"][aria-busy="false"]');
  check(!page.url().includes(TOKEN), 'the token never appears in the URL');
  check((await page.evaluate(() => sessionStorage.getItem('aigw.token'))) === TOKEN, 'the token is in sessionStorage');
  const cards = await page.locator('.preset-card').count();
  check(cards === 29, `29 preset cards (got ${cards})`);
  check((await page.locator('.cat-title').count()) === 5, 'five categories');
  const source = await page.locator('[data-testid="price-source-anthropic"]');
  check((await source.getAttribute('href') || '').startsWith('https://') && /Prices as of \d{4}-\d{2}-\d{2}/.test(await source.textContent()), 'a preset card dates its prices and links their source');
  const openapi = page.locator('[data-testid="openapi"]');
  check((await openapi.getAttribute('href')) === '/openapi.json', 'the footer links the OpenAPI document');
  check((await openapi.textContent()).includes('OpenAPI'), 'the OpenAPI link is labelled');
  const doc = await page.evaluate(async () => (await (await fetch('/openapi.json')).json()).openapi);
  check(doc.startsWith('3.1.'), `the linked document is OpenAPI 3.1 (got ${doc})`);

  step('search and filter the catalog');
  await page.fill('input[type="search"]', 'deepseek');
  check((await page.locator('.preset-card').count()) >= 1, 'search finds DeepSeek');
  await page.fill('input[type="search"]', '');
  await page.click('.chip:has-text("China")');
  check((await page.locator('.preset-card').count()) === 8, 'eight China presets');
  await page.click('.chip:has-text("All")');

  step('add the DeepSeek preset with only its key (endpoint pointed at the mock)');
  await page.click('[data-testid="use-deepseek"]');
  await page.waitForSelector('dialog[open]');
  await page.click('dialog[open] button[type="submit"]');
  await page.waitForSelector('dialog[open] .field-error:not([hidden])');
  await page.fill('dialog[open] input[name="api_key"]', 'sk-deepseek-from-ui');
  await page.click('dialog[open] summary');
  const prefilled = await page.inputValue('dialog[open] input[name="base_url"]');
  check(prefilled === 'https://api.deepseek.com', `endpoint pre-filled (got ${prefilled})`);
  check((await page.inputValue('dialog[open] textarea[name="models"]')).includes('deepseek-v4-flash'), 'models pre-filled');
  await page.fill('dialog[open] input[name="base_url"]', MOCK);
  await page.click('dialog[open] button[type="submit"]');
  await page.waitForSelector('[data-testid="provider-name"]:text-is("deepseek")');
  await shot('providers-desktop-en');

  step('add the Azure preset with its deployments, then edit them');
  const azureDeployments = async () => {
    const all = await (await fetch(`${BASE}/admin/api/providers`, { headers: { Authorization: `Bearer ${TOKEN}` } })).json();
    return JSON.stringify(all.data.find((p) => p.name === 'azure')?.deployments);
  };
  await page.click('[data-testid="use-azure"]');
  await page.waitForSelector('dialog[open] textarea[name="deployments"]');
  check((await page.locator('dialog[open] textarea[name="models"], dialog[open] input[name="deployment"]').count()) === 0, 'Azure takes deployments, not models');
  await page.fill('dialog[open] input[name="api_key"]', 'az-key-from-ui');
  await page.fill('dialog[open] input[name="base_url"]', MOCK);
  await page.fill('dialog[open] textarea[name="deployments"]', 'prod-5 = gpt-5.4 = gpt-5.5');
  await page.click('dialog[open] button[type="submit"]');
  await page.waitForSelector('dialog[open] .field-error:not([hidden])');
  await page.fill('dialog[open] textarea[name="deployments"]', 'my-gpt4o-mini = gpt-4o-mini\nprod-5 = gpt-5.4\nraw');
  await page.click('dialog[open] button[type="submit"]');
  await page.waitForSelector('[data-testid="provider-name"]:text-is("azure")');
  const created = await azureDeployments();
  check(created === JSON.stringify({ 'my-gpt4o-mini': 'gpt-4o-mini', 'prod-5': 'gpt-5.4', raw: null }), `the deployments and their models (got ${created})`);
  await page.click('[data-testid="providers-table"] tr:has([data-testid="provider-name"]:text-is("azure")) button:has-text("Edit")');
  const shown = await page.inputValue('dialog[open] textarea[name="deployments"]');
  check(shown === 'my-gpt4o-mini = gpt-4o-mini\nprod-5 = gpt-5.4\nraw', `the editor shows them (got ${shown})`);
  await page.fill('dialog[open] textarea[name="deployments"]', 'prod-5 = gpt-5.4\nmini = gpt-5.4-mini');
  await page.click('dialog[open] button[type="submit"]');
  await poll('the edited deployments', async () => (await azureDeployments()) === JSON.stringify({ mini: 'gpt-5.4-mini', 'prod-5': 'gpt-5.4' }), 10000);

  step('create a key and copy its secret from the page');
  await go('#/keys');
  await page.click('[data-testid="create-key"]');
  await page.fill('dialog[open] input[name="name"]', 'e2e-app');
  await page.fill('dialog[open] input[name="rpm"]', '-3');
  await page.click('dialog[open] button[type="submit"]');
  await page.waitForSelector('dialog[open] .field-error:not([hidden])');
  await page.fill('dialog[open] input[name="rpm"]', '600');
  await page.fill('dialog[open] input[name="budget_usd"]', '5');
  await page.click('dialog[open] button[type="submit"]');
  const secretInput = await page.waitForSelector('[data-testid="new-key-secret"]');
  const secret = await secretInput.inputValue();
  check(secret.startsWith('aig_'), `the secret is shown (got ${secret.slice(0, 6)}…)`);
  await shot('key-created-desktop-en');
  await page.click('[data-testid="secret-done"]');
  await page.waitForSelector('[data-testid="key-name"]:text-is("e2e-app")');

  step('use the key for a chat through the preset provider');
  const r = await chat(secret);
  const body = await r.text();
  check(r.status === 200, `chat -> ${r.status} ${body}`);
  check(JSON.parse(body).choices[0].message.content === 'Hi!', `the mock's answer: ${body}`);
  const elapsed = (Date.now() - started) / 1000;
  console.log(`    sign-in to a working key: ${elapsed.toFixed(1)} s`);
  check(elapsed < 60, 'under a minute');

  step('an alias routes to the preset provider');
  await go('#/routing');
  await page.click('[data-testid="create-alias"]');
  await page.fill('dialog[open] input[name="name"]', 'fast');
  await page.fill('dialog[open] textarea[name="targets"]', 'deepseek');
  await page.click('dialog[open] button[type="submit"]');
  await page.waitForSelector('dialog[open] .field-error:not([hidden])');
  await page.fill('dialog[open] textarea[name="targets"]', 'deepseek/deepseek-v4-flash');
  await page.selectOption('dialog[open] select[name="strategy"]', 'cost');
  await page.click('dialog[open] button[type="submit"]');
  await page.waitForSelector('[data-testid="alias-name"]:text-is("fast")');
  await shot('routing-desktop-en');
  const viaAlias = await fetch(`${BASE}/v1/chat/completions`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${secret}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: 'fast', messages: [{ role: 'user', content: 'Hello via the alias' }] }),
  });
  check(viaAlias.status === 200, `chat through the alias -> ${viaAlias.status} ${await viaAlias.text()}`);

  step('provider health and enable/disable');
  await go('#/providers');
  const health = await page.textContent('[data-testid="providers-table"] .health');
  check(health.trim() === 'Up', `DeepSeek is up (got ${health})`);
  await page.click('[data-testid="enable-deepseek"] + .slider');
  await poll('the provider to be disabled', async () => (await page.locator('[data-testid="enable-deepseek"]:not(:checked)').count()) === 1, 10000);
  await page.click('[data-testid="enable-deepseek"] + .slider');
  await poll('the provider to be enabled again', async () => (await page.locator('[data-testid="enable-deepseek"]:checked').count()) === 1, 10000);

  step('see the request in the log and its detail');
  await go('#/requests');
  await poll('the request in the log', async () => {
    await go('#/requests');
    return (await page.locator('[data-testid="log-model"]:text-is("deepseek-v4-flash")').count()) > 0;
  });
  await shot('requests-desktop-en');
  await page.click('[data-testid="requests-table"] button:has-text("Details")');
  await page.waitForSelector('dialog[open] .timeline li');
  check((await page.textContent('dialog[open]')).includes('RequestCompleted'), 'the detail lists the outcome');
  await page.keyboard.press('Escape');

  step('see the request in the usage chart');
  await poll('the usage totals', async () => {
    await go('#/usage');
    return (await page.textContent('[data-testid="kpi-requests"] .kpi-value')).trim() === '2';
  });
  const bars = await page.$$eval('[data-testid="chart-requests"] rect.bar', (rs) => rs.filter((r) => Number(r.getAttribute('height')) > 0).length);
  check(bars === 1, `one day with requests in the chart (got ${bars})`);
  await shot('usage-desktop-en');

  step('billing: the month per key, downloadable as CSV');
  await go('#/billing');
  await page.waitForSelector('[data-testid="billing-table"]');
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid="download-csv"]')]);
  const csv = readFileSync(await download.path(), 'utf8');
  check(csv.startsWith('month,key_id,key_name') && csv.includes('e2e-app'), `CSV: ${csv}`);
  check(csv.split('\r\n')[0].includes('cached_tokens,cache_write_tokens,reasoning_tokens,price_fallback_requests'), `CSV token classes: ${csv}`);
  await shot('billing-desktop-en');

  step('billing: spend grouped by a dimension, with its CSV');
  await page.waitForSelector('[data-testid="group-table"]');
  await page.selectOption('[data-testid="group-by"]', 'model');
  await poll('the model rows', async () => {
    const names = await page.$$eval('[data-testid="group-table"] [data-testid="group-name"]', (c) => c.map((x) => x.textContent));
    return names.includes('deepseek-v4-flash');
  });
  check((await page.textContent('[data-testid="group-table"] thead')).includes('Model'), 'the grouped table is headed by its dimension');
  const [grouped] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid="group-csv"]')]);
  const groupedCsv = readFileSync(await grouped.path(), 'utf8');
  check(groupedCsv.startsWith('model,requests,errors') && groupedCsv.includes('deepseek-v4-flash'), `grouped CSV: ${groupedCsv}`);
  await page.selectOption('[data-testid="group-by"]', 'tag');
  await page.waitForSelector('[data-testid="tag-note"]');

  step('teams: create a team and a project in it, with a budget, alert thresholds and scopes');
  await go('#/teams');
  await page.click('[data-testid="create-team"]');
  await page.fill('dialog[open] input[name="name"]', 'e2e-team');
  await page.fill('dialog[open] input[name="budget_usd"]', '0.02');
  await page.fill('dialog[open] input[name="alert_thresholds"]', '1, 500');
  await page.click('dialog[open] button[type="submit"]');
  await page.waitForSelector('dialog[open] .field-error:not([hidden])');
  await page.fill('dialog[open] input[name="alert_thresholds"]', '1, 50');
  await page.fill('dialog[open] input[name="allowed_providers"]', 'deepseek');
  await page.click('dialog[open] button[type="submit"]');
  const team = page.locator('[data-testid="team"][data-team="e2e-team"]');
  await team.waitFor();
  const teamText = await team.textContent();
  check(teamText.includes('1% · 50%') && teamText.includes('deepseek') && teamText.includes('$0.02'), `the team's thresholds, scopes and budget: ${teamText}`);
  await page.click('[data-testid="create-team"]');
  await page.fill('dialog[open] input[name="name"]', 'e2e-team');
  await page.click('dialog[open] button[type="submit"]');
  await page.waitForSelector('dialog[open] .form-error:not([hidden])');
  const taken = await page.textContent('dialog[open] .form-error');
  check(taken.includes('already exists'), `the API's refusal of a second "e2e-team" is shown (${taken})`);
  await page.keyboard.press('Escape');
  await team.locator('[data-testid="add-project"]').click();
  await page.fill('dialog[open] input[name="name"]', 'e2e-project');
  await page.fill('dialog[open] input[name="rpm"]', '100');
  await page.click('dialog[open] button[type="submit"]');
  await page.waitForSelector('[data-team="e2e-team"] [data-project="e2e-project"] [data-testid="project-name"]');
  check((await team.locator('[data-project="e2e-project"]').textContent()).includes('RPM 100'), 'the project\'s limit');
  await team.locator('[data-testid="edit-team"]').click();
  const shownThresholds = await page.inputValue('dialog[open] input[name="alert_thresholds"]');
  check(shownThresholds === '1, 50', `the team's form shows its thresholds (got ${shownThresholds})`);
  await page.fill('dialog[open] input[name="alert_thresholds"]', '1, 50, 90');
  await page.fill('dialog[open] input[name="tpm"]', '1000000');
  await page.click('dialog[open] button[type="submit"]');
  await poll('the edited team', async () => {
    const text = await team.textContent();
    return text.includes('1% · 50% · 90%') && text.includes('TPM 1,000,000');
  }, 10000);
  await team.locator('[data-project="e2e-project"] button:has-text("Edit")').click();
  check((await page.inputValue('dialog[open] input[name="rpm"]')) === '100', 'the project\'s form shows its limit');
  await page.fill('dialog[open] input[name="rpm"]', '120');
  await page.click('dialog[open] button[type="submit"]');
  await poll('the edited project', async () => (await team.locator('[data-project="e2e-project"]').textContent()).includes('RPM 120'), 10000);
  await team.locator('[data-testid="add-project"]').click();
  await page.fill('dialog[open] input[name="name"]', 'e2e-empty');
  await page.click('dialog[open] button[type="submit"]');
  const emptyProject = team.locator('[data-project="e2e-empty"]');
  await emptyProject.waitFor();
  await emptyProject.locator('button:has-text("Delete")').click();
  await page.click('dialog[open] [data-testid="confirm"]');
  await emptyProject.waitFor({ state: 'detached' });
  await page.evaluate(() => document.getElementById('toasts').replaceChildren());
  await team.locator('[data-testid="delete-team"]').click();
  await page.click('dialog[open] [data-testid="confirm"]');
  const undeleted = await (await page.waitForSelector('.toast-bad')).textContent();
  check(undeleted.includes('still has 1 project'), `the API's refusal to delete a team with a project is shown (${undeleted})`);
  check((await team.count()) === 1, 'the team is still listed');

  step('a key in the project: created with the project selector, listed with its project');
  await go('#/keys');
  await page.click('[data-testid="create-key"]');
  await page.fill('dialog[open] input[name="name"]', 'e2e-team-key');
  await page.selectOption('dialog[open] select[name="project_id"]', { label: 'e2e-team › e2e-project' });
  await page.click('dialog[open] button[type="submit"]');
  const teamSecret = await (await page.waitForSelector('[data-testid="new-key-secret"]')).inputValue();
  await page.click('[data-testid="secret-done"]');
  const teamKeyRow = page.locator('[data-testid="keys-table"] tbody tr:has([data-testid="key-name"]:text-is("e2e-team-key"))');
  await teamKeyRow.waitFor();
  check((await teamKeyRow.locator('[data-testid="key-project"]').textContent()) === 'e2e-project', 'the key\'s project');
  check((await teamKeyRow.textContent()).includes('e2e-team'), 'and its team');
  await teamKeyRow.locator('button:has-text("Edit")').click();
  const selected = await page.$eval('dialog[open] select[name="project_id"]', (s) => s.selectedOptions[0].textContent);
  check(selected === 'e2e-team › e2e-project', `the edit form shows the key's project (got ${selected})`);
  await page.keyboard.press('Escape');

  step('saving a key unchanged keeps its expiry (the browser is at UTC+8)');
  const adminHeaders = { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' };
  const keyList = await (await fetch(`${BASE}/admin/api/keys`, { headers: adminHeaders })).json();
  const teamKeyId = keyList.data.find((k) => k.name === 'e2e-team-key').id;
  const expiry = '2030-01-01T00:00:00Z';
  const expiresAt = async () => (await (await fetch(`${BASE}/admin/api/keys/${teamKeyId}`, { headers: adminHeaders })).json()).expires_at;
  await fetch(`${BASE}/admin/api/keys/${teamKeyId}`, { method: 'PATCH', headers: adminHeaders, body: JSON.stringify({ expires_at: expiry }) });
  await go('#/keys');
  await teamKeyRow.locator('button:has-text("Edit")').click();
  const shownExpiry = await page.inputValue('dialog[open] input[name="expires_at"]');
  check(shownExpiry === '2030-01-01T08:00', `the form shows the expiry in local time (got ${shownExpiry})`);
  await page.click('dialog[open] button[type="submit"]');
  await page.waitForSelector('dialog[open]', { state: 'detached' });
  const kept = await expiresAt();
  check(kept && Date.parse(kept) === Date.parse(expiry), `the expiry is unchanged (got ${kept})`);
  await shot('keys-desktop-en');

  step('a chat with the project\'s key: the team\'s budget use, its alert, and billing by team');
  const teamChat = await fetch(`${BASE}/v1/chat/completions`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${teamSecret}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: 'deepseek-v4-flash', max_tokens: 500, messages: [{ role: 'user', content: 'Hello from the team' }] }),
  });
  check(teamChat.status === 200, `chat with the project's key -> ${teamChat.status} ${await teamChat.text()}`);
  // 1,200 input and 350 output tokens of deepseek-v4-flash: $0.000266.
  const teamSpent = await poll('the team\'s spend', async () => {
    await go('#/teams');
    const spent = await page.textContent('[data-team="e2e-team"] .summary [data-testid="budget-spent"]');
    return spent.startsWith('$0.00 ') ? null : spent;
  });
  check(teamSpent.startsWith('$0.00027 '), `the team's spend (got ${teamSpent})`);
  await shot('teams-desktop-en');
  await poll('the team\'s alert', async () => {
    await go('#/alerts');
    const rows = await page.$$eval('[data-testid="alerts-table"] tbody tr', (rs) => rs.map((r) => ['alert-level', 'alert-owner', 'alert-threshold']
      .map((id) => r.querySelector(`[data-testid="${id}"]`).textContent).join(' ')));
    return rows.includes('Team e2e-team 1%');
  });
  await shot('alerts-desktop-en');
  await go('#/billing');
  await page.selectOption('[data-testid="group-by"]', 'team');
  await poll('the team in billing', async () => {
    const names = await page.$$eval('[data-testid="group-table"] [data-testid="group-name"]', (c) => c.map((x) => x.textContent));
    return names.includes('e2e-team');
  });

  step('jobs: submit four with the key (the mock runs, delays or refuses them)');
  const submitJob = async (content, metadata) => {
    const res = await fetch(`${BASE}/v1/jobs`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${secret}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: 'deepseek-v4-flash', messages: [{ role: 'user', content }], metadata }),
    });
    const text = await res.text();
    check(res.status === 202, `POST /v1/jobs -> ${res.status} ${text}`);
    return JSON.parse(text).id;
  };
  // Rendered as HTML, this metadata value would fire a dialog.
  const evilMeta = '<img src=x onerror=alert(3)>';
  const doneJob = await submitJob('A job from the UI test', { ticket: evilMeta });
  const refusedJob = await submitJob('A job the upstream refuses');
  const runningJob = await submitJob('A job to cancel');
  const lateJob = await submitJob('A job that takes a while');
  const jobPolls = [];
  page.on('request', (req) => {
    if (req.method() === 'GET' && /^\/admin\/api\/jobs\/[0-9a-f-]+$/.test(new URL(req.url()).pathname)) jobPolls.push(Date.now());
  });
  const jobRow = (id) => page.locator(`[data-testid="jobs-table"] tr[data-job="${id}"]`);
  const jobStatus = async (id) => (await jobRow(id).locator('.badge').first().textContent().catch(() => '')).trim();

  step('the Jobs page lists them; a running job is cancelled from its row');
  await go('#/jobs');
  check((await page.locator('[data-testid="jobs-table"] tbody tr').count()) === 4, 'four jobs listed');
  const rowText = await jobRow(doneJob).textContent();
  check(rowText.includes('e2e-app') && rowText.includes('deepseek-v4-flash'), `key name and model in the row: ${rowText}`);
  check(['Queued', 'Running'].includes(await jobStatus(runningJob)), `the slow job is queued or running (${await jobStatus(runningJob)})`);

  step('the page refreshes running jobs, and stops once it is left');
  await poll('a refresh of the running jobs', async () => jobPolls.length > 0, 10000);
  await go('#/keys');
  const left = Date.now();
  await new Promise((r) => setTimeout(r, 3500));
  check(!jobPolls.some((at) => at > left + 200), 'no refresh after leaving the Jobs page');
  await go('#/jobs');
  check(['Queued', 'Running'].includes(await jobStatus(runningJob)), `the slow job is still queued or running (${await jobStatus(runningJob)})`);
  await jobRow(runningJob).locator('[data-testid="cancel-job"]').click();
  await page.waitForSelector('dialog[open] [data-testid="confirm"]');
  check((await page.textContent('dialog[open]')).includes('Keep it'), 'the confirmation can be declined');
  await page.click('dialog[open] [data-testid="confirm"]');
  await poll('the job to be cancelled', async () => (await jobStatus(runningJob)) === 'Cancelled', 10000);
  check((await jobRow(runningJob).locator('[data-testid="cancel-job"]').count()) === 0, 'no cancel button on a cancelled job');

  step('cancelling a job that has finished meanwhile shows the API\'s error');
  check(['Queued', 'Running'].includes(await jobStatus(lateJob)), `the late job is still queued or running (${await jobStatus(lateJob)})`);
  await jobRow(lateJob).locator('button:has-text("Details")').click();
  await page.waitForSelector('dialog[open] [data-testid="detail-cancel-job"]');
  const adminGet = async (id) => (await fetch(`${BASE}/admin/api/jobs/${id}`, { headers: { Authorization: `Bearer ${TOKEN}` } })).json();
  await poll('the late job to finish', async () => (await adminGet(lateJob)).status === 'succeeded', 30000);
  await page.click('dialog[open] [data-testid="detail-cancel-job"]');
  await page.click('dialog[open] [data-testid="confirm"]');
  await page.waitForSelector('dialog[open] [data-testid="job-cancel-error"]:not([hidden])');
  const cancelError = await page.textContent('dialog[open] [data-testid="job-cancel-error"]');
  check(cancelError.includes('already succeeded'), `the 409's message is shown (got ${cancelError})`);
  await page.keyboard.press('Escape');
  // No reload: the page refreshes itself while a listed job is running.
  await poll('the late job to show as succeeded', async () => (await jobStatus(lateJob)) === 'Succeeded', 10000);

  step('a succeeded job\'s detail shows the answer and its metadata as text');
  await poll('the first job to succeed', async () => (await jobStatus(doneJob)) === 'Succeeded', 10000);
  check((await jobRow(doneJob).textContent()).includes('1,550'), 'its tokens');
  await shot('jobs-desktop-en');
  await jobRow(doneJob).locator('button:has-text("Details")').click();
  await page.waitForSelector('dialog[open] [data-testid="job-answer"]');
  check((await page.textContent('dialog[open] [data-testid="job-answer"]')) === 'Hi!', 'the assistant text');
  const meta = await page.textContent('dialog[open] [data-testid="job-metadata"]');
  check(meta.includes('ticket') && meta.includes(evilMeta), `the metadata verbatim (got ${meta})`);
  check((await page.locator('dialog[open] img').count()) === 0, 'no img element from the metadata');
  check((await page.textContent('dialog[open] [data-testid="job-fields"]')).includes('e2e-app'), 'the key name');
  check((await page.locator('dialog[open] [data-testid="detail-cancel-job"]').count()) === 0, 'a finished job cannot be cancelled');
  await shot('job-detail-desktop-en');
  await page.keyboard.press('Escape');

  step('a failed job\'s detail shows the error message');
  await poll('the refused job to fail', async () => (await jobStatus(refusedJob)) === 'Failed', 10000);
  await jobRow(refusedJob).locator('button:has-text("Details")').click();
  const jobError = await (await page.waitForSelector('dialog[open] [data-testid="job-error"]')).textContent();
  console.log(`    job error shown: ${jobError}`);
  check(jobError.length > 0, 'an error message');
  await page.keyboard.press('Escape');

  step('filter jobs by status and by key');
  const listed = async () => page.$$eval('[data-testid="jobs-table"] tbody tr', (rows) => rows.map((r) => r.dataset.job));
  await page.selectOption('[data-testid="jobs-status"]', 'cancelled');
  await page.click('[data-testid="jobs-filter"]');
  await page.waitForSelector('#page[data-page="jobs"][aria-busy="false"]');
  check(JSON.stringify(await listed()) === JSON.stringify([runningJob]), 'only the cancelled job');
  await page.selectOption('[data-testid="jobs-status"]', 'succeeded');
  await page.selectOption('[data-testid="jobs-key"]', { label: 'e2e-app' });
  await page.click('[data-testid="jobs-filter"]');
  await page.waitForSelector('#page[data-page="jobs"][aria-busy="false"]');
  check(JSON.stringify(await listed()) === JSON.stringify([lateJob, doneJob]), `the two succeeded jobs, newest first (got ${await listed()})`);
  await page.selectOption('[data-testid="jobs-status"]', 'failed');
  await page.click('[data-testid="jobs-filter"]');
  await page.waitForSelector('#page[data-page="jobs"][aria-busy="false"]');
  check(JSON.stringify(await listed()) === JSON.stringify([refusedJob]), 'only the failed job');
  await page.selectOption('[data-testid="jobs-status"]', '');
  await page.selectOption('[data-testid="jobs-key"]', '');
  await page.click('[data-testid="jobs-filter"]');
  await page.waitForSelector('#page[data-page="jobs"][aria-busy="false"]');
  check((await listed()).length === 4, 'all four again');

  step('jobs: "Load more" pages through them');
  const more = await Promise.all(Array.from({ length: 20 }, (_, i) => submitJob(`Batch job ${i}`, { batch: 'paging' })));
  await go('#/jobs');
  check((await listed()).length === 20, `a first page of 20 (got ${(await listed()).length})`);
  check(more.includes((await listed())[0]), 'the newest first');
  await page.click('[data-testid="jobs-more"]');
  await poll('the second page', async () => (await listed()).length === 24, 10000);
  check(await page.locator('[data-testid="jobs-more"]').isHidden(), 'no more to load');
  check((await listed()).slice(20).join() === [lateJob, runningJob, refusedJob, doneJob].join(), 'the older four last');

  step('revoke the key (with confirmation); the gateway refuses it');
  await go('#/keys');
  await page.click('[data-testid="revoke-e2e-app"]');
  await page.click('dialog[open] [data-testid="confirm"]');
  await page.waitForSelector('.badge:text-is("Revoked")');
  await poll('the revoked key to be refused', async () => (await chat(secret)).status === 401, 10000);

  step('a <script> name: refused for a provider, rendered as text for a key');
  await go('#/providers');
  // Provider names are letters, digits, '-', '_' and '.': the API refuses
  // this one, and the form shows its message as text.
  const evil = '<script>alert(1)<img src=x onerror=alert(2)>';
  await page.click('[data-testid="add-custom"]');
  await page.fill('dialog[open] input[name="name"]', evil);
  await page.fill('dialog[open] input[name="base_url"]', 'not a url');
  await page.fill('dialog[open] textarea[name="models"]', 'xss-model');
  await page.click('dialog[open] button[type="submit"]');
  await page.waitForSelector('dialog[open] .field-error:not([hidden])');
  await page.fill('dialog[open] input[name="base_url"]', MOCK);
  await page.click('dialog[open] button[type="submit"]');
  await page.waitForSelector('dialog[open] .form-error:not([hidden])');
  const refusal = await page.textContent('dialog[open] .form-error');
  check(refusal.includes("'name' must be"), `the provider name is refused (${refusal})`);
  await page.keyboard.press('Escape');
  // Key names may hold any text: shown verbatim, never parsed as HTML.
  await go('#/keys');
  await page.click('[data-testid="create-key"]');
  await page.fill('dialog[open] input[name="name"]', evil);
  await page.click('dialog[open] button[type="submit"]');
  await page.waitForSelector('[data-testid="new-key-secret"]');
  await page.click('[data-testid="secret-done"]');
  const names = await poll('the <script> key', async () => {
    const all = await page.$$eval('[data-testid="key-name"]', (els) => els.map((e) => e.textContent));
    return all.includes(evil) ? all : null;
  });
  check(names.includes(evil), 'the name is shown verbatim');
  check((await page.locator('#page script, #page img[src="x"]').count()) === 0, 'no script or img element from the name');
  check(dialogs === 0, 'no dialog fired');
  await go('#/providers');

  step('the API error message is shown in the form');
  await page.click('[data-testid="add-custom"]');
  await page.fill('dialog[open] input[name="name"]', 'deepseek');
  await page.fill('dialog[open] input[name="base_url"]', MOCK);
  await page.fill('dialog[open] textarea[name="models"]', 'm');
  await page.click('dialog[open] button[type="submit"]');
  await page.waitForSelector('dialog[open] .form-error:not([hidden])');
  console.log(`    API error shown: ${await page.textContent('dialog[open] .form-error')}`);
  await page.keyboard.press('Escape');

  step('keyboard: the sign-out button and nav links are reachable with Tab');
  const focusable = await page.$$eval('a[href], button, input, select, textarea', (els) => els.filter((e) => !e.disabled && e.tabIndex >= 0).length);
  check(focusable > 10, 'focusable controls');
  // Checked once the page has settled (the dialog just closed with Escape).
  const unlabelledControls = () => [...document.querySelectorAll('input, select, textarea')]
    .filter((e) => e.type !== 'hidden' && !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
    .map((e) => e.outerHTML.slice(0, 120));
  const labelled = await page.waitForFunction(`(${unlabelledControls})().length === 0`, null, { timeout: 3000 }).then(() => true, () => false);
  const unlabelled = labelled ? [] : await page.evaluate(`(${unlabelledControls})()`);
  check(unlabelled.length === 0, `every form control has a label (${unlabelled.length} without: ${unlabelled.join(' | ')})`);

  step('every string has a Chinese translation');
  const missing = await page.evaluate(async () => (await import('/admin/i18n.js')).missingInZh);
  check(missing.length === 0, `untranslated: ${missing}`);

  step('switch to Chinese');
  await page.selectOption('[data-testid="lang"]', 'zh');
  await page.waitForSelector('.topbar h1:text-is("服务商")');
  check((await page.getAttribute('html', 'lang')) === 'zh-CN', 'html lang is zh-CN');
  check((await page.textContent('.sidebar')).includes('API 密钥'), 'the navigation is in Chinese');
  check((await page.textContent('[data-testid="openapi"]')).includes('API 参考'), 'the OpenAPI link is in Chinese');
  await shot('providers-desktop-zh');
  for (const p of ['keys', 'usage', 'requests', 'routing', 'jobs']) {
    await go(`#/${p}`);
    await shot(`${p}-desktop-zh`);
  }
  await go('#/billing');
  await page.waitForSelector('[data-testid="group-table"]');
  await page.selectOption('[data-testid="group-by"]', 'model');
  await poll('the grouped view in Chinese', async () => {
    const text = await page.textContent('#page');
    return text.includes('按维度统计花费') && text.includes('分组依据') && (await page.textContent('[data-testid="group-table"] thead')).includes('模型');
  });
  await go('#/alerts');
  check((await page.textContent('.topbar h1')) === '预算提醒', 'the Alerts title in Chinese');
  check((await page.textContent('[data-testid="alerts-table"]')).includes('团队'), 'the alert\'s level in Chinese');
  await go('#/teams');
  check((await page.textContent('.topbar h1')) === '团队与项目', 'the Teams title in Chinese');
  const teamsZh = await page.textContent('#page');
  for (const s of ['添加项目', '提醒阈值', '有效密钥', '使用范围']) check(teamsZh.includes(s), `the Teams page in Chinese shows “${s}”`);
  await shot('teams-desktop-zh');
  await go('#/jobs');
  const jobsZh = await page.textContent('#page');
  for (const s of ['尝试次数', '筛选', '加载更多']) check(jobsZh.includes(s), `the Jobs page in Chinese shows “${s}”`);
  await poll('the batch to succeed', async () => (await page.$$eval('#page .badge', (bs) => bs.map((b) => b.textContent))).every((b) => b === '已成功'), 15000);
  await page.click('[data-testid="jobs-more"]');
  await poll('the older jobs', async () => {
    const badges = await page.$$eval('#page .badge', (bs) => bs.map((b) => b.textContent));
    return ['已取消', '已失败'].every((b) => badges.includes(b));
  }, 10000);
  check((await page.textContent('.topbar h1')) === '任务', 'the Jobs title in Chinese');

  step('phone width: no horizontal scroll on any page');
  await page.setViewportSize({ width: 390, height: 844 });
  for (const lang of ['zh', 'en']) {
    await page.selectOption('[data-testid="lang"]', lang);
    for (const p of ['providers', 'keys', 'teams', 'usage', 'requests', 'billing', 'jobs', 'alerts', 'routing', 'users', 'signins']) {
      await go(`#/${p}`);
      const width = await page.evaluate(() => document.documentElement.scrollWidth);
      check(width <= 390, `${p} (${lang}) is ${width}px wide at 390px`);
      if (['providers', 'keys', 'teams', 'usage', 'requests', 'jobs'].includes(p)) await shot(`${p}-phone-${lang}`);
    }
  }
  await go('#/keys');
  await page.click('[data-testid="create-key"]');
  check(await page.evaluate(() => document.documentElement.scrollWidth <= 390), 'the key form fits a phone');
  await page.keyboard.press('Escape');
  await go('#/teams');
  await page.click('[data-testid="add-project"]');
  check(await page.evaluate(() => document.documentElement.scrollWidth <= 390), 'the project form fits a phone');
  await page.keyboard.press('Escape');

  step('users: create one, set their role, issue a token (shown once), revoke it, disable them');
  await go('#/users');
  await page.waitForSelector('[data-testid="roles-table"]');
  await page.click('[data-testid="new-user"]');
  await page.fill('dialog[open] input[name="name"]', 'Grace');
  await page.fill('dialog[open] input[name="email"]', 'grace@example.com');
  await page.selectOption('dialog[open] select[name="role"]', 'billing_viewer');
  await page.click('dialog[open] button[type="submit"]');
  await poll('the new user listed', async () => (await page.locator('[data-testid="user-name"]').allTextContents()).includes('Grace'));
  check((await page.locator('[data-testid="user-roles"]').allTextContents()).some((r) => r.includes('Finance viewer')), 'Grace is a finance viewer');
  await page.click('[data-testid="user-role"]');
  await page.selectOption('dialog[open] select[name="role"]', 'viewer');
  await page.click('dialog[open] button[type="submit"]');
  await poll('the role changed', async () => (await page.locator('[data-testid="user-roles"]').allTextContents()).some((r) => r === 'Viewer'));
  await page.click('[data-testid="user-tokens"]');
  await page.click('dialog[open] [data-testid="new-token"]');
  await page.fill('dialog[open] input[name="name"]', 'ci');
  await page.click('dialog[open] button[type="submit"]');
  const userToken = await (await page.waitForSelector('[data-testid="new-token-secret"]')).inputValue();
  const asGrace = await fetch(`${BASE}/admin/api/me`, { headers: { Authorization: `Bearer ${userToken}` } });
  check(asGrace.status === 200 && (await asGrace.json()).email === 'grace@example.com', 'the token shown once signs Grace in');
  await page.click('[data-testid="token-done"]');
  await page.click('[data-testid="user-tokens"]');
  await page.click('dialog[open] [data-testid="revoke-token"]');
  await page.click('dialog[open] [data-testid="confirm"]');
  await poll('the revoked token refused', async () => (await fetch(`${BASE}/admin/api/me`, { headers: { Authorization: `Bearer ${userToken}` } })).status === 401, 10000);
  await page.click('[data-testid="user-disable"]');
  await page.click('dialog[open] [data-testid="confirm"]');
  await poll('Grace disabled', async () => (await page.locator('[data-testid="user-disable"]').count()) === 0);

  step('sign out clears the token');
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.click('[data-testid="signout"]');
  await page.waitForSelector('[data-testid="token"]');
  check((await page.evaluate(() => sessionStorage.getItem('aigw.token'))) === null, 'the token is gone');

  step('the language defaults to the browser\'s');
  const zhDir = mkdtempSync(join(tmpdir(), 'aigw-chromium-zh-'));
  const zhBrowser = await chromium.launchPersistentContext(zhDir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--lang=zh-CN'],
    locale: 'zh-CN',
    viewport: { width: 390, height: 844 },
  });
  try {
    const zhPage = zhBrowser.pages()[0] || (await zhBrowser.newPage());
    await zhPage.goto(`${BASE}/admin/`);
    await zhPage.waitForSelector('.signin h1');
    const title = await zhPage.textContent('.signin h1');
    check(title === '登录 aigw', `Chinese sign-in for a zh-CN browser (got ${title})`);
    await zhPage.screenshot({ path: join(SHOTS, 'signin-phone-zh.png') });
  } finally {
    await zhBrowser.close();
    rmSync(zhDir, { recursive: true, force: true });
  }

  check(problems.length === 0, `no page or console errors:\n${problems.join('\n')}`);
  console.log(`UI end-to-end test passed; screenshots in ${SHOTS}`);
} catch (e) {
  console.error(e.stack || String(e));
  if (current) {
    const text = await current.evaluate(() => document.body.innerText).catch(() => '');
    console.error(`--- page text ---\n${text.slice(0, 3000)}`);
    await current.screenshot({ path: join(SHOTS, 'failure.png') }).catch(() => {});
  }
  if (problems.length) console.error(problems.join('\n'));
  process.exitCode = 1;
} finally {
  await browser.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
