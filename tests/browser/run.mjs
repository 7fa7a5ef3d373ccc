// Drives vcache's console page (GET /) in Debian's chromium, headless, through playwright-core.
// Run by tests/browser.rs, which starts the daemon and the publishers and checks what this prints:
// one JSON object on the last line of stdout. Arguments come in the environment:
//   BASE (http://127.0.0.1:PORT), VOD (a file video id), TS_LIVE, MP4_LIVE (live channel ids),
//   SLOT (an upload slot id), UPLOAD_FILE (a local file to upload), TOKEN (the write token),
//   PUBLISH_START_MS (when the fMP4 publisher started, ms since the epoch: for the latency).
import { chromium } from "playwright-core";

const env = process.env;
const result = { consoleErrors: [], steps: {} };
const sleep = ms => new Promise(r => setTimeout(r, ms));

async function waitFor(page, what, fn, arg, timeoutMs = 30000) {
  try {
    await page.waitForFunction(fn, arg, { timeout: timeoutMs, polling: 100 });
  } catch (e) {
    throw new Error(`timed out waiting for ${what}: ${e.message.split("\n")[0]}`);
  }
}

async function vod(page) {
  await page.click(`[data-play="${env.VOD}"]`);
  const sel = `video[data-player="${env.VOD}"]`;
  await waitFor(page, "VOD metadata", s => document.querySelector(s)?.readyState >= 1, sel);
  const duration = await page.$eval(sel, v => v.duration);
  await page.$eval(sel, v => { v.muted = true; return v.play(); });
  await waitFor(page, "VOD playing", s => document.querySelector(s).currentTime > 0.5, sel);
  const target = Math.min(3, duration / 2);
  await page.$eval(sel, (v, t) => { v.currentTime = t; }, target);
  await waitFor(page, "the seek", ([s, t]) => {
    const v = document.querySelector(s);
    return !v.seeking && v.currentTime >= t && v.readyState >= 2;
  }, [sel, target]);
  const afterSeek = await page.$eval(sel, v => v.currentTime);
  await waitFor(page, "VOD playing after the seek", ([s, t]) => document.querySelector(s).currentTime > t + 0.5, [sel, afterSeek]);
  result.steps.vod = { duration, seekedTo: target, playedTo: await page.$eval(sel, v => v.currentTime) };
}

async function tsLive(page) {
  await page.click(`[data-play="${env.TS_LIVE}"]`);
  const sel = `video[data-player="${env.TS_LIVE}"]`;
  await waitFor(page, "TS live playing or its note", ([s, id]) =>
    document.querySelector(s)?.currentTime > 1 || !!document.querySelector(`[data-note="${id}"]`), [sel, env.TS_LIVE]);
  const note = await page.$(`[data-note="${env.TS_LIVE}"]`);
  result.steps.tsLive = note
    ? { played: false, note: await note.textContent() }
    : { played: true, currentTime: await page.$eval(sel, v => v.currentTime) };
}

async function mp4Live(page) {
  await page.click(`[data-play="${env.MP4_LIVE}"]`);
  const sel = `video[data-player="${env.MP4_LIVE}"]`;
  await waitFor(page, "fMP4 live playing", s => document.querySelector(s)?.currentTime > 0, sel);
  const t0 = await page.$eval(sel, v => v.currentTime);
  const samples = [];
  for (let i = 0; i < 10; i++) {
    await sleep(300);
    samples.push(await page.$eval(sel, v => ({
      t: v.currentTime,
      edge: v.buffered.length ? v.buffered.end(v.buffered.length - 1) : 0,
      now: Date.now(),
    })));
  }
  const last = samples[samples.length - 1];
  const behind = samples.map(s => s.edge - s.t).sort((a, b) => a - b);
  // Glass to glass: the publisher paces its picture at real time from its start (-re), so media
  // time t was published at PUBLISH_START_MS + t; shown at `now` → latency now − (start + t).
  const start = Number(env.PUBLISH_START_MS);
  const latency = samples.map(s => (s.now - start) / 1000 - s.t).sort((a, b) => a - b);
  result.steps.mp4Live = {
    startedAt: t0,
    advancedTo: last.t,
    behindEdgeMedianS: behind[behind.length >> 1],
    glassToGlassMedianS: latency[latency.length >> 1],
  };
}

async function uploadWithCut(page) {
  await page.fill("#token", env.TOKEN);
  await page.dispatchEvent("#token", "change");
  await page.setInputFiles(`[data-file="${env.SLOT}"]`, env.UPLOAD_FILE);
  // Cut the connection of the second chunk once: the page must resume from the slot's missing ranges.
  let puts = 0, cut = false;
  await page.route(`**/videos/${env.SLOT}`, route => {
    if (route.request().method() === "PUT" && ++puts === 2 && !cut) {
      cut = true;
      return route.abort("connectionreset");
    }
    return route.continue();
  });
  await page.click(`[data-upload="${env.SLOT}"]`);
  await waitFor(page, "the upload to finish", id => document.querySelector(`[data-status="${id}"]`)?.dataset.done === "1", env.SLOT, 60000);
  result.steps.upload = { puts, cut, status: await page.$eval(`[data-status="${env.SLOT}"]`, e => e.textContent) };
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--autoplay-policy=no-user-gesture-required"],
});
let failed = null;
try {
  const page = await browser.newPage();
  page.on("console", m => { if (m.type() === "error") result.consoleErrors.push(m.text()); });
  page.on("pageerror", e => result.consoleErrors.push(`pageerror: ${e.message}`));
  await page.goto(env.BASE + "/");
  // ONLY=mp4Live: just the live fMP4 player (benches/latency.rs).
  const only = env.ONLY;
  const ids = only ? [env.MP4_LIVE] : [env.VOD, env.TS_LIVE, env.MP4_LIVE, env.SLOT];
  for (const id of ids) {
    await waitFor(page, `the card of ${id}`, i => !!document.querySelector(`section[data-id="${i}"] .bar`), id);
  }
  result.steps.mse = await page.evaluate(() => MediaSource.isTypeSupported('video/mp4; codecs="avc1.64001e"'));
  if (!only) await vod(page);
  if (!only) await tsLive(page);
  await mp4Live(page);
  result.errorsBeforeUpload = [...result.consoleErrors];
  if (!only) await uploadWithCut(page);
} catch (e) {
  failed = e.message;
} finally {
  await browser.close();
}
result.failed = failed;
console.log(JSON.stringify(result));
process.exit(failed ? 1 : 0);
