// Drives vcache's console page (GET /) in Debian's chromium, headless, through playwright-core.
// Run by tests/browser.rs, which starts the daemon and the publishers and checks what this prints:
// one JSON object on the last line of stdout. Arguments come in the environment:
//   BASE (http://127.0.0.1:PORT), VOD (a file video id), TS_LIVE, MP4_LIVE (live channel ids),
//   ONLY and LIVE (benches/latency.rs: watch only channel LIVE, ONLY=page or ONLY=native),
//   SLOT (an upload slot id), UPLOAD_FILE (a local file to upload), TOKEN (the write token),
//   PUBLISH_START_MS (when the publishers started, ms since the epoch: for the latency; their
//   pictures carry frame-number stamps, tests/common/stamp.rs).
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

// The frame number stamped into the picture the video shows (tests/common/stamp.rs: bit k is a white
// square at x = 40k + 4 … 36, y = 4 … 36 of a 640-wide picture), or -1 before a frame shows.
function stampOf(video) {
  if (video.readyState < 2 || !video.videoWidth) return -1;
  const c = document.createElement("canvas");
  c.width = 640; c.height = 40;
  const g = c.getContext("2d", {willReadFrequently: true});
  g.drawImage(video, 0, 0, video.videoWidth, 40 * video.videoHeight / 360, 0, 0, 640, 40);
  const px = g.getImageData(0, 0, 640, 40).data;
  let n = 0;
  for (let k = 0; k < 14; k++) if (px[(20 * 640 + 40 * k + 20) * 4] > 128) n += 2 ** k;
  return n;
}

const median = xs => [...xs].sort((a, b) => a - b)[xs.length >> 1];

// Watches a live channel on the page (its "watch live" button: the page's LL-HLS client, or
// "native HLS"): it must play — currentTime advancing, the stamped frames moving on — and how far
// it is behind is measured: behind the newest buffered frame, and glass to glass. The publisher
// paces its picture at real time from its start (-re, 25 fps), so frame n was published at
// PUBLISH_START_MS + n/25 s; shown at `now`, it is now − that behind the publisher.
async function watchLive(page, id, native) {
  await page.click(native ? `[data-native="${id}"]` : `[data-play="${id}"]`);
  const sel = `video[data-player="${id}"]`;
  await waitFor(page, `${id} playing or its note`, ([s, i]) =>
    document.querySelector(s)?.currentTime > 1 || !!document.querySelector(`[data-note="${i}"]`), [sel, id]);
  const note = await page.$(`[data-note="${id}"]`);
  if (note) throw new Error(`${id} did not play: ${await note.textContent()}`);
  const start = Number(env.PUBLISH_START_MS);
  const samples = [];
  for (let i = 0; i < 12; i++) {
    await sleep(300);
    samples.push(await page.$eval(sel, (v, f) => ({
      t: v.currentTime,
      edge: v.buffered.length ? v.buffered.end(v.buffered.length - 1) : 0,
      frame: new Function(`return (${f})`)()(v),
      now: Date.now(),
    }), stampOf.toString()));
  }
  const stamped = samples.filter(x => x.frame >= 0);
  return {
    how: await page.$eval(sel, v => v.dataset.how),
    startedAt: samples[0].t,
    advancedTo: samples[samples.length - 1].t,
    firstFrame: stamped.length ? stamped[0].frame : -1,
    lastFrame: stamped.length ? stamped[stamped.length - 1].frame : -1,
    behindEdgeMedianS: median(samples.map(x => x.edge - x.t)),
    glassToGlassMedianS: median(stamped.map(x => (x.now - start) / 1000 - x.frame / 25)),
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
  // ONLY=page or ONLY=native: just channel LIVE, played that way (benches/latency.rs).
  const only = env.ONLY;
  const ids = only ? [env.LIVE] : [env.VOD, env.TS_LIVE, env.MP4_LIVE, env.SLOT];
  for (const id of ids) {
    await waitFor(page, `the card of ${id}`, i => !!document.querySelector(`section[data-id="${i}"] .bar`), id);
  }
  result.steps.mse = await page.evaluate(() => MediaSource.isTypeSupported('video/mp4; codecs="avc1.64001e"'));
  if (!only) await vod(page);
  if (!only) result.steps.tsLive = await watchLive(page, env.TS_LIVE, false);
  if (!only) result.steps.tsNative = await watchLive(page, env.TS_LIVE, true);
  if (only) result.steps.live = await watchLive(page, env.LIVE, only === "native");
  else result.steps.mp4Live = await watchLive(page, env.MP4_LIVE, false);
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
