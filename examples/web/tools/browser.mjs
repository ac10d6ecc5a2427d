// Drive the page in headless Chromium (playwright-core, the system's chromium: never a browser download).
// Used by tests/test_web.py (answers) and benchmarks/web_bench.py (speed):
//
//   node tools/browser.mjs '{"url": "http://127.0.0.1:PORT/", "jobs": [...], "screenshot": "out.png"}'
//
// A job is {bundle | bundleDir, image, questions: [{question, maxNewTokens, mayRefuse?}], inputDigest?, threads?,
// bench?: {question, newTokens, runs, warmup}}: the page loads the bundle from its URL (bundle: path under the
// page) or from a directory picked in its file picker (bundleDir: a local path), the image through the file
// picker, then answers each question through the form (or runs window.edgevlm.bench). Prints one JSON object:
// {browser, results: [{bundle, question, ids, text, ...timings} | {bundle, question, refused}], bench: [...]}:
// `refused` is the page's one-line message for a question marked mayRefuse (any other error fails the run);
// with inputDigest each answer has resizedSha256 / pixelsSha256 of the model input the page built.
// `extraArgs` adds Chromium switches (e.g. --js-flags=... to study V8's wasm tiers). Every wait is bounded; any
// failure exits non-zero with one line on stderr.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
// No GPU here; and without the networking switches Chromium keeps trying to reach Google's services.
export const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--disable-default-apps", "--no-default-browser-check"];

async function waitState(page, states, timeout) {
  await page.waitForFunction((s) => s.includes(document.body.dataset.state), states, { timeout, polling: 50 });
  const state = await page.evaluate(() => document.body.dataset.state);
  if (state === "error") throw new Error(`page: ${await page.textContent("#status")}`);
  return state;
}

/** sha256 (hex) of the last model input in the page: the resized HWC uint8 bytes and the CHW float32 bytes. */
function inputDigest(page) {
  return page.evaluate(async () => {
    const hex = async (a) => Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", new Uint8Array(a.buffer, a.byteOffset, a.byteLength))),
      (b) => b.toString(16).padStart(2, "0")).join("");
    const { resized, pixels } = window.edgevlm.input;
    return { resizedSha256: await hex(resized), pixelsSha256: await hex(pixels) };
  });
}

async function runJob(context, url, job, timeout) {
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => m.type() === "error" && problems.push(`console: ${m.text()}`));
  // the bundle from its URL (job.bundle), or picked as a directory in the file picker (job.bundleDir)
  const query = new URLSearchParams({ ...(job.bundle ? { bundle: job.bundle } : {}), ...(job.threads ? { threads: String(job.threads) } : {}) });
  try {
    await page.goto(`${url}?${query}`, { timeout });
    if (job.bundleDir) await page.setInputFiles("#bundle-dir", job.bundleDir);
    await waitState(page, ["ready", "error"], timeout);
    await page.setInputFiles("#image", job.image);
    await page.waitForFunction(() => !document.querySelector("#ask").disabled, null, { timeout });
    const out = { answers: [], bench: null, page };
    for (const q of job.questions ?? []) {
      await page.fill("#question", q.question);
      if (q.maxNewTokens) await page.evaluate((n) => (window.edgevlm.maxNewTokens = n), q.maxNewTokens);
      await page.click("#ask");
      if (q.mayRefuse) { // the page's one-line refusal is a result, and the page stays usable after it
        await page.waitForFunction(() => ["done", "error"].includes(document.body.dataset.state), null, { timeout, polling: 50 });
        if (await page.evaluate(() => document.body.dataset.state) === "error") {
          out.answers.push({ question: q.question, refused: await page.textContent("#status") });
          continue;
        }
      } else {
        await waitState(page, ["done", "error"], timeout);
      }
      const answer = await page.evaluate(() => window.edgevlm.last);
      out.answers.push(job.inputDigest ? { ...answer, ...(await inputDigest(page)) } : answer);
    }
    if (job.bench) out.bench = { bundle: job.bundle ?? job.bundleDir, ...(await page.evaluate((b) => window.edgevlm.bench(b), job.bench)) };
    return out;
  } catch (e) {
    throw new Error(`${job.bundle ?? job.bundleDir}: ${e.message.split("\n")[0]}${problems.length ? ` (${problems[0]})` : ""}`);
  }
}

async function main() {
  const cfg = JSON.parse(process.argv[2]);
  const timeout = cfg.timeoutMs ?? 120_000;
  const profile = mkdtempSync(join(tmpdir(), "edgevlm-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, args: [...FLAGS, ...(cfg.extraArgs ?? [])], viewport: { width: 820, height: 900 }, timeout: 60_000,
  });
  const killer = setTimeout(() => {
    console.error(`browser run exceeded ${cfg.totalTimeoutMs ?? 600_000} ms`);
    process.exit(3);
  }, cfg.totalTimeoutMs ?? 600_000);
  try {
    const result = { browser: `chromium ${context.browser()?.version() ?? ""}`.trim(), results: [], bench: [] };
    for (const job of cfg.jobs) {
      const out = await runJob(context, cfg.url, job, timeout);
      result.results.push(...out.answers.map((a) => ({ ...a, bundle: job.bundle ?? job.bundleDir })));
      if (out.bench) result.bench.push(out.bench);
      if (cfg.screenshot && job.screenshot) await out.page.screenshot({ path: cfg.screenshot, fullPage: true });
      await out.page.close();
    }
    process.stdout.write(JSON.stringify(result) + "\n");
  } finally {
    clearTimeout(killer);
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e.message.split("\n")[0]);
  process.exit(1);
});
